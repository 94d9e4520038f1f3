"""The recurrent wrapper: cuts a long input into segments and runs the memory cell over them.

Memory is explicit state. `RecurrentWrapper.forward` takes a whole (batch, length) input;
`RecurrentWrapper.stream` takes any iterable of segments (a generator over ten million tokens,
say), so memory use does not grow with the input length: nothing is kept per segment unless asked.
BPTT truncation (k2 = `bptt_depth`) detaches the memory that enters all but the last k2 segments,
and the summary carried from earlier segments with it, so the graph (and the activations it holds)
spans only the last k2 segments. A sample shorter than the batch's longest takes its summary from
its own last segment; under truncation that summary is detached if it lies before the last k2.
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_model, save_file, save_model
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from transformers import AutoConfig, PreTrainedModel

import rmt_lab
from rmt_lab.assets import load_local_tokenizer, load_tokenizer, sha256_file
from rmt_lab.config import ConfigError, from_dict, to_dict
from rmt_lab.io import atomic_path, write_json
from rmt_lab.model import kernels
from rmt_lab.model.adapters import init_kwargs
from rmt_lab.model.backbones import (
    BACKBONES, SpecialTokens, available_backbones, backbone_from_config, backbone_from_folder, backbone_from_model,
    load_backbone, load_pretrained_weights,
)
from rmt_lab.model.cell import MemoryCell
from rmt_lab.model.config import RMTConfig, check_keep
from rmt_lab.model.lora import merge_lora, trained_parameters
from rmt_lab.model.segments import IGNORE_INDEX, Segment, count_segments, iter_segments

CONFIG_FILE = "rmt_config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"  # a checkpoint's own tokenizer, for backbones other than the ready ones
FORMAT_VERSION = 1
# torch.compile's modes that `RecurrentWrapper.compile_backbone` accepts (reduce-overhead: CUDA graphs).
COMPILE_MODES: tuple[str, ...] = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class RMTOutput:
    memory: Tensor  # (batch, n_mem, d_model) memory after the last segment
    summary: Tensor  # (batch, d_model) each sample's summary state from its last non-empty segment
    logits: Tensor | None  # (batch, num_classes) classifier over `summary`, if the model has one
    loss: Tensor | None  # classification or LM loss, if labels were given
    n_segments: int
    segments: list[dict[str, Tensor]] = field(default_factory=list)  # per segment, only the kept fields


class RecurrentWrapper(nn.Module):
    """A Recurrent Memory Transformer: memory cell + optional classifier + segment loop."""

    def __init__(self, cell: MemoryCell):
        super().__init__()
        self.cell = cell
        self.config = cell.config
        n = self.config.num_classes
        self.classifier = nn.Linear(cell.d_model, n) if n else None
        slots = self.config.slot_classes
        self.slot_heads = nn.ModuleList(nn.Linear(cell.d_model, c) for c in slots) if slots else None
        # Recompute each segment's forward during backward instead of storing its activations:
        # training memory then holds one segment's activations plus the memory states between segments.
        self.checkpoint_segments = False
        self.adapters_merged = False  # set by merge_adapters (evaluation only)

    @classmethod
    def from_backbone(cls, backbone: str | Path | PreTrainedModel, config: RMTConfig, *, tokenizer=None,
                      special_tokens: Mapping[str, int] | None = None, dropout: float | None = None
                      ) -> RecurrentWrapper:
        """An RMT over `backbone`: a ready name (`available_backbones()`), a local folder written by a HF
        model's `save_pretrained` (loaded with local_files_only, never from the hub), or a built
        `transformers.PreTrainedModel`, a base model or one with a head (see `BackboneAdapter.keep`; the
        object is used, not copied). A ready name wins over a folder of the same name.

        Encoders need the ids of [CLS] and [SEP]: from `special_tokens` (a dict with keys cls, sep, pad),
        else `tokenizer` (an object or a local folder; a model folder's own tokenizer by default), else
        the model config. `dropout` sets every dropout probability of the backbone's config before the
        model is built, so it cannot apply to a model object (set its config before building it).
        The tokenizer is kept (`RecurrentWrapper.tokenizer`): traces label tokens with it and checkpoints hold it.
        """
        if not isinstance(config, RMTConfig):
            raise TypeError(f"config must be an RMTConfig, got {type(config).__name__}; build one with "
                            "RMTConfig(...) or RMTConfig's fields from a dict with rmt_lab.config.from_dict")
        if isinstance(backbone, str) and backbone in BACKBONES:
            if tokenizer is not None or special_tokens is not None:
                raise ValueError(f"ready backbone {backbone!r} uses rmt_lab's own tokenizer and special tokens; "
                                 "tokenizer= and special_tokens= are for a model folder or object")
            return cls(MemoryCell(load_backbone(backbone, dropout), config))
        if isinstance(backbone, (str, Path)):
            if not Path(backbone).is_dir():
                raise ValueError(f"unknown backbone {str(backbone)!r}: neither a ready backbone, available backbones: "
                                 f"{available_backbones()}, nor a local folder written by save_pretrained")
            return cls(MemoryCell(backbone_from_folder(backbone, special_tokens, tokenizer, dropout), config))
        if dropout is not None:
            raise ValueError(f"dropout={dropout!r} cannot reach the dropout modules of a model already built; set the "
                             "probabilities on its config before building it, or pass its save_pretrained folder")
        return cls(MemoryCell(backbone_from_model(backbone, special_tokens=special_tokens, tokenizer=tokenizer), config))

    def compile_backbone(self, mode: str = "default", freeze: bool = False) -> RecurrentWrapper:
        """Compile the backbone body in place with torch.compile (inductor); returns self.

        Fuses the work between the matmuls (bias + GELU, layer norms, residual adds, the attention
        mask) into generated kernels; `mode` is torch.compile's ("default", "reduce-overhead": CUDA
        graphs, "max-autotune"). Shapes are static: each distinct segment length compiles once (a
        stream of full segments and a shorter last one compiles twice). `freeze=True` is for
        evaluation only, runs under `torch.inference_mode()` / `no_grad`: it folds the weights in as
        constants (inductor's freezing: prepacked matmul weights on CPU), so later changes to the
        weights are not seen, and it switches the backbone's attention to rmt_lab's fused CPU kernel
        for inference too ("rmt_fused", `rmt_lab.model.kernels`: built on first use, ~40 s once per
        machine), which serves fp32 attention on the CPU with no mask or a plain causal one (full encoder
        and decoder segments) and hands every other case to sdpa. Without freezing, the kernel serves
        where a gradient is to come, as in eager training.
        Outputs equal the eager model's within float rounding (tests: 1e-5 in fp32). The state dict
        keeps its keys, so saving and loading are unchanged.
        """
        from torch._inductor import config as inductor_config
        from torch._inductor import list_mode_options

        if mode not in COMPILE_MODES:
            raise ValueError(f"unknown compile mode {mode!r}; allowed: {list(COMPILE_MODES)}")
        # Not torch.compile's `options`: those reach inductor only, after dynamo has traced the graph without
        # freezing (torch 2.13 ignores options={"freezing": True}); the cell enters these around each call.
        options = {**list_mode_options(mode), "freezing": freeze}
        if self.cell.memory.device.type == "cpu":  # built now: the compiled graph calls it, training included
            kernels.prepare()
        if freeze:
            self.cell.model.set_attn_implementation(kernels.FUSED_IMPL)
        self.cell.adapter.body(self.cell.model).compile(dynamic=False)
        self.cell.backbone_context = functools.partial(inductor_config.patch, options)
        return self

    def merge_adapters(self) -> RecurrentWrapper:
        """For evaluation: fold the adapters (`RMTConfig.lora_rank`) into the backbone's weights; returns self.

        The same function (float rounding aside) with one product per layer instead of three; the model
        can no longer be trained as adapters or saved (save_pretrained refuses).
        """
        if merge_lora(self.cell.adapter.body(self.cell.model)):
            self.adapters_merged = True
        return self

    @property
    def tokenizer(self):
        """The backbone's own tokenizer (MiniLM's WordPiece for the ready backbones), or None if none was given."""
        return self.cell.tokenizer

    # ------------------------------------------------------------------ running
    def init_memory(self, batch_size: int) -> Tensor:
        return self.cell.init_memory(batch_size)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        memory: Tensor | None = None,
        keep: Iterable[str] | None = None,
        carry_memory: bool = True,
    ) -> RMTOutput:
        """Run a whole input. `labels`: (batch,) class ids, or (batch, length) token ids for the LM loss."""
        input_ids = _check_ids(input_ids)
        vocab = self.cell.embeddings.num_embeddings
        if input_ids.numel():
            low, high = torch.aminmax(input_ids)
            if int(low) < 0 or int(high) >= vocab:
                raise ValueError(f"token ids must lie in [0, {vocab}) (the backbone's vocabulary); got ids from "
                                 f"{int(low)} to {int(high)}")
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} != input_ids {tuple(input_ids.shape)}")
        mask = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
        lengths = mask.sum(1)
        if input_ids.shape[0] == 0:
            raise ValueError(f"empty batch: input_ids has shape {tuple(input_ids.shape)}")
        if input_ids.shape[1] == 0 or bool((lengths == 0).any()):
            empty = [] if input_ids.shape[1] == 0 else (lengths == 0).nonzero().flatten().tolist()
            raise ValueError(f"empty input: sample(s) {empty or 'all'} have no tokens")
        token_labels = labels if isinstance(labels, Tensor) and labels.dim() == 2 else None
        if token_labels is not None:
            if token_labels.shape != input_ids.shape:
                raise ValueError(f"token labels shape {tuple(token_labels.shape)} != input_ids "
                                 f"{tuple(input_ids.shape)}")
            _check_integer("token labels", token_labels)
            scored = token_labels[token_labels != IGNORE_INDEX]
            if scored.numel():
                low, high = torch.aminmax(scored)
                if int(low) < 0 or int(high) >= vocab:
                    raise ValueError(f"token labels must lie in [0, {vocab}) (the vocabulary) or be {IGNORE_INDEX} "
                                     f"(ignored); got labels from {int(low)} to {int(high)}")
        segments = iter_segments(input_ids, mask, self.config.segment_size, self.config.align, token_labels)
        return self.stream(
            segments,
            n_segments=count_segments(lengths, self.config.segment_size),
            labels=labels if token_labels is None else None,
            memory=memory,
            keep=keep,
            carry_memory=carry_memory,
            check=False,  # the whole input's ids were checked above, at once
        )

    def stream(
        self,
        segments: Iterable[Tensor | Segment],
        n_segments: int | None = None,
        labels: Tensor | None = None,
        memory: Tensor | None = None,
        keep: Iterable[str] | None = None,
        carry_memory: bool = True,
        check: bool = True,
    ) -> RMTOutput:
        """Run segments in order. Each item: a (batch, seg_len) or (seg_len,) LongTensor, or a `Segment`.

        `labels` (batch,) are class ids scored on the final summary; token labels travel inside
        `Segment.labels`. `n_segments` is needed only for truncated BPTT with gradients, where the
        last k2 segments must be known in advance (taken from `len(segments)` when it has one).
        `carry_memory=False` feeds the initial memory to every segment (the no-recurrence ablation).
        `check=False` skips reading each segment's token ids on the host to check them against the
        vocabulary (one device sync per segment); a given memory is checked once either way.
        """
        keep = check_keep(tuple(self.config.keep if keep is None else keep))
        if not isinstance(segments, Iterable) or isinstance(segments, Tensor) and segments.dim() != 3:
            shape = f" of shape {tuple(segments.shape)}" if isinstance(segments, Tensor) else ""
            raise TypeError(f"segments must be an iterable of (batch, seg_len) token tensors or Segments (or one "
                            f"(n_segments, batch, seg_len) tensor), got {type(segments).__name__}{shape}; a whole "
                            "(batch, length) input goes to forward(), which cuts it")
        if n_segments is not None and (isinstance(n_segments, bool) or not isinstance(n_segments, int)
                                       or n_segments < 1):
            raise ValueError(f"n_segments={n_segments!r} must be an integer >= 1 (the number of segments the stream "
                             "yields)")
        if n_segments is None and hasattr(segments, "__len__"):
            n_segments = len(segments)
        if labels is not None:
            _check_integer("class labels", labels)
        k2 = self.config.bptt_depth
        truncate = k2 != -1 and torch.is_grad_enabled()
        if truncate and n_segments is None:
            raise ValueError("truncated BPTT (bptt_depth != -1) with gradients needs n_segments for a stream")
        init = None
        summary = None
        lm_loss_sum, lm_count = None, 0
        kept: list[dict[str, Tensor]] = []
        seen = 0
        for seg in segments:
            seg = _as_segment(seg, self.config.segment_size)
            batch = seg.input_ids.shape[0]
            if init is None:
                init = self.init_memory(batch)
                if memory is not None:
                    self.cell.check_memory(memory, batch)
                if check or memory is not None:  # a given memory once, at the edge: later memory is the cell's own
                    self.cell.check_values(seg.input_ids, None, memory)
                memory = init if memory is None else memory
            elif batch != init.shape[0]:
                raise ValueError(f"segment {seen} has batch {batch}, earlier segments had {init.shape[0]}")
            elif check:
                self.cell.check_values(seg.input_ids, None, None)
            if not carry_memory:
                memory = init
            elif truncate and 0 < seen <= n_segments - k2:
                memory = memory.detach()  # cut the graph: gradients reach only the last k2 segments
                summary = None if summary is None else summary.detach()
            mask = None if seg.full else seg.attention_mask  # None: all valid, nothing to read on the device
            if self.checkpoint_segments and torch.is_grad_enabled():
                out = checkpoint(self.cell, seg.input_ids, mask, memory, use_reentrant=False, check=False)
            else:
                out = self.cell(seg.input_ids, mask, memory, check=False)
            memory = out.memory
            if summary is None or mask is None:  # mask None: every row active, the summary is this segment's
                summary = out.summary
            else:
                summary = torch.where(out.active[:, None], out.summary, summary)
            lm_logits = None
            if seg.labels is not None or "lm_logits" in keep:
                lm_logits = self._lm_logits(out.hidden)
            if seg.labels is not None:
                s, n = _lm_loss(lm_logits, seg.labels)
                lm_loss_sum = s if lm_loss_sum is None else lm_loss_sum + s
                lm_count += n
            if keep:
                record = {"memory": out.memory, "summary": out.summary, "hidden": out.hidden}
                if "lm_logits" in keep:
                    record["lm_logits"] = lm_logits
                if "class_logits" in keep:
                    record["class_logits"] = self._classify(out.summary)
                record = {k: v for k, v in record.items() if k in keep}
                record["attention_mask"] = seg.attention_mask
                kept.append(record)
            seen += 1
        if seen == 0:
            raise ValueError("empty input: the stream yielded no segments")
        if n_segments is not None and seen != n_segments:
            raise ValueError(f"the stream yielded {seen} segments but n_segments={n_segments}")
        logits = self._classify(summary) if self.classifier is not None else None
        loss = None
        if labels is not None:
            if logits is None:
                raise ValueError("class labels given but the model has no classifier (RMTConfig.num_classes=0)")
            if labels.shape != (summary.shape[0],):
                raise ValueError(f"class labels have shape {tuple(labels.shape)}; expected ({summary.shape[0]},)")
            n_classes = self.config.num_classes
            if bool(((labels < 0) | (labels >= n_classes)).any()):
                raise ValueError(f"class labels must lie in [0, {n_classes}); got {labels.tolist()}")
            loss = F.cross_entropy(logits, labels)
        elif lm_loss_sum is not None:
            loss = lm_loss_sum / max(lm_count, 1)
        return RMTOutput(memory=memory, summary=summary, logits=logits, loss=loss, n_segments=seen, segments=kept)

    def slot_logits(self, memory: Tensor) -> list[Tensor]:
        """Each slot head's logits (batch, slot_classes[k]) from memory token k of `memory` (batch, n_mem, d)."""
        if self.slot_heads is None:
            raise ValueError("slot logits need slot heads: set RMTConfig.slot_classes")
        return [head(memory[:, k]) for k, head in enumerate(self.slot_heads)]

    def _classify(self, summary: Tensor) -> Tensor:
        if self.classifier is None:
            raise ValueError("class logits need a classifier: set RMTConfig.num_classes > 0")
        return self.classifier(summary)  # (batch, num_classes)

    def _lm_logits(self, hidden: Tensor) -> Tensor:
        head = self.cell.lm_head
        if head is None:
            raise ValueError(f"token labels need an LM head; the {self.cell.layout} backbone has none")
        return head(hidden)  # (batch, seg_len, vocab)

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | Path) -> Path:
        """Weights (safetensors) and configs (JSON), each written atomically."""
        if self.adapters_merged:
            raise ValueError("this model's adapters were merged into its weights for evaluation; save it before "
                             "merge_adapters(), or load the checkpoint again")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / WEIGHTS_FILE) as tmp:
            if self.saves_trained_only:
                save_file({k: v.contiguous() for k, v in self.trained_state().items()}, str(tmp))
            else:
                save_model(self, str(tmp))
            digest = sha256_file(tmp)
        # The tokenizer travels with a backbone that cannot name it (a ready backbone's is MiniLM's, by name), so a
        # loaded model labels its traces in its own vocabulary; a stale one from an earlier save must not stay.
        shutil.rmtree(directory / TOKENIZER_DIR, ignore_errors=True)
        if self.tokenizer is not None and self.cell.backbone_name not in BACKBONES \
                and hasattr(self.tokenizer, "save_pretrained"):
            self.tokenizer.save_pretrained(str(directory / TOKENIZER_DIR))
        # The weights' digest, checked on load: safetensors would read altered bytes as other numbers.
        write_json(directory / CONFIG_FILE, {**self.describe(), "weights_sha256": digest})
        return directory

    @property
    def saves_trained_only(self) -> bool:
        """Whether checkpoints hold only the trained tensors: adapters on a frozen backbone whose weights
        can be rebuilt, verified, from its name (a pretrained ready backbone)."""
        spec = BACKBONES.get(self.cell.backbone_name)
        return bool(self.config.lora_rank) and spec is not None and spec.pretrained

    def trained_state(self) -> dict[str, Tensor]:
        """The state-dict entries that training changes: all of them, or with adapters on a frozen
        backbone what `lora.trained_parameters` names, the initial memory and the classifier."""
        state = self.state_dict()
        if not self.config.lora_rank:
            return state
        trained = {id(p) for p in trained_parameters(self.cell.adapter.body(self.cell.model)).values()}
        params = dict(self.named_parameters())
        return {k: v for k, v in state.items() if not k.startswith("cell.model.") or id(params.get(k)) in trained}

    def describe(self) -> dict:
        """Everything needed to rebuild this model without its weights, as JSON-ready data."""
        cell = self.cell
        return json.loads(json.dumps({
            "format_version": FORMAT_VERSION,
            "rmt_lab_version": rmt_lab.__version__,
            "backbone": cell.backbone_name,
            "backbone_config": cell.model.config.to_dict(),
            # The transformers class the backbone module is and its constructor arguments: with the config
            # they rebuild exactly the module tree whose weights are saved (a body with or without a pooler,
            # a causal LM with its head), whether it came from a ready name, a folder or a model object.
            "backbone_class": type(cell.model).__name__,
            "backbone_init": init_kwargs(cell.model),
            "special_tokens": vars(cell.special),
            "rmt": to_dict(self.config),
            # "trained": the weights file holds the trained tensors only; the frozen rest is `backbone`'s own.
            "weights": "trained" if self.saves_trained_only else "all",
        }))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> RecurrentWrapper:
        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        for path in (config_path, weights_path):
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: not an RMT checkpoint folder (see save_pretrained)")
        try:
            meta = json.loads(config_path.read_text(encoding="utf-8"))
            version = meta["format_version"]
            backbone_config = dict(meta["backbone_config"])
            model_type = backbone_config.pop("model_type")
            special = SpecialTokens(**meta["special_tokens"])
            name = meta["backbone"]
            rmt = meta["rmt"]
            # Absent from checkpoints of ready backbones written before they were recorded: those hold the
            # layout's default class, which is what None builds.
            class_name, init = meta.get("backbone_class"), meta.get("backbone_init")
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{config_path} is corrupt or not an RMT config: {err!r}") from err
        if version != FORMAT_VERSION:
            raise ValueError(f"{config_path} has format_version {version}; this rmt_lab reads {FORMAT_VERSION}")
        try:
            config = from_dict(RMTConfig, rmt)
        except ConfigError as err:
            raise ValueError(f"{config_path}: {err}") from err
        expected = meta.get("weights_sha256")  # absent in checkpoints written before digests were kept
        if expected is not None and sha256_file(weights_path) != expected:
            raise ValueError(f"{weights_path} does not match the sha256 recorded in {config_path}: the file was "
                             "altered or damaged after it was saved; refusing to load it")
        weights = meta.get("weights", "all")
        if weights not in ("all", "trained"):
            raise ValueError(f"{config_path}: weights={weights!r}; allowed values: ['all', 'trained']")
        hf_config = AutoConfig.for_model(model_type, **backbone_config)
        backbone = backbone_from_config(name, hf_config, special, class_name, init)
        if (directory / TOKENIZER_DIR).is_dir():
            backbone.tokenizer = load_local_tokenizer(directory / TOKENIZER_DIR)
        elif name in BACKBONES:
            backbone.tokenizer = load_tokenizer()
        if weights == "trained":  # the frozen weights are the named pretrained backbone's own (verified on load)
            if name not in BACKBONES or not BACKBONES[name].pretrained:
                raise ValueError(f"{config_path} holds trained tensors only, but {name!r} is not a pretrained backbone")
            load_pretrained_weights(backbone)
        try:
            model = cls(MemoryCell(backbone, config))
        except ValueError as err:  # e.g. a special-token id outside the vocabulary
            raise ValueError(f"{config_path}: {err}") from err
        try:
            missing, unexpected = load_model(model, str(weights_path), strict=False)
        except (SafetensorError, OSError, RuntimeError) as err:
            raise ValueError(f"{weights_path} cannot be loaded into backbone {name!r}: {err}") from err
        if weights == "trained":
            missing = [k for k in missing if k in model.trained_state()]
        if missing or unexpected:
            raise ValueError(
                f"{weights_path} does not match backbone {name!r} with {config}: "
                f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
            )
        return model.eval()  # as HF's from_pretrained: dropout off until .train()


