"""Measured FLOPs: torch's FlopCounterMode over HuggingFace models built on the meta device.

Meta tensors carry shapes and no storage, so the count needs no weights and no activations: OPT-175B
over 2,048,000 tokens is counted directly, in seconds, with no per-layer scaling. Attention runs
with HF's eager implementation, whose score and value products are plain batched matmuls that the
counter sees. (On CPU, sdpa dispatches to a fused kernel FlopCounterMode has no formula for, so it
counts 0 for attention: REFERENCE.md's trap. On meta, sdpa also decomposes to matmuls, but eager
does not depend on that.)

Position tables are enlarged to the measured length where it exceeds the model's own: their
lookups cost no FLOPs, so this changes nothing counted, and lets full attention be counted past
OPT's 2048 positions the way Figure 3 extrapolates the formula.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from transformers import (
    AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSequenceClassification, PretrainedConfig,
)

from rmt_lab.bench.flops import HEADS, MODES, memory_positions, require_choice, require_positive, segment_lengths
from rmt_lab.bench.shapes import shape_from_config
from rmt_lab.config import ConfigError

_POSITION_KEYS = ("max_position_embeddings", "n_positions")


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    # Building models from configs logs generation-config notes and token-id warnings; none matter here.
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def meta_model(config: PretrainedConfig, head: str = "lm", *, positions: int = 0, num_labels: int = 6) -> nn.Module:
    """A HF model of `config` on the meta device, eager attention, with the requested head.

    head "none": the bare model (BERT without pooler); "lm": ForCausalLM (decoders) or ForMaskedLM
    (encoders); "cls": ForSequenceClassification with `num_labels`. `positions` enlarges the position
    table when longer than the config's.
    """
    require_choice("head", head, HEADS)
    shape = shape_from_config(config)  # fails early, naming missing fields, before HF does
    config = copy.deepcopy(config)
    config.num_labels = num_labels
    if positions > shape.max_positions:
        # GPT-2 aliases max_position_embeddings to n_positions: set one key only, or it grows twice.
        key = next(k for k in _POSITION_KEYS if getattr(config, k, None) is not None)
        setattr(config, key, getattr(config, key) + positions - shape.max_positions)
    auto = {
        "none": AutoModel,
        "lm": AutoModelForCausalLM if shape.causal else AutoModelForMaskedLM,
        "cls": AutoModelForSequenceClassification,
    }[head]
    kwargs = {"add_pooling_layer": False} if head == "none" and not shape.causal else {}
    with _quiet_transformers(), torch.device("meta"):
        return auto.from_config(config, attn_implementation="eager", **kwargs)


def _head_module(model: nn.Module) -> nn.Module:
    """The head on top of `model.base_model` (lm_head, cls, score ...): its one other child with weights."""
    heads = [m for m in model.children() if m is not model.base_model and any(True for _ in m.parameters())]
    if len(heads) != 1:
        raise ConfigError(f"cannot tell the head of {type(model).__name__}: {[type(m).__name__ for m in heads]}")
    return heads[0]


def _group(op: str) -> str:
    if "bmm" in op or "scaled_dot_product" in op:
        return "attention"  # score and value products (eager: bmm; fused kernels: sdpa ops)
    if op in ("mm", "addmm"):
        return "linear"  # every nn.Linear / Conv1D / LM head
    return "other"


def count_flops(model: nn.Module, positions: int, batch: int = 1, *, head: str = "lm",
                head_positions: int | None = None, mode: str = "forward") -> dict[str, int]:
    """Count one pass of a (meta-device) model over `positions` positions with FlopCounterMode.

    The head is applied to `head_positions` positions (default: all for "lm", one for "cls");
    with "train" the backward of the output's sum is counted as well. Returns
    {"attention": ..., "linear": ..., "other": ..., "total": ...}; "attention" should equal the
    analytic attention/scores + attention/values.
    """
    require_choice("head", head, HEADS)
    require_choice("mode", mode, MODES)
    B, P = require_positive("batch", batch), require_positive("positions", positions)
    if head_positions is not None and not 0 <= head_positions <= P:
        raise ConfigError(f"head_positions must be in [0, positions={P}], got {head_positions!r}")
    device = next(model.parameters()).device
    ids = torch.zeros(B, P, dtype=torch.long, device=device)  # (batch, positions); values cost nothing
    inputs = {"input_ids": ids}
    if shape_from_config(model.config).causal:
        # Without a mask GPT-2 looks for padding in the ids (a .item() the meta device refuses); the
        # encoders' mask preparation does the same with a mask, so they get none.
        inputs["attention_mask"] = torch.ones_like(ids)  # (batch, positions)
    model.train(mode == "train")
    counter = FlopCounterMode(display=False)
    with counter, torch.set_grad_enabled(mode == "train"):
        if head == "cls" and not shape_from_config(model.config).causal:
            out = model(**inputs).logits  # (batch, labels): pooler/classifier read position 0 inside
        else:
            hidden = model.base_model(**inputs).last_hidden_state  # (batch, positions, hidden)
            if head == "lm":
                q = P if head_positions is None else head_positions
                out = _head_module(model)(hidden[:, :q])  # (batch, q, vocab); which q positions costs the same
            elif head == "cls":
                out = _head_module(model)(hidden[:, -1])  # (batch, labels): one position, like the RMT reads
            else:
                out = hidden
        if mode == "train":
            out.sum().backward()
    counts = {"attention": 0, "linear": 0, "other": 0}
    for op, flops in counter.get_flop_counts()["Global"].items():
        counts[_group(str(op).removeprefix("aten.").split(".")[0])] += int(flops)
    counts["total"] = sum(counts.values())
    return counts


def _add(a: dict[str, int], b: dict[str, int], times: int = 1) -> dict[str, int]:
    return {key: a.get(key, 0) + times * value for key, value in b.items()}


class PassCounter:
    """Measured FLOPs of backbone passes of one config, memoized; meta models built once per head.

    The measured counterparts of `flops.full_attention_flops` and `flops.rmt_flops` are sums of such
    passes. A sweep over lengths reuses one counter, so each model is built once and each distinct
    pass counted once.
    """

    def __init__(self, config: PretrainedConfig, *, batch: int = 1, mode: str = "forward", num_labels: int = 6):
        self.config, self.shape = config, shape_from_config(config)
        self.batch = require_positive("batch", batch)
        self.mode = require_choice("mode", mode, MODES)
        self.num_labels = num_labels
        self._models: dict[str, nn.Module] = {}
        self._counts: dict[tuple[int, str, int | None], dict[str, int]] = {}

    def _model(self, head: str, positions: int) -> nn.Module:
        model = self._models.get(head)
        if model is None or shape_from_config(model.config).max_positions < positions:
            model = meta_model(self.config, head, positions=positions, num_labels=self.num_labels)
            self._models[head] = model
        return model

    def count(self, positions: int, head: str, head_positions: int | None = None) -> dict[str, int]:
        """One pass over `positions` positions, the head on `head_positions` of them (see `count_flops`)."""
        key = (positions, head, head_positions)
        if key not in self._counts:
            model = self._model(head, positions)
            self._counts[key] = count_flops(model, positions, self.batch, head=head, head_positions=head_positions,
                                            mode=self.mode)
        return self._counts[key]

    def full_attention(self, tokens: int, head: str = "lm") -> dict[str, int]:
        """Measured counterpart of `flops.full_attention_flops` (always extrapolating past max positions)."""
        return self.count(require_positive("tokens", tokens), head)

    def rmt(self, tokens: int, segment_len: int, num_mem: int, head: str = "lm") -> dict[str, int]:
        """Measured counterpart of `flops.rmt_flops`, from backbone passes over segment-with-memory inputs.

        Each distinct segment (a full one; a shorter last one; the last one carrying the classifier)
        is measured once, as the backbone over content + memory positions with the head on the
        content tokens, and multiplied by how often it occurs. This measures the RMT's cost model on
        the real backbone, not the RMT wrapper (handing memory over copies hidden states: 0 FLOPs).
        """
        require_choice("head", head, HEADS)
        lengths = segment_lengths(tokens, segment_len)
        extra = memory_positions(self.shape, num_mem)
        *body, last = lengths
        result: dict[str, int] = {}
        for n in sorted(set(body)):
            one = self.count(n + extra, "lm", n) if head == "lm" else self.count(n + extra, "none")
            result = _add(result, one, times=body.count(n))
        final = self.count(last + extra, head, last if head == "lm" else None)
        return _add(result, final)


def measure_full_attention_flops(config: PretrainedConfig, tokens: int, batch: int = 1, *, head: str = "lm",
                                 mode: str = "forward", num_labels: int = 6) -> dict[str, int]:
    """Measured counterpart of `flops.full_attention_flops`: one meta-model pass over all tokens."""
    return PassCounter(config, batch=batch, mode=mode, num_labels=num_labels).full_attention(tokens, head)


def measure_rmt_flops(config: PretrainedConfig, tokens: int, segment_len: int, num_mem: int, batch: int = 1, *,
                      head: str = "lm", mode: str = "forward", num_labels: int = 6) -> dict[str, int]:
    """Measured counterpart of `flops.rmt_flops`; see `PassCounter.rmt`."""
    return PassCounter(config, batch=batch, mode=mode, num_labels=num_labels).rmt(tokens, segment_len, num_mem, head)
