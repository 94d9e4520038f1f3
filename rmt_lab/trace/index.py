"""Where memory, content and special tokens sit in one segment's backbone positions.

The memory cell lays a segment out as (see rmt_lab/model/cell.py, whose `MemoryCell.positions` says where
each part sits; nothing here re-derives it):

    encoder  [CLS] [mem 0..M-1] [SEP] t_0 .. t_{n-1} [SEP] [PAD] ...
    decoder  [read 0..M-1] t_0 .. t_{n-1} [write 0..M-1] [PAD] ...

A `SegmentIndex` turns that into index tensors shared by every layer of the segment: the query
rows that matter for memory (the answer position, then the M memory-writing positions), key groups
(incoming memory, content, fact tokens, the reference span, each slot's own incoming key), and
which keys each of those rows may see. Everything is computed once per segment, vectorized over
the batch, so the per-layer work stays a handful of tensor ops.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rmt_lab.model import MemoryCell, SegmentPositions

# Columns of SegmentIndex.keys
MEM, CONTENT, SPAN, FACT, SLOT0 = 0, 1, 2, 3, 4


@dataclass
class SegmentIndex:
    layout: str  # "encoder" or "decoder"
    n_mem: int  # M
    n_positions: int  # L, backbone positions of the segment
    prefix_len: int  # positions before the first content token
    lengths: Tensor  # (batch,) content tokens per row
    rows: Tensor  # (batch, 1 + M) query rows: the answer position, then the memory-writing positions
    row_bias: Tensor  # (batch, 1, 1 + M, L) 0 where that row may attend, -inf where it may not
    keys: Tensor  # (batch, L, 4 + M) key groups MEM, CONTENT, SPAN, FACT, then slot i's own incoming key(s)
    content_mask: Tensor  # (batch, 1, L) 1.0 on content positions
    content_rows: slice  # positions that may hold content (prefix_len .. prefix_len + seg_len), every row
    content_weight: Tensor  # (batch, seg_len) over content_rows: 1/length on content, 0 on padding
    read_keys: slice  # contiguous incoming-memory keys that content queries see
    has_fact: Tensor  # (batch,) bool, a fact token lies in this segment
    active: Tensor  # (batch,) bool, the row has at least one token here
    any_fact: bool = False  # has_fact.any(), known without a device sync
    all_visible: bool = False  # every answer/writer row may see every key (row_bias is all zeros)
    lengths_list: tuple[int, ...] = ()  # lengths, known without a device sync

    @property
    def rows_contiguous(self) -> bool:
        """Encoder rows are 0..M for every sample: a slice instead of a gather."""
        return self.layout == "encoder"

    def content_offsets(self, key_positions: Tensor) -> Tensor:
        """Offsets inside the segment's content for backbone key positions (batch, ...)."""
        return key_positions - self.prefix_len


