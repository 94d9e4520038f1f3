"""Tidy tables of per-segment summaries, built from stacked arrays in a few vectorized numpy steps.

`summaries` table, one row per value:
    segment, sample, layer, head, slot, metric, value, has_fact
  * attention metrics (see attention.METRICS, plus write_precision = write_span / write_content):
    one row per (segment, sample, layer, head), slot = -1;
  * memory state metrics: layer = head = -1; mem_norm, mem_delta_l2, mem_delta_cos per slot (slot >= 0)
    and as the mean over slots (slot = -1); mem_eff_rank of the whole memory matrix (slot = -1).
`written` table, the top-k content tokens each memory slot writes from (head-mean attention):
    segment, sample, layer, slot, rank, offset, position, token_id, mass, is_fact
    (offset: inside the segment's content; position: in the whole input).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from rmt_lab.trace.attention import METRICS

ATTENTION_METRICS = (*METRICS, "write_precision")
MEMORY_METRICS = ("mem_norm", "mem_delta_l2", "mem_delta_cos", "mem_eff_rank")
ALL_METRICS = ATTENTION_METRICS + MEMORY_METRICS
SUMMARY_COLUMNS = ("segment", "sample", "layer", "head", "slot", "metric", "value", "has_fact")
WRITTEN_COLUMNS = ("segment", "sample", "layer", "slot", "rank", "offset", "position", "token_id", "mass", "is_fact")


def memory_dynamics(new: Tensor, old: Tensor) -> Tensor:
    """Per-slot norm, change (L2, cosine) and the matrix's effective rank: (batch, M, 3), (batch,)."""
    new, old = new.detach().float(), old.detach().float()
    norm = new.norm(dim=-1)  # (batch, M)
    delta = (new - old).norm(dim=-1)
    cos = torch.nn.functional.cosine_similarity(new, old, dim=-1)
    s = torch.linalg.svdvals(new)  # (batch, min(M, d))
    p = s / s.sum(-1, keepdim=True).clamp_min(1e-12)
    eff_rank = torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum(-1))  # Roy & Vetterli (2007)
    return torch.stack([norm, delta, cos], -1), eff_rank


METRIC_DTYPE = pd.CategoricalDtype(list(ALL_METRICS))


def _metric_column(codes: np.ndarray) -> pd.Categorical:
    return pd.Categorical.from_codes(codes, dtype=METRIC_DTYPE)


def summary_frame(
    segments: np.ndarray,  # (S,) segment indices
    stats: np.ndarray,  # (S, layers, batch, heads, len(METRICS))
    slot_stats: np.ndarray,  # (S, batch, M, 3) norm, delta_l2, delta_cos
    eff_rank: np.ndarray,  # (S, batch)
    active: np.ndarray,  # (S, batch) bool
    has_fact: np.ndarray,  # (S, batch) bool
) -> pd.DataFrame:
    n_seg, n_layers, batch, heads, _ = stats.shape
    m = slot_stats.shape[2]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = stats[..., METRICS.index("write_span")] / stats[..., METRICS.index("write_content")]
    attn = np.concatenate([stats, precision[..., None]], -1)  # (S, layers, batch, heads, A)
    s, lay, b, h, k = np.meshgrid(
        np.arange(n_seg), np.arange(n_layers), np.arange(batch), np.arange(heads), np.arange(attn.shape[-1]),
        indexing="ij",
    )
    parts = [
        dict(seg=s.ravel(), sample=b.ravel(), layer=lay.ravel(), head=h.ravel(), slot=np.full(s.size, -1),
             metric=k.ravel(), value=attn.ravel())
    ]
    # memory state: per slot, then slot means, then effective rank
    per_slot = slot_stats.transpose(0, 1, 3, 2)  # (S, batch, 3, M)
    s, b, k, j = np.meshgrid(np.arange(n_seg), np.arange(batch), np.arange(3), np.arange(m), indexing="ij")
    base = len(ATTENTION_METRICS)
    parts.append(dict(seg=s.ravel(), sample=b.ravel(), layer=np.full(s.size, -1), head=np.full(s.size, -1),
                      slot=j.ravel(), metric=base + k.ravel(), value=per_slot.ravel()))
    means = np.concatenate([per_slot.mean(-1), eff_rank[..., None]], -1)  # (S, batch, 4)
    s, b, k = np.meshgrid(np.arange(n_seg), np.arange(batch), np.arange(4), indexing="ij")
    parts.append(dict(seg=s.ravel(), sample=b.ravel(), layer=np.full(s.size, -1), head=np.full(s.size, -1),
                      slot=np.full(s.size, -1), metric=base + k.ravel(), value=means.ravel()))
    seg = np.concatenate([p["seg"] for p in parts])
    sample = np.concatenate([p["sample"] for p in parts])
    keep = active[seg, sample]  # a sample with no token in a segment has nothing to summarize there
    frame = pd.DataFrame({
        "segment": segments[seg].astype(np.int64),
        "sample": sample.astype(np.int32),
        "layer": np.concatenate([p["layer"] for p in parts]).astype(np.int16),
        "head": np.concatenate([p["head"] for p in parts]).astype(np.int16),
        "slot": np.concatenate([p["slot"] for p in parts]).astype(np.int16),
        "metric": _metric_column(np.concatenate([p["metric"] for p in parts])),
        "value": np.concatenate([p["value"] for p in parts]).astype(np.float32),
        "has_fact": has_fact[seg, sample],
    })
    return frame[keep].reset_index(drop=True)


