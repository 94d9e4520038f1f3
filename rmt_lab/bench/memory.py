"""Measured memory and time versus input length: the RMT against full attention on the same backbone.

The report's Figure 1 lower panel: the RMT's memory stays flat from 32,000 to 2,048,000 tokens,
where full attention's grows with the length (quadratically with eager attention, which keeps the
L x L score matrix; linearly with sdpa's fused kernel, whose cost is then time, quadratic).

Each point is one fresh process (`runner`): peak RSS on CPU, `max_memory_allocated` on CUDA.
- RMT: the ready backbone (pretrained MiniLM by default), 10 memory tokens, 499 content tokens per
  segment (512 positions). Forward: streamed, nothing kept per segment. Training step: forward +
  backward with a classification loss on the last segment, through the memory of all segments
  (full BPTT, the report's setting) or of the last k2. Full BPTT keeps every segment's activations,
  so its memory grows with the segments by design; the training lengths stop at 32,000 tokens.
  Training steps run with dropout off (see `workloads`), no optimizer step.
- Full attention: the backbone's size (config) with random weights, the position table enlarged to
  the length (weights and lookups do not change the cost), eager or sdpa attention, same modes.
Full attention runs up the lengths until it runs out of the budget (`Budget`): that point is a row
with status and reason, and its longer points are rows with status "skipped".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import pandas as pd

from rmt_lab.bench.flops import full_attention_flops, memory_positions, rmt_flops, segment_lengths, total
from rmt_lab.process import Budget
from rmt_lab.bench.sweep import (
    KEY_COLUMNS, Point, backbone_shape, check_backbone, check_lengths, require_columns, run_sweep,
)
from rmt_lab.config import ConfigError

# Doubling where full attention runs out; then sparser up to the report's longest evaluation,
# 2,048,000 tokens (4105 segments of 499). The RMT points sum to ~2.8M tokens, ~10-20 min here.
FORWARD_LENGTHS: tuple[int, ...] = (
    1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 512_000, 2_048_000,
)
TRAIN_LENGTHS: tuple[int, ...] = (1_000, 2_000, 4_000, 8_000, 16_000, 32_000)
METHODS: tuple[str, ...] = ("rmt", "full-sdpa", "full-eager")
MODES: tuple[str, ...] = ("forward", "train")
QUICK = {  # tiny settings for tests and a first look: seconds per point
    "backbone": "tiny-bert", "lengths": (1_000, 2_000), "train_lengths": (1_000,), "bptt_depths": (-1,),
}


@dataclass(frozen=True)
class MemorySweepConfig:
    backbone: str = "minilm"  # pretrained all-MiniLM-L6-v2 (6 layers, hidden 384), 512 positions
    num_mem: int = 10  # the report's memory size
    segment_size: int = 499  # 512 positions: [CLS] mem x 10 [SEP] 499 tokens [SEP], the report's layout
    batch: int = 1  # memory per sample; the report's evaluation is per sample too
    methods: tuple[Literal["rmt", "full-sdpa", "full-eager"], ...] = METHODS
    modes: tuple[Literal["forward", "train"], ...] = MODES
    lengths: tuple[int, ...] = FORWARD_LENGTHS  # forward lengths, tokens per sample
    train_lengths: tuple[int, ...] = TRAIN_LENGTHS  # full BPTT grows ~0.33 GiB per MiniLM segment: 32k is ~21 GiB
    bptt_depths: tuple[int, ...] = (-1, 2)  # RMT training: full BPTT (the report), and truncation to k2 = 2
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # bfloat16: the GPU's fast path
    budget: Budget = Budget()
    device: str = "auto"  # cuda if available, else cpu

    def __post_init__(self) -> None:
        shape = backbone_shape(check_backbone(self.backbone))  # unknown backbones fail here, listing the known
        for name in ("num_mem", "segment_size", "batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"MemorySweepConfig.{name} must be a positive integer, got {value!r}")
        if not self.methods or not self.modes:
            raise ConfigError("MemorySweepConfig needs at least one method and one mode")
        if "forward" in self.modes:
            check_lengths(self.lengths, self.segment_size, "MemorySweepConfig.lengths")
        if "train" in self.modes:
            check_lengths(self.train_lengths, self.segment_size, "MemorySweepConfig.train_lengths")
            bad = [k for k in self.bptt_depths if isinstance(k, bool) or not (k == -1 or k >= 1)]
            if bad or not self.bptt_depths:
                raise ConfigError(f"MemorySweepConfig.bptt_depths {list(self.bptt_depths)}: each must be -1 "
                                  "(full BPTT) or a number of segments >= 1")
        try:
            rmt_flops(shape, self.segment_size, self.segment_size, self.num_mem)  # the segment must fit
        except ConfigError as err:
            raise ConfigError(f"MemorySweepConfig segment_size={self.segment_size}, num_mem={self.num_mem} "
                              f"on backbone {self.backbone!r}: {err}") from None


def memory_points(config: MemorySweepConfig) -> list[Point]:
    """Every (method, mode, [k2], length) point of the sweep, with its analytic FLOPs."""
    shape = backbone_shape(config.backbone)
    points = []
    for method in config.methods:
        for mode in config.modes:
            lengths = config.lengths if mode == "forward" else config.train_lengths
            depths = config.bptt_depths if (method == "rmt" and mode == "train") else (0,)
            for k2 in depths:
                for tokens in lengths:
                    points.append(_point(config, shape, method, mode, k2, tokens))
    return points


def _point(config: MemorySweepConfig, shape, method: str, mode: str, k2: int, tokens: int) -> Point:
    B = config.batch
    common = {"sweep": "memory", "mode": mode, "backbone": config.backbone, "dtype": config.dtype, "tokens": tokens,
              "batch": B}
    device = {"device": config.device, "dtype": config.dtype}
    if method == "rmt":
        key = {**common, "method": "rmt", "attn": "sdpa", "segment_size": config.segment_size,
               "num_mem": config.num_mem, "bptt_depth": k2}
        params = {"backbone": config.backbone, "tokens": tokens, "batch": B, "num_mem": config.num_mem,
                  "segment_size": config.segment_size, "mode": mode, "bptt_depth": k2, **device}
        flops = rmt_flops(shape, tokens, config.segment_size, config.num_mem, B, head="none", mode=mode)
        known = {"positions": config.segment_size + memory_positions(shape, config.num_mem),
                 "n_segments": len(segment_lengths(tokens, config.segment_size))}
        workload = "rmt"
    else:
        attn = method.removeprefix("full-")
        key = {**common, "method": "full", "attn": attn, "segment_size": 0, "num_mem": 0, "bptt_depth": 0}
        params = {"backbone": config.backbone, "tokens": tokens, "batch": B, "attn": attn, "mode": mode, **device}
        flops = full_attention_flops(shape, tokens, B, head="none", mode=mode, extrapolate=True)
        known = {"positions": tokens, "n_segments": 1}
        workload = "full"
    work = tokens * B * (3 if mode == "train" else 1)
    return Point(key, workload, params, work, {**known, "flops": float(total(flops))})


def memory_sweep(config: MemorySweepConfig, path, *, progress: bool = True, remeasure: bool = False,
                  runner=None) -> pd.DataFrame:
    """Run (or resume) the sweep into the parquet file `path`; returns its rows."""
    return run_sweep(memory_points(config), path, config.budget, progress=progress, remeasure=remeasure,
                     runner=runner)


# ------------------------------------------------------------------------------------------- tables
def series_label(row) -> str:
    """'rmt forward', 'full-eager train', 'rmt train k2=all' ... one per measured curve."""
    name = "rmt" if row["method"] == "rmt" else f"full-{row['attn']}"
    label = f"{name} {row['mode']}"
    if row["method"] == "rmt" and row["mode"] == "train":
        label += " k2=all" if row["bptt_depth"] == -1 else f" k2={row['bptt_depth']}"
    return label


TABLE_COLUMNS = KEY_COLUMNS + ["status", "reason", "peak_mib", "seconds", "tokens_per_s"]


def memory_table(frame: pd.DataFrame) -> pd.DataFrame:
    """RMT and full attention side by side: one row per length, one column per curve, peak MiB.

    A cell is NaN where the point was not ok (see `memory_status_table` for why).
    """
    require_columns(frame, TABLE_COLUMNS, "memory table input")
    data = frame.assign(series=[series_label(r) for r in frame.to_dict("records")])
    data = data.assign(value=data["peak_mib"].where(data["status"] == "ok"))
    return data.pivot_table(index="tokens", columns="series", values="value", aggfunc="first", dropna=False)


def memory_status_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Like `memory_table`, as text: the peak in GiB where ok, else the status (oom, timeout, skipped ...)."""
    require_columns(frame, TABLE_COLUMNS, "memory table input")
    data = frame.assign(series=[series_label(r) for r in frame.to_dict("records")])
    data = data.assign(cell=[f"{r['peak_mib'] / 1024:.2f}" if r["status"] == "ok" else r["status"]
                             for r in data.to_dict("records")])
    wide = data.pivot_table(index="tokens", columns="series", values="cell", aggfunc="first")
    return wide.fillna("-")


