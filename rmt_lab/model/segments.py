"""Cutting a batch of token sequences into segments, the RMT's unit of recurrence.

Each sample's valid tokens (attention_mask == 1) are cut into consecutive pieces of at most
`segment_size` tokens. With `align="left"` piece k holds tokens [k*S, (k+1)*S); with
`align="right"` pieces are counted from each sample's end, so every sample's last piece is full
and all samples end in the same (last) segment. Inside a segment a sample's tokens are always
left-packed: valid tokens first, then padding. A sample with no token in a segment is inactive
there and the memory cell leaves its memory unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

IGNORE_INDEX = -100  # label value that takes no part in the loss (HF convention)


@dataclass
class Segment:
    """One segment of a batch: tokens left-packed, padding on the right."""

    input_ids: Tensor  # (batch, seg_len) int64
    attention_mask: Tensor  # (batch, seg_len) bool, a prefix of True per row
    labels: Tensor | None = None  # (batch, seg_len) int64 token labels, IGNORE_INDEX where unused
    # Known on the host, and trusted: True, every row holds seg_len tokens (the memory cell then reads no
    # mask, so a GPU run does not wait on the device); False, some row is shorter, tokens left-packed.
    # None (a segment made elsewhere): read from the mask, left-packing checked.
    full: bool | None = None

    @property
    def lengths(self) -> Tensor:  # (batch,)
        return self.attention_mask.sum(1)


def pack_left(input_ids: Tensor, attention_mask: Tensor, labels: Tensor | None = None):
    """Move every row's valid tokens to the front, keeping their order (handles left padding)."""
    mask = attention_mask.bool()
    if bool((mask[:, 1:] & ~mask[:, :-1]).any()):  # some row has a valid token after a padding one
        order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # (batch, len)
        input_ids = input_ids.gather(1, order)
        mask = mask.gather(1, order)
        labels = labels.gather(1, order) if labels is not None else None
    return input_ids, mask, labels


def count_segments(lengths: Tensor, segment_size: int) -> int:
    """Number of segments needed by the longest sample."""
    return int((lengths.max() + segment_size - 1) // segment_size)


def iter_segments(
    input_ids: Tensor,
    attention_mask: Tensor | None,
    segment_size: int,
    align: Literal["left", "right"] = "left",
    labels: Tensor | None = None,
) -> Iterator[Segment]:
    """Yield the segments of a (batch, length) input in order, one gather per segment.

    Segments are views computed lazily, so cutting a million-token input costs one segment of memory.
    """
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
    input_ids, mask, labels = pack_left(input_ids, attention_mask, labels)
    lengths = mask.sum(1)  # (batch,)
    n_segments = count_segments(lengths, segment_size)
    width = min(segment_size, int(lengths.max()))
    host_lengths = lengths.tolist()  # read once, so each segment's fullness is known without the device
    offsets = torch.arange(width, device=input_ids.device)  # (width,)
    for k in range(n_segments):
        if align == "left":
            start = torch.full_like(lengths, k * segment_size)
        else:
            start = lengths - (n_segments - k) * segment_size
        lo = start.clamp(min=0)  # (batch,)
        hi = (start + segment_size).clamp(max=lengths)  # (batch,)
        pos = lo[:, None] + offsets  # (batch, width)
        valid = pos < hi[:, None]
        pos = pos.clamp(max=input_ids.shape[1] - 1)
        ids = input_ids.gather(1, pos).masked_fill(~valid, 0)
        seg_labels = labels.gather(1, pos).masked_fill(~valid, IGNORE_INDEX) if labels is not None else None
        before = k if align == "left" else n_segments - 1 - k  # a row's segments before this one, in its own order
        full = all(min(segment_size, n - before * segment_size) == width for n in host_lengths)
        yield Segment(ids, valid, seg_labels, full)