def written_frame(
    segments: np.ndarray,  # (S,)
    values: np.ndarray,  # (S, layers, batch, M, k) head-mean write attention
    offsets: np.ndarray,  # (S, layers, batch, M, k) content offsets inside the segment
    starts: np.ndarray,  # (S, batch) content position of the segment's first token
    token_ids: np.ndarray,  # (S, layers, batch, M, k)
    valid: np.ndarray,  # (S, layers, batch, M, k) bool, a real content token
    facts: list[list[int]] | None = None,  # per sample, content positions of fact tokens
) -> pd.DataFrame:
    s, lay, b, j, r = np.meshgrid(*(np.arange(n) for n in values.shape), indexing="ij")
    keep = valid.ravel()
    sample = b.ravel()[keep]
    position = (starts[s, b] + offsets).ravel()[keep].astype(np.int64)
    is_fact = np.zeros(len(position), dtype=bool)
    for i, f in enumerate(facts or []):
        here = sample == i
        is_fact[here] = np.isin(position[here], np.asarray(f, dtype=np.int64))
    return pd.DataFrame({
        "segment": segments[s.ravel()[keep]].astype(np.int64),
        "sample": sample.astype(np.int32),
        "layer": lay.ravel()[keep].astype(np.int16),
        "slot": j.ravel()[keep].astype(np.int16),
        "rank": r.ravel()[keep].astype(np.int16),
        "offset": offsets.ravel()[keep].astype(np.int32),
        "position": position,
        "token_id": token_ids.ravel()[keep].astype(np.int32),
        "mass": values.ravel()[keep].astype(np.float32),
        "is_fact": is_fact,
    })


def empty_summaries() -> pd.DataFrame:
    frame = summary_frame(np.zeros(0, np.int64), np.zeros((0, 1, 1, 1, len(METRICS))), np.zeros((0, 1, 1, 3)),
                          np.zeros((0, 1)), np.zeros((0, 1), bool), np.zeros((0, 1), bool))
    return frame


def fact_alignment(summaries: pd.DataFrame) -> pd.DataFrame:
    """Per (sample, segment): write precision and write mass on facts, averaged over layers and heads.

    Where a fact sits, a memory that stores it writes mostly from the fact (precision well above the
    span's share of the segment); on noise segments the same places hold noise and serve as the control.
    """
    attn = summaries[summaries["layer"] >= 0]
    table = attn.pivot_table(index=["sample", "segment", "has_fact"], columns="metric", values="value",
                             aggfunc="mean", observed=True)
    cols = [c for c in ("write_precision", "write_fact", "write_content", "read_content", "read_answer", "retain")
            if c in table.columns]
    return table[cols].reset_index()


def where_written(summaries: pd.DataFrame) -> pd.DataFrame:
    """Per sample: the segment where memory writes most from fact tokens (write_fact, mean over layers and
    heads) and the segments that hold facts. A memory that stores the fact writes it where it sits."""
    fact = summaries[(summaries.metric == "write_fact") & (summaries["layer"] >= 0)]
    per = fact.groupby(["sample", "segment"], observed=True).agg(write_fact=("value", "mean"),
                                                                 has_fact=("has_fact", "first")).reset_index()
    rows = []
    for sample, group in per.groupby("sample"):
        best = group.loc[group.write_fact.idxmax()]
        rows.append({"sample": int(sample), "written_segment": int(best.segment), "write_fact": float(best.write_fact),
                     "fact_segments": sorted(int(s) for s in group.segment[group.has_fact])})
    return pd.DataFrame(rows, columns=["sample", "written_segment", "write_fact", "fact_segments"])