def feasible_lengths(frame: pd.DataFrame) -> pd.DataFrame:
    """Per curve: its largest length measured ok, the peak there, and the first length out of budget and why."""
    require_columns(frame, TABLE_COLUMNS, "memory table input")
    rows = []
    data = frame.assign(series=[series_label(r) for r in frame.to_dict("records")])
    for series, group in data.groupby("series", sort=False):
        group = group.sort_values("tokens")
        ok = group[group["status"] == "ok"]
        failed = group[~group["status"].isin(["ok", "skipped"])]
        first_fail = failed.iloc[0] if len(failed) else None
        rows.append({
            "series": series,
            "largest_ok_tokens": int(ok["tokens"].max()) if len(ok) else 0,
            "peak_mib_there": float(ok.iloc[-1]["peak_mib"]) if len(ok) else math.nan,
            "tokens_per_s_there": float(ok.iloc[-1]["tokens_per_s"]) if len(ok) else math.nan,
            "first_failed_tokens": int(first_fail["tokens"]) if first_fail is not None else 0,
            "failure": f"{first_fail['status']}: {first_fail['reason']}" if first_fail is not None else "",
        })
    return pd.DataFrame(rows)


def flatness(frame: pd.DataFrame, low: int = 16_000) -> dict[str, float]:
    """The RMT forward's peak memory at its longest length relative to `low` tokens (1.0 = flat)."""
    require_columns(frame, TABLE_COLUMNS, "memory table input")
    rmt = frame[(frame["method"] == "rmt") & (frame["mode"] == "forward") & (frame["status"] == "ok")]
    rmt = rmt.sort_values("tokens")
    if low not in set(rmt["tokens"]):
        raise ConfigError(f"no ok RMT forward row at {low} tokens; measured: {sorted(rmt['tokens'])}")
    at_low = float(rmt.loc[rmt["tokens"] == low, "peak_mib"].iloc[0])
    top = rmt.iloc[-1]
    band = rmt[rmt["tokens"] >= low]["peak_mib"]
    return {"low_tokens": low, "low_peak_mib": at_low, "high_tokens": int(top["tokens"]),
            "high_peak_mib": float(top["peak_mib"]), "high_over_low": float(top["peak_mib"]) / at_low,
            "max_over_min": float(band.max() / band.min())}


