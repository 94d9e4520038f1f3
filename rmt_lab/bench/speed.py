"""Speed of the RMT forward: tokens/s, achieved FLOP/s and its fraction of this machine's matmul peak.

Three methods, each a fresh process per batch size, each measuring the fp32 matmul peak (2048^3,
median of repeats) first, so every ratio to the peak is taken in the same process:
- "rmt": the RMT streamed segment by segment (nothing kept), 512 positions per segment by default;
  before each segment the bare backbone runs once over the same positions, timed apart, so the
  ratio of the RMT's time per segment to the bare forward's (issue 8: <= 1.05) is taken in pairs,
  under the same load: on a shared machine, times taken minutes apart can differ several-fold;
- "backbone": the bare backbone alone in its own process, once per segment: its own FLOP/s and memory;
- "rmt-naive": the naive loop over the materialized input that computes vocabulary logits for every
  token and keeps every segment's outputs, the way the published wrapper works (issue 8: the RMT
  should reach >= 2x its tokens/s).
Achieved FLOP/s count the FLOPs each method runs: no head for the RMT (its encoder reads no vocab
logits: the FLOPs the task needs), the LM head on every content token for the naive loop, the bare
backbone's `forward_pass_flops` over its positions; from the whole run's time. Per-segment times come with their median and 10th/90th percentiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pandas as pd

from rmt_lab.bench.flops import forward_pass_flops, memory_positions, rmt_flops, total
from rmt_lab.bench.runner import Budget
from rmt_lab.bench.sweep import KEY_COLUMNS, Point, backbone_shape, check_backbone, require_columns, run_sweep
from rmt_lab.config import ConfigError

METHODS: tuple[str, ...] = ("rmt", "backbone", "rmt-naive")
QUICK = {"backbone": "tiny-bert", "batches": (1, 2), "segments": 4, "matmul_n": 512, "matmul_repeats": 3}


@dataclass(frozen=True)
class SpeedSweepConfig:
    backbone: str = "minilm"  # pretrained all-MiniLM-L6-v2, the size of issue 8's anchors
    num_mem: int = 10  # the report's memory size
    segment_size: int = 499  # 512 positions per segment with [CLS] mem x 10 [SEP] ... [SEP]
    batches: tuple[int, ...] = (1, 8)  # batch 1, and a batch large enough to fill the matmuls better
    segments: int = 16  # full segments per sample: 16 per-segment times for the median, ~2-20 s a point here
    methods: tuple[Literal["rmt", "backbone", "rmt-naive"], ...] = METHODS
    matmul_n: int = 2048  # the peak's matmul: n x n by n x n, fp32
    matmul_repeats: int = 10  # median of this many, after 2 warm-up products
    budget: Budget = Budget()
    device: str = "auto"

    def __post_init__(self) -> None:
        shape = backbone_shape(check_backbone(self.backbone))
        for name in ("num_mem", "segment_size", "segments", "matmul_n", "matmul_repeats"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"SpeedSweepConfig.{name} must be a positive integer, got {value!r}")
        if not self.batches or not self.methods:
            raise ConfigError("SpeedSweepConfig needs at least one batch size and one method")
        for b in self.batches:
            if isinstance(b, bool) or not isinstance(b, int) or b <= 0:
                raise ConfigError(f"SpeedSweepConfig.batches item must be a positive integer, got {b!r}")
        try:
            rmt_flops(shape, self.segment_size, self.segment_size, self.num_mem)  # the segment must fit
        except ConfigError as err:
            raise ConfigError(f"SpeedSweepConfig segment_size={self.segment_size}, num_mem={self.num_mem} "
                              f"on backbone {self.backbone!r}: {err}") from None

    @property
    def tokens(self) -> int:
        return self.segments * self.segment_size


def speed_points(config: SpeedSweepConfig) -> list[Point]:
    shape = backbone_shape(config.backbone)
    positions = config.segment_size + memory_positions(shape, config.num_mem)
    tokens = config.tokens
    peak = {"matmul_n": config.matmul_n, "matmul_repeats": config.matmul_repeats, "device": config.device}
    points = []
    for batch in config.batches:
        for method in config.methods:
            key = {"sweep": "speed", "method": method, "attn": "sdpa", "mode": "forward", "backbone": config.backbone,
                   "tokens": tokens, "batch": batch, "segment_size": config.segment_size,
                   "num_mem": config.num_mem, "bptt_depth": 0}
            if method == "backbone":
                workload = "backbone"
                params = {"backbone": config.backbone, "positions": positions, "passes": config.segments,
                          "batch": batch, **peak}
                flops = config.segments * total(forward_pass_flops(shape, positions, batch))
            else:
                workload = "rmt"
                params = {"backbone": config.backbone, "tokens": tokens, "batch": batch, "num_mem": config.num_mem,
                          "segment_size": config.segment_size, "keep_outputs": method == "rmt-naive",
                          "paired_backbone": method == "rmt", **peak}
                head = "lm" if method == "rmt-naive" else "none"
                flops = total(rmt_flops(shape, tokens, config.segment_size, config.num_mem, batch, head=head))
            known = {"flops": float(flops), "positions": positions, "n_segments": config.segments}
            points.append(Point(key, workload, params, tokens * batch, known))
    return points


def speed_sweep(config: SpeedSweepConfig, path, *, progress: bool = True, remeasure: bool = False,
                runner=None) -> pd.DataFrame:
    """Run (or resume) the speed points into the parquet file `path`; returns their rows."""
    return run_sweep(speed_points(config), path, config.budget, progress=progress, remeasure=remeasure,
                     runner=runner)


SPEED_COLUMNS = KEY_COLUMNS + ["status", "tokens_per_s", "gflops_per_s", "matmul_peak_gflops", "fraction_of_peak",
                               "segment_s_median", "segment_s_p10", "segment_s_p90", "peak_mib"]


def speed_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (backbone, batch): the RMT's speed and its ratios to the bare backbone and the naive loop.

    rmt_segment_over_backbone: median over segments of the RMT's time for the segment / the bare
    backbone's forward over the same positions run just before it, in the same process (issue 8's
    goal: <= 1.05). rmt_over_naive: the RMT's tokens/s / the naive loop's (goal: >= 2).
    """
    require_columns(frame, SPEED_COLUMNS, "speed table input")
    ok = frame[frame["status"] == "ok"]
    rows = []
    for (backbone, batch), group in ok.groupby(["backbone", "batch"], sort=True):
        by = {r["method"]: r for r in group.to_dict("records")}
        rmt, bare, naive = by.get("rmt"), by.get("backbone"), by.get("rmt-naive")
        if rmt is None:
            continue
        row = {
            "backbone": backbone, "batch": batch, "tokens_per_sample": rmt["tokens"],
            "tokens_per_s": rmt["tokens_per_s"], "gflops_per_s": rmt["gflops_per_s"],
            "matmul_peak_gflops": rmt["matmul_peak_gflops"], "fraction_of_peak": rmt["fraction_of_peak"],
            "segment_ms": 1e3 * rmt["segment_s_median"], "segment_ms_p10": 1e3 * rmt["segment_s_p10"],
            "segment_ms_p90": 1e3 * rmt["segment_s_p90"], "peak_mib": rmt["peak_mib"],
            "paired_backbone_ms": 1e3 * rmt["paired_backbone_s_median"],
            "rmt_segment_over_backbone": rmt["paired_ratio_median"],
        }
        if bare is not None:
            row.update(backbone_segment_ms=1e3 * bare["segment_s_median"],
                       backbone_fraction_of_peak=bare["fraction_of_peak"])
        if naive is not None:
            row.update(naive_tokens_per_s=naive["tokens_per_s"], naive_peak_mib=naive["peak_mib"],
                       rmt_over_naive=rmt["tokens_per_s"] / naive["tokens_per_s"])
        rows.append(row)
    return pd.DataFrame(rows)