def build_index(where: SegmentPositions, segment_size: int, starts: Tensor, facts: Tensor | None) -> SegmentIndex:
    """The index tensors of one segment, from where the cell puts its parts (`MemoryCell.positions`). `facts`
    (batch, n_facts): content positions in the whole input, -1 for none; `starts` (batch,): content tokens
    before this segment."""
    lengths, valid, m = where.lengths, where.valid, where.n_mem
    batch, n_pos = valid.shape
    device = valid.device
    prefix_len = where.content.start
    pos = torch.arange(n_pos, device=device)  # (L,)
    content = (pos >= prefix_len) & (pos < prefix_len + lengths[:, None])  # (batch, L)
    rows = torch.cat([where.summary[:, None], where.write], dim=1)  # answer position, then the writers
    read = torch.arange(where.read.start, where.read.stop, device=device)  # (M,)
    # Slot i's incoming memory: its read slot and, where it is another position (decoder), its write slot.
    own = (pos == read[:, None]) | (pos == where.write[..., None])  # (batch, M, L)
    mem_keys = own.any(1)  # (batch, L)
    row_ok = valid[:, None, :].expand(batch, m + 1, n_pos)
    if where.layout == "decoder":
        row_ok = row_ok & (pos <= rows[..., None])  # causal
    span = torch.zeros(batch, n_pos, dtype=torch.bool, device=device)
    fact = torch.zeros_like(span)
    if facts is not None and facts.numel():
        facts = facts.to(device)
        known = facts >= 0  # (batch, F)
        inside = known & (facts >= starts[:, None]) & (facts < (starts + lengths)[:, None])
        fact = _mark(n_pos, (prefix_len + facts - starts[:, None]), inside)
        offset = facts % segment_size  # the facts' places inside a segment, marked in every segment
        span = _mark(n_pos, prefix_len + offset, known & (offset < lengths[:, None]))
    keys = torch.cat(
        [mem_keys[..., None], content[..., None], span[..., None], fact[..., None], own.transpose(1, 2)], dim=-1
    ).float()  # (batch, L, 4 + M)
    row_bias = torch.zeros(batch, 1, m + 1, n_pos, device=device).masked_fill(~row_ok[:, None], float("-inf"))
    content_rows = where.content
    content_weight = content[:, content_rows].float() / lengths.clamp(min=1)[:, None].float()
    return SegmentIndex(
        layout=where.layout, n_mem=m, n_positions=n_pos, prefix_len=prefix_len, lengths=lengths,
        rows=rows, row_bias=row_bias, keys=keys, content_mask=content.float()[:, None, :], content_rows=content_rows,
        content_weight=content_weight,
        read_keys=where.read,
        has_fact=fact.any(1), active=lengths > 0, any_fact=bool(fact.any()),
        lengths_list=tuple(lengths.tolist()), all_visible=bool(row_ok.all()),
    )


def _mark(n_pos: int, key: Tensor, keep: Tensor) -> Tensor:
    """(batch, L) bool, True at the key positions (batch, F) where `keep`; duplicates are fine."""
    hits = torch.zeros(key.shape[0], n_pos, device=key.device)
    hits.scatter_add_(1, key.clamp(0, n_pos - 1), keep.float())
    return hits > 0


def position_labels(ix: SegmentIndex, tokens: list[str], sample: int) -> list[str]:
    """Labels of one row's backbone positions: [CLS], [mem i], [SEP], tokens, [PAD] (decoder: [read i], [write i])."""
    m, n = ix.n_mem, int(ix.lengths[sample])
    if ix.layout == "encoder":
        head = ["[CLS]"] + ([f"[mem {i}]" for i in range(m)] + ["[SEP]"] if m else [])
        labels = head + list(tokens[:n]) + ["[SEP]"]
    else:
        labels = [f"[read {i}]" for i in range(m)] + list(tokens[:n]) + [f"[write {i}]" for i in range(m)]
    return labels + ["[PAD]"] * (ix.n_positions - len(labels))


class IndexCache:
    """Segment indices of one recording. Segments alike in shape, lengths and fact tokens share one index, so
    a long stream of full noise segments builds its index once."""

    def __init__(self, cell: MemoryCell, facts: list[list[int]] | None, device: torch.device, size: int = 64):
        self.cell = cell
        self.facts = [sorted(int(p) for p in f) for f in facts] if facts is not None else None
        self.facts_tensor = None
        if self.facts is not None:
            width = max([len(f) for f in self.facts] + [1])
            self.facts_tensor = torch.full((len(self.facts), width), -1, dtype=torch.long)
            for b, f in enumerate(self.facts):
                self.facts_tensor[b, : len(f)] = torch.tensor(f, dtype=torch.long)
            self.facts_tensor = self.facts_tensor.to(device)
        self.size = size
        self._cache: dict[tuple, SegmentIndex] = {}

    def get(self, attention_mask: Tensor, starts: list[int]) -> SegmentIndex:
        lengths = attention_mask.sum(1).tolist()
        hits = ()
        if self.facts is not None:
            hits = tuple(tuple(p - s for p in f if s <= p < s + n) for f, s, n in zip(self.facts, starts, lengths))
        key = (attention_mask.shape[1], tuple(lengths), hits)
        ix = self._cache.get(key)
        if ix is None:
            if len(self._cache) >= self.size:
                self._cache.clear()
            starts_t = torch.tensor(starts, dtype=torch.long, device=attention_mask.device)
            where = self.cell.positions(attention_mask.bool().sum(1), attention_mask.shape[1])
            ix = build_index(where, self.cell.config.segment_size, starts_t, self.facts_tensor)
            self._cache[key] = ix
        return ix