def memory_report(frame: pd.DataFrame) -> str:
    """What `rmt-lab bench memory` prints of a memory sweep's table."""
    lines = [
        "\nPeak memory (GiB; peak RSS of a fresh process on CPU, max allocated on CUDA) by length and method:",
        memory_status_table(frame).to_string(),
        "\nLargest length within the budget, per method:",
        feasible_lengths(frame).to_string(index=False, formatters={
            "largest_ok_tokens": "{:,}".format, "first_failed_tokens": "{:,}".format,
            "peak_mib_there": "{:,.0f}".format, "tokens_per_s_there": "{:,.0f}".format}),
    ]
    rmt = frame[(frame["method"] == "rmt") & (frame["mode"] == "forward") & (frame["status"] == "ok")]
    low = 16_000 if 16_000 in set(rmt["tokens"]) else (int(rmt["tokens"].min()) if len(rmt) else None)
    if low is not None:
        f = flatness(frame, low)
        lines.append(f"\nRMT forward peak memory: {f['low_peak_mib']:,.0f} MiB at {f['low_tokens']:,} tokens, "
                     f"{f['high_peak_mib']:,.0f} MiB at {f['high_tokens']:,} tokens ({f['high_over_low']:.3f}x; "
                     f"max/min from {f['low_tokens']:,} up: {f['max_over_min']:.3f}x)")
    return "\n".join(lines)