def _check_ids(input_ids: Tensor) -> Tensor:
    if not isinstance(input_ids, Tensor):
        raise TypeError(f"input_ids must be a torch.Tensor, got {type(input_ids).__name__}")
    if input_ids.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"input_ids must be an integer tensor (int64 or int32), got {input_ids.dtype}")
    if input_ids.dim() == 1:
        input_ids = input_ids.unsqueeze(0)
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape (batch, length) or (length,), got {tuple(input_ids.shape)}")
    return input_ids.long()


def _check_integer(what: str, labels: Tensor) -> None:
    if not isinstance(labels, Tensor) or labels.dtype.is_floating_point or labels.dtype.is_complex \
            or labels.dtype == torch.bool:
        got = labels.dtype if isinstance(labels, Tensor) else type(labels).__name__
        raise TypeError(f"{what} must be an integer tensor (int64), got {got}")


def _as_segment(item: Tensor | Segment, segment_size: int) -> Segment:
    if isinstance(item, Segment):
        seg = Segment(_check_ids(item.input_ids), item.attention_mask.bool(), item.labels, item.full)
        if seg.attention_mask.shape != seg.input_ids.shape:
            raise ValueError(f"segment attention_mask has shape {tuple(seg.attention_mask.shape)}; expected its "
                             f"input_ids' {tuple(seg.input_ids.shape)}")
        if seg.full is None and bool((seg.attention_mask[:, 1:] & ~seg.attention_mask[:, :-1]).any()):
            raise ValueError("segment tokens must be left-packed: padding only at the end of each row")
    else:
        ids = _check_ids(item)
        seg = Segment(ids, torch.ones_like(ids, dtype=torch.bool), full=True)
    batch, length = seg.input_ids.shape
    if length > segment_size:
        raise ValueError(f"segment of {length} tokens is longer than segment_size={segment_size}")
    if length == 0 or batch == 0:
        raise ValueError(f"empty segment of shape {(batch, length)}: a segment needs a batch and at least one token")
    return seg


def _lm_loss(logits: Tensor, labels: Tensor) -> tuple[Tensor, int]:
    """Summed next-token loss inside one segment (position t predicts label t+1) and its token count."""
    target = labels[:, 1:]
    n = int((target != IGNORE_INDEX).sum())
    loss = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return loss, n
