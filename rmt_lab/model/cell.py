"""The memory cell: one segment through the backbone, memory in, new memory out.

Encoder layout (the report's BERT RMT), one row per sample, padding only at the end:

    [CLS] [mem 0] ... [mem M-1] [SEP] t_0 ... t_{n-1} [SEP] [PAD] ...

Memory is read and written at the same positions 1..M: the input embeddings there are the
incoming memory, the final hidden states there are the new memory. Attention is bidirectional.
With M = 0 the layout is `[CLS] tokens [SEP]`, exactly what the plain backbone sees.

Decoder layout (GPT-2 style RMT):

    [read 0] ... [read M-1] t_0 ... t_{n-1} [write 0] ... [write M-1] [PAD] ...

Both read and write positions take the incoming memory as input embeddings; the new memory is the
final hidden state at the write positions. Attention follows the backbone's causal mask, so:
  * a read-memory slot sees the read slots before it and itself, and nothing of the segment;
  * a content token sees every read slot and the content tokens up to itself, never a later
    content token and never a write slot;
  * a write slot sees every read slot, every content token and the write slots up to itself.
Write slots sit right after each sample's last token, so positions stay contiguous under padding.

Memory has the width of the backbone's final hidden states (`BackboneAdapter.hidden_size`), since
that is what the write positions produce. Where the token embeddings are narrower (factorized
embeddings: ALBERT, ELECTRA with embedding_size < hidden_size, whose first layer maps embeddings up to
the hidden size), memory is read through a learned linear map into the embedding space
(`MemoryCell.memory_in`, no bias, trained with the rest). The model's own map runs the other way and
has no inverse in general, and keeping memory in the narrower embedding width would need a learned
map on the write side instead, which drops information the layers computed before it is carried.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import ContextManager, Literal

import torch
from torch import Tensor, nn

from rmt_lab.model import kernels
from rmt_lab.model.backbones import Backbone
from rmt_lab.model.config import RMTConfig
from rmt_lab.model.lora import attach_lora


# The memory gate's initial logit: sigmoid(6) = 0.998 of the cell's output becomes the new memory.
GATE_OPEN = 6.0


@dataclass
class CellOutput:
    memory: Tensor  # (batch, n_mem, d_model) new memory; unchanged for samples with no tokens
    summary: Tensor  # (batch, d_model) [CLS] state (encoder) or last token state (decoder)
    hidden: Tensor  # (batch, seg_len, d_model) final states of the content tokens
    active: Tensor  # (batch,) bool, the sample had at least one token in this segment


@dataclass(frozen=True)
class SegmentPositions:
    """Where memory, content and the summary sit in one segment's backbone positions (layouts above).
    The one place these positions are decided: the cell builds its inputs from them, the tracer its layouts."""

    layout: str  # "encoder" or "decoder"
    n_mem: int  # M
    lengths: Tensor  # (batch,) content tokens per row
    read: slice  # positions whose input embeddings are the incoming memory, the same for every row
    write: Tensor  # (batch, M) positions whose final states are the new memory
    content: slice  # positions that may hold content, prefix_len .. prefix_len + seg_len, every row
    summary: Tensor  # (batch,) [CLS] (encoder) or the position before the write slots, the last token (decoder)
    n_positions: int  # L, backbone positions of the segment
    valid: Tensor  # (batch, L) bool, the positions the backbone attends to; padding only at the end


class MemoryCell(nn.Module):
    """Runs one segment through a HF backbone with memory tokens (the RMT's recurrent step)."""

    def __init__(self, backbone: Backbone, config: RMTConfig):
        super().__init__()
        self.config = config
        self.backbone_name = backbone.name
        self.adapter = backbone.adapter
        self.special = backbone.special
        self.tokenizer = backbone.tokenizer  # turns the backbone's ids into text; None: none known
        self.model = backbone.model
        # The backbone's attention, chosen here for every way a model is built or loaded: rmt_lab's fused CPU
        # kernel where it serves and a gradient is to come (fp32, no padding mask: full segments in training),
        # the backbone's sdpa otherwise (`kernels.fused_training_attention`).
        kernels.use_fused_attention(self.model)
        self.layout: Literal["encoder", "decoder"] = backbone.adapter.layout
        if config.layout not in ("auto", self.layout):
            raise ValueError(
                f"RMTConfig.layout={config.layout!r} does not fit backbone {backbone.name!r}, "
                f"whose architecture {backbone.config.model_type!r} needs layout {self.layout!r}"
            )
        body = self.adapter.body(self.model)
        if "inputs_embeds" not in inspect.signature(body.forward).parameters:
            raise ValueError(f"backbone {backbone.name!r}: {type(body).__name__}.forward takes no inputs_embeds, "
                             "and the memory cell feeds memory to the backbone as input embeddings")
        max_positions = self.adapter.max_positions(backbone.config)
        if self.positions_per_segment > max_positions:
            raise ValueError(
                f"a segment needs {self.positions_per_segment} positions (segment_size={config.segment_size} + "
                f"{self.positions_per_segment - config.segment_size} for memory and special tokens), but backbone "
                f"{backbone.name!r} has {max_positions} positions; use segment_size <= "
                f"{max_positions - (self.positions_per_segment - config.segment_size)}"
            )
        if config.lora_rank:
            for p in self.model.parameters():  # the embeddings and any head too: only what attach_lora picks trains
                p.requires_grad_(False)
            attach_lora(self.adapter.body(self.model), config.lora_rank, config.lora_alpha)
        vocab = self.embeddings.num_embeddings
        for field in ("cls", "sep") if self.layout == "encoder" else ():  # the ids a segment holds (layouts above)
            token_id = getattr(self.special, field)
            if not 0 <= token_id < vocab:
                raise ValueError(f"special token {field}={token_id} of backbone {backbone.name!r} lies outside its "
                                 f"vocabulary [0, {vocab})")
        self.d_model = self.adapter.hidden_size(backbone.config)
        d_embed = self.embeddings.embedding_dim
        # Factorized embeddings: memory is read through a learned map into the embedding space (module docstring).
        needs_map = d_embed != self.d_model and config.num_mem_tokens > 0
        self.memory_in = nn.Linear(self.d_model, d_embed, bias=False) if needs_map else None
        # Initial memory: learned, drawn like the token embeddings (the report adds memory tokens to the vocab).
        std = float(self.embeddings.weight.detach().float().std())
        self.memory = nn.Parameter(torch.randn(config.num_mem_tokens, self.d_model) * std)
        self.memory_gate = nn.Linear(self.d_model, 1) if config.memory_gate and config.num_mem_tokens else None
        if self.memory_gate is not None:  # open: the plain RMT's update (config.py)
            nn.init.zeros_(self.memory_gate.weight)
            nn.init.constant_(self.memory_gate.bias, GATE_OPEN)
        # The ids of [CLS] and [SEP] (encoder), embedded together once per segment; not saved (config facts).
        if self.layout == "encoder":
            self.register_buffer("special_ids", torch.tensor([[self.special.cls, self.special.sep]]), persistent=False)
        self._aranges: dict[tuple[int, torch.device], Tensor] = {}  # position ranges by length, made once
        # Entered around every backbone call: `RecurrentWrapper.compile_backbone` puts its inductor options
        # here, because dynamo reads some of them (freezing) when it traces, on the first call of each shape.
        self.backbone_context: Callable[[], ContextManager] = contextlib.nullcontext

    @property
    def embeddings(self) -> nn.Embedding:
        return self.adapter.token_embeddings(self.model)

    @property
    def lm_head(self) -> nn.Module | None:
        return self.adapter.lm_head(self.model)

    @property
    def prefix_len(self) -> int:
        """Positions before the first content token."""
        m = self.config.num_mem_tokens
        if self.layout == "decoder":
            return m
        return 1 + m + 1 if m else 1

    @property
    def positions_per_segment(self) -> int:
        m = self.config.num_mem_tokens
        suffix = m if self.layout == "decoder" else 1
        return self.prefix_len + self.config.segment_size + suffix

    def _arange(self, n: int, device: torch.device) -> Tensor:
        """torch.arange(n) on `device`, made once per length: segments repeat a few shapes."""
        key = (n, device)
        if key not in self._aranges:
            self._aranges[key] = torch.arange(n, device=device)
        return self._aranges[key]

    def positions(self, lengths: Tensor, seg_len: int) -> SegmentPositions:
        """Positions of a segment of `seg_len` columns whose rows hold `lengths` (batch,) tokens."""
        m, p = self.config.num_mem_tokens, self.prefix_len
        fixed = self.positions_per_segment - self.config.segment_size  # memory and special-token positions
        slots = self._arange(m, lengths.device)  # (M,)
        if self.layout == "encoder":
            read = slice(1, 1 + m)
            write = (1 + slots).expand(len(lengths), m)  # written where read
            summary = torch.zeros_like(lengths)  # [CLS]
        else:
            read = slice(0, m)
            write = (p + lengths)[:, None] + slots  # right after each row's last token
            summary = (p + lengths - 1).clamp(min=0)  # the last token
        pos = self._arange(fixed + seg_len, lengths.device)  # (L,)
        return SegmentPositions(
            layout=self.layout, n_mem=m, lengths=lengths, read=read, write=write, content=slice(p, p + seg_len),
            summary=summary, n_positions=fixed + seg_len, valid=pos < (fixed + lengths)[:, None],
        )

    def init_memory(self, batch_size: int) -> Tensor:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be an integer >= 1")
        return self.memory.unsqueeze(0).expand(batch_size, -1, -1)  # (batch, n_mem, d_model)

    def check_memory(self, memory: Tensor, batch_size: int) -> None:
        """Shape and dtype of a memory given from outside; its values are `check_values`' business."""
        expected = (batch_size, self.config.num_mem_tokens, self.d_model)
        if not isinstance(memory, Tensor):
            raise TypeError(f"memory must be a tensor of shape (batch, n_mem, d_model) = {expected}, got "
                            f"{type(memory).__name__}")
        if tuple(memory.shape) != expected:
            raise ValueError(f"memory has shape {tuple(memory.shape)}; expected (batch, n_mem, d_model) = {expected}")
        if memory.dtype != self.memory.dtype:
            raise ValueError(f"memory has dtype {memory.dtype}; expected {self.memory.dtype}")

    def check_values(self, input_ids: Tensor, attention_mask: Tensor | None, memory: Tensor | None) -> None:
        """Refuse what the backbone would fail on deep inside torch (ids outside the vocabulary) or turn into
        wrong numbers without a word (padding before a token, NaN or infinite memory). Reads the tensors on
        the host: one device sync for all three, which is why the segment loop checks at its edge instead."""
        vocab = self.embeddings.num_embeddings
        low, high = torch.aminmax(input_ids)
        facts = [low, high]
        if attention_mask is not None:
            mask = attention_mask.bool()
            facts.append((mask[:, 1:] & ~mask[:, :-1]).any())  # a valid token after a padding one
        if memory is not None:
            facts.append(~torch.isfinite(memory).all())
        low, high, *flags = torch.stack([f.long() for f in facts]).tolist()  # (one host read)
        if low < 0 or high >= vocab:
            raise ValueError(f"token ids must lie in [0, {vocab}) (the backbone's vocabulary); got ids from {low} "
                             f"to {high}")
        if attention_mask is not None and flags.pop(0):
            raise ValueError("attention_mask must be left-packed: each row's valid tokens first, padding only at the "
                             "end (pad on the right, or let RecurrentWrapper.forward pack the input)")
        if memory is not None and flags.pop(0):
            raise ValueError("the memory given holds NaN or infinite values; memory must be finite")

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None, memory: Tensor, *,
                check: bool = True) -> CellOutput:
        """One segment: `input_ids` (batch, seg_len) left-packed, `attention_mask` its prefix mask.

        `attention_mask=None`: every token is valid, known without reading a mask on the device.
        `check=False` skips `check_values` (a device sync per segment): the segment loop passes it, having
        checked its input and any memory given at its own edge; the memory it carries is the cell's own.
        Shapes and dtypes are always checked (they are known on the host).
        """
        if not isinstance(input_ids, Tensor) or input_ids.dtype not in (torch.int64, torch.int32):
            got = input_ids.dtype if isinstance(input_ids, Tensor) else type(input_ids).__name__
            raise TypeError(f"input_ids must be an int64 or int32 tensor; got {got}")
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape (batch, seg_len); got {tuple(input_ids.shape)}")
        batch, seg_len = input_ids.shape
        if attention_mask is not None:
            if not isinstance(attention_mask, Tensor) or attention_mask.shape != input_ids.shape:
                shape = tuple(attention_mask.shape) if isinstance(attention_mask, Tensor) else type(attention_mask).__name__
                raise ValueError(f"attention_mask has shape {shape}; expected the segment's {tuple(input_ids.shape)}")
            if attention_mask.dtype.is_floating_point or attention_mask.dtype.is_complex:
                raise ValueError(f"attention_mask must be bool or integer (1 = token, 0 = padding); got "
                                 f"{attention_mask.dtype}")
        if seg_len > self.config.segment_size:
            raise ValueError(f"segment of {seg_len} tokens is longer than segment_size={self.config.segment_size}")
        if batch == 0 or seg_len == 0:
            raise ValueError(f"empty segment of shape {(batch, seg_len)}: a segment needs a batch and at least one token")
        self.check_memory(memory, batch)
        if check:
            self.check_values(input_ids, attention_mask, memory)
        # Every position valid (a full segment in every row, the common case of a long stream): no mask at
        # all, the same attention, and the backbone's sdpa skips adding a (batch, 1, L, L) one (~8% on CPU).
        # Deciding that from a given mask reads it on the host (a device sync on a GPU); None needs nothing.
        full = attention_mask is None
        if not full:
            mask = attention_mask.bool()
            lengths, full = mask.sum(1), bool(mask.all())  # (batch,); left-packed: all valid = every row full
        tokens, specials = self._embed(input_ids)  # (batch, seg_len, d_embed); encoder: [CLS], [SEP]
        read = memory if self.memory_in is None else self.memory_in(memory)  # (batch, n_mem, d_embed)
        p, m = self.prefix_len, self.config.num_mem_tokens
        if full:  # memory and summary at the same positions in every row: slices, no index tensors, scatter or where
            embeds, full_mask = self._full_inputs(tokens, read, specials), None
        elif self.layout == "encoder":
            embeds, full_mask, write_pos, summary_pos = self._encoder_inputs(tokens, lengths, read, specials)
        else:
            embeds, full_mask, write_pos, summary_pos = self._decoder_inputs(tokens, lengths, read)
        with self.backbone_context():
            hidden = self.adapter.body(self.model)(inputs_embeds=embeds, attention_mask=full_mask).last_hidden_state
        if full:
            write = slice(1, 1 + m) if self.layout == "encoder" else slice(p + seg_len, p + seg_len + m)
            summary = 0 if self.layout == "encoder" else p + seg_len - 1
            # Copies, as the gathers below make: a kept memory or summary must not hold the segment's states.
            new_memory, summary = hidden[:, write].clone(), hidden[:, summary].clone()
            active = torch.ones(batch, dtype=torch.bool, device=hidden.device)
        else:
            active = lengths > 0
            rows = torch.arange(batch, device=hidden.device)
            new_memory = hidden[rows[:, None], write_pos]  # (batch, n_mem, d_model)
            new_memory = torch.where(active[:, None, None], new_memory, memory)
            summary = hidden[rows, summary_pos]  # (batch, d_model)
        if self.memory_gate is not None:  # an inactive row's output is its memory already: unchanged either way
            new_memory = memory + torch.sigmoid(self.memory_gate(new_memory)) * (new_memory - memory)
        return CellOutput(memory=new_memory, summary=summary, hidden=hidden[:, p : p + seg_len], active=active)

    def _embed(self, input_ids: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        """The tokens' embeddings (batch, seg_len, d_embed) and, for an encoder, [CLS]'s and [SEP]'s (batch, 1,
        d_embed) from the same lookup: where the embeddings train, each lookup's backward fills a gradient the
        size of the vocabulary (30522 x 384 in fp32, 47 MB; a tenth of a 64-token MiniLM training step)."""
        if self.layout == "decoder":
            return self.embeddings(input_ids), None
        specials = self.special_ids.to(input_ids.dtype).expand(input_ids.shape[0], -1)  # (batch, 2)
        looked = self.embeddings(torch.cat([specials, input_ids], dim=1))  # (batch, 2 + seg_len, d_embed)
        return looked[:, 2:], (looked[:, :1], looked[:, 1:2])

    def _full_inputs(self, tokens: Tensor, memory: Tensor, specials: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Input embeddings of a segment as if every row held seg_len tokens: the layouts above. `specials`:
        the encoder's [CLS] and [SEP] embeddings from `_embed` (looked up here when not given)."""
        if self.layout == "decoder":
            return torch.cat([memory, tokens, memory], dim=1)  # (batch, m + seg_len + m, d_embed)
        if specials is None:
            specials = self.embeddings(self.special_ids).expand(tokens.shape[0], -1, -1).split(1, dim=1)
        cls, sep = specials
        parts = [cls, memory, sep] if self.config.num_mem_tokens else [cls]
        return torch.cat([*parts, tokens, sep], dim=1)  # (batch, prefix + seg_len + 1, d_embed)

    def _encoder_inputs(self, tokens: Tensor, lengths: Tensor, memory: Tensor,
                        specials: tuple[Tensor, Tensor] | None = None):
        seg_len = tokens.shape[1]
        embeds = self._full_inputs(tokens, memory, specials)  # (batch, prefix + seg_len + 1, d_embed)
        sep = embeds[:, -1:]  # the closing [SEP], moved to the end of each row's tokens below
        where = self.positions(lengths, seg_len)
        pos = self._arange(where.n_positions, tokens.device)  # (positions,)
        end = where.content.start + lengths  # (batch,) position of each row's closing [SEP]
        embeds = torch.where((pos == end[:, None])[..., None], sep, embeds)
        return embeds, where.valid.long(), where.write, where.summary

    def _decoder_inputs(self, tokens: Tensor, lengths: Tensor, memory: Tensor):
        batch, seg_len, d = tokens.shape
        m = self.config.num_mem_tokens
        embeds = self._full_inputs(tokens, memory)  # (batch, m + seg_len + m, d_embed)
        where = self.positions(lengths, seg_len)
        if m:
            embeds = embeds.scatter(1, where.write[..., None].expand(-1, -1, d), memory)
        return embeds, where.valid.long(), where.write, where.summary
