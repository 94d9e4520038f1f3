"""Speed of the RMT: tokens/s, achieved FLOP/s and its fraction of this machine's matmul peak.

Every method runs in a fresh process per batch size, each measuring the matmul peak (2048^3 in the
sweep's dtype, median of repeats) first, so every ratio to the peak is taken in the same process:
- "rmt": the RMT streamed segment by segment (nothing kept), 512 positions per segment by default;
  before each segment the bare backbone runs once over the same positions and one 2048^3 matmul
  runs, each timed apart. So the ratio of the RMT's time per segment to the bare forward's (issue
  8: <= 1.05) and its fraction of the matmul peak are also taken in pairs, under the same load: on a
  shared machine, times taken minutes apart can differ several-fold;
- "rmt-compiled": the same with the backbone compiled by torch.compile (`compile` mode, weights
  frozen, and on the CPU attention in rmt_lab's fused kernel, `rmt_lab.model.kernels`), the paired
  bare backbone staying eager with sdpa;
- "backbone": the bare backbone alone in its own process, once per segment: its own FLOP/s and memory;
- "rmt-naive": the naive loop over the materialized input that computes vocabulary logits for every
  token and keeps every segment's outputs, the way the published wrapper works: a weak baseline, which
  the RMT beats mostly by not computing logits;
- "rmt-plain": the plain memory-cell loop (`workloads.PlainLoop`: concatenate memory and tokens, run
  the HF body without its LM head, slice the write positions), streamed with a paired matmul like the
  RMT: the fair baseline of the cell. The streamed RMT also runs one plain-loop segment right before
  each of its own (`paired_plain`), so its speed over the plain loop is also taken in pairs;
- "rmt-train" / "rmt-train-ckpt": one training step (forward + backward through every segment, full
  BPTT, classification loss, dropout off or at `train_dropout`, every weight trained) over
  `train_segments` segments, at each batch of `train_batches` and segment size of `train_segment_sizes`,
  without and with gradient checkpointing across segments (`checkpoint_segments`): the time/memory
  trade. After the measured step, paired rounds of (one matmul, one step) give each step's fraction of
  the peak of its own moment;
  the eager step's rounds also run the plain memory-cell loop trained the way the published wrapper
  trains (`workloads._paired_training`: same weights and dropout, HF's sdpa attention as the published
  wrapper runs it, one backward through every segment), so its speed over that baseline is taken in pairs too;
- "rmt-train-compiled": the same step with the backbone compiled (`compile` mode) for forward and
  backward, compiled in the warm-up step.
Achieved FLOP/s count the FLOPs each method runs: no head for the RMT and the plain loop (the RMT reads
no vocab logits: the FLOPs the task needs), the LM head on every content token for the naive loop, the bare
backbone's `forward_pass_flops` over its positions, 3x the forward for a training step (with
checkpointing the recomputed forward is not counted: it is not needed); from the whole run's time.
Per-segment times come with their median and 10th/90th percentiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pandas as pd

from rmt_lab.bench.flops import forward_pass_flops, memory_positions, rmt_flops, total
from rmt_lab.process import Budget
from rmt_lab.bench.sweep import KEY_COLUMNS, Point, backbone_shape, check_backbone, require_columns, run_sweep
from rmt_lab.bench.workloads import resolve_device
from rmt_lab.config import ConfigError
from rmt_lab.model import kernels

FORWARD_METHODS: tuple[str, ...] = ("rmt", "rmt-compiled", "backbone", "rmt-naive", "rmt-plain")
TRAIN_METHODS: tuple[str, ...] = ("rmt-train", "rmt-train-ckpt", "rmt-train-compiled")
METHODS: tuple[str, ...] = FORWARD_METHODS + TRAIN_METHODS
QUICK = {"backbone": "tiny-bert", "batches": (1, 2), "segments": 4, "matmul_n": 512, "matmul_repeats": 3,
         "methods": ("rmt", "backbone", "rmt-naive", "rmt-plain", "rmt-train", "rmt-train-ckpt"),  # no compile
         "train_batches": (2,), "train_segment_sizes": (499,)}  # seconds a point


@dataclass(frozen=True)
class SpeedSweepConfig:
    backbone: str = "minilm"  # pretrained all-MiniLM-L6-v2, the size of issue 8's anchors
    num_mem: int = 10  # the report's memory size
    segment_size: int = 499  # 512 positions per segment with [CLS] mem x 10 [SEP] ... [SEP]
    batches: tuple[int, ...] = (1, 8)  # batch 1, and a batch large enough to fill the matmuls better
    segments: int = 16  # full segments per sample: 16 per-segment times for the median, ~2-20 s a point here
    methods: tuple[Literal["rmt", "rmt-compiled", "backbone", "rmt-naive", "rmt-plain", "rmt-train",
                           "rmt-train-ckpt", "rmt-train-compiled"], ...] = METHODS
    compile: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    train_batches: tuple[int, ...] = (8, 32)  # the base experiments train at batch 16-32; 8 already fills the matmuls
    train_segment_sizes: tuple[int, ...] = (64, 499)  # the base experiments' segments, and 512-position ones
    train_batch: int | None = None  # one batch size in place of train_batches (the CLI's --train-batch)
    train_segments: int = 4  # full BPTT through 4 segments: memory carried, gradients through it
    # Off by default: the step's FLOPs are the same either way, and the rows stay comparable with earlier ones.
    # 0.1 (MiniLM's own, the trainer presets') times the steps as training runs them: the backbone's hidden and
    # attention dropout, modules in train mode, the RMT's step and the paired plain-loop step alike.
    train_dropout: float = 0.0
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # bfloat16: the GPU's fast path
    matmul_n: int = 2048  # the peak's matmul: n x n by n x n, fp32
    matmul_repeats: int = 10  # median of this many, after 2 warm-up products
    budget: Budget = Budget()
    device: str = "auto"

    def __post_init__(self) -> None:
        shape = backbone_shape(check_backbone(self.backbone))
        for name in ("num_mem", "segment_size", "segments", "matmul_n", "matmul_repeats", "train_batch",
                     "train_segments"):
            value = getattr(self, name)
            if value is None and name == "train_batch":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"SpeedSweepConfig.{name} must be a positive integer, got {value!r}")
        if not self.batches or not self.methods:
            raise ConfigError("SpeedSweepConfig needs at least one batch size and one method")
        for name in ("batches", "train_batches", "train_segment_sizes"):
            for b in getattr(self, name):
                if isinstance(b, bool) or not isinstance(b, int) or b <= 0:
                    raise ConfigError(f"SpeedSweepConfig.{name} item must be a positive integer, got {b!r}")
        p = self.train_dropout
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
            raise ConfigError(f"SpeedSweepConfig.train_dropout must be a probability in [0, 1), got {p!r}")
        for size in (self.segment_size, *self.train_segment_sizes):
            try:
                rmt_flops(shape, size, size, self.num_mem)  # the segment must fit
            except ConfigError as err:
                raise ConfigError(f"SpeedSweepConfig segment size {size}, num_mem={self.num_mem} "
                                  f"on backbone {self.backbone!r}: {err}") from None

    @property
    def tokens(self) -> int:
        return self.segments * self.segment_size

    @property
    def training_batches(self) -> tuple[int, ...]:
        return self.train_batches if self.train_batch is None else (self.train_batch,)


def speed_points(config: SpeedSweepConfig) -> list[Point]:
    shape = backbone_shape(config.backbone)
    common = {"matmul_n": config.matmul_n, "matmul_repeats": config.matmul_repeats, "device": config.device,
              "dtype": config.dtype, "backbone": config.backbone}
    points = []

    def add(method: str, mode: str, batch: int, segments: int, size: int, workload: str, params: dict,
            flops: float) -> None:
        tokens = segments * size
        key = {"sweep": "speed", "method": method, "attn": "sdpa", "mode": mode, "backbone": config.backbone,
               "dtype": config.dtype, "tokens": tokens, "batch": batch, "segment_size": size,
               "num_mem": config.num_mem, "bptt_depth": -1 if mode == "train" else 0,
               "dropout": params.get("dropout", 0.0)}  # a key: a step with dropout is not the one without
        known = {"flops": float(flops), "positions": size + memory_positions(shape, config.num_mem),
                 "n_segments": segments}
        points.append(Point(key, workload, params, tokens * batch * (3 if mode == "train" else 1), known))

    size, tokens = config.segment_size, config.tokens
    rmt = {**common, "num_mem": config.num_mem, "segment_size": size}
    for batch in config.batches:
        for method in (m for m in config.methods if m in FORWARD_METHODS):
            if method == "backbone":
                positions = size + memory_positions(shape, config.num_mem)
                params = {**common, "positions": positions, "passes": config.segments, "batch": batch}
                add(method, "forward", batch, config.segments, size, "backbone", params,
                    config.segments * total(forward_pass_flops(shape, positions, batch)))
                continue
            rmt_itself = method in ("rmt", "rmt-compiled")  # streamed, paired with the bare backbone and plain loop
            params = {**rmt, "tokens": tokens, "batch": batch, "keep_outputs": method == "rmt-naive",
                      "plain": method == "rmt-plain", "paired_backbone": rmt_itself, "paired_plain": rmt_itself,
                      "paired_peak": method != "rmt-naive",
                      "compile": config.compile if method == "rmt-compiled" else ""}
            head = "lm" if method == "rmt-naive" else "none"
            add(method, "forward", batch, config.segments, size, "rmt", params,
                total(rmt_flops(shape, tokens, size, config.num_mem, batch, head=head)))
    for size in config.train_segment_sizes:
        tokens = config.train_segments * size
        for batch in config.training_batches:
            for method in (m for m in config.methods if m in TRAIN_METHODS):
                params = {**common, "num_mem": config.num_mem, "segment_size": size, "tokens": tokens, "batch": batch,
                          "mode": "train", "bptt_depth": -1, "checkpoint_segments": method == "rmt-train-ckpt",
                          "compile": config.compile if method == "rmt-train-compiled" else "",
                          "paired_peak": True, "paired_plain": method == "rmt-train",
                          "dropout": float(config.train_dropout)}
                add(method, "train", batch, config.train_segments, size, "rmt", params,
                    total(rmt_flops(shape, tokens, size, config.num_mem, batch, head="cls", mode="train")))
    return points


def speed_sweep(config: SpeedSweepConfig, path, *, progress: bool = True, remeasure: bool = False,
                runner=None) -> pd.DataFrame:
    """Run (or resume) the speed points into the parquet file `path`; returns their rows."""
    if {"rmt-compiled", *TRAIN_METHODS} & set(config.methods) and resolve_device(config.device).type == "cpu":
        kernels.prepare()  # here, so a point's peak memory and warm-up never include compiling the kernel
    return run_sweep(speed_points(config), path, config.budget, progress=progress, remeasure=remeasure,
                     runner=runner)


SPEED_COLUMNS = KEY_COLUMNS + ["cpu", "torch_threads", "load_avg_1m", "status", "tokens_per_s", "gflops_per_s",
                               "matmul_peak_gflops", "fraction_of_peak", "paired_fraction_median", "segment_s_median",
                               "segment_s_p10", "segment_s_p90", "peak_mib"]


def speed_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (backbone, dtype, batch, segment_size, num_mem): the RMT forward's speed, its ratios
    to the bare backbone and to both baselines, and the compiled RMT's; the CPU and the vector width its
    kernels ran at (`cpu_capability`) with every row.

    fraction_of_peak: the whole run's GFLOP/s / the peak measured before it; paired_fraction: median
    over segments of (segment GFLOP/s / a matmul's GFLOP/s just before it).
    rmt_segment_over_backbone: median over segments of the RMT's time for the segment / the bare
    backbone's forward over the same positions run just before it, in the same process.
    rmt_over_plain: the RMT's tokens/s / the plain memory-cell loop's (no logits: the fair baseline),
    each in its own process; rmt_over_plain_paired: median over segments of the plain loop's time for a
    segment run just before the RMT's / the RMT's. rmt_over_naive: the RMT's tokens/s / the naive loop's
    (vocabulary logits on every token, every output kept: the weak baseline).
    """
    require_columns(frame, SPEED_COLUMNS, "speed table input")
    ok = frame[(frame["status"] == "ok") & (frame["mode"] == "forward")]
    rows = []
    keys = ["backbone", "dtype", "batch", "segment_size", "num_mem"]
    for (backbone, dtype, batch, size, num_mem), group in ok.groupby(keys, sort=True):
        by = {r["method"]: r for r in group.to_dict("records")}
        rmt, bare, naive, plain = by.get("rmt"), by.get("backbone"), by.get("rmt-naive"), by.get("rmt-plain")
        compiled = by.get("rmt-compiled")
        if rmt is None:
            continue
        row = {
            "backbone": backbone, "dtype": dtype, "batch": batch, "segment_size": size, "num_mem": num_mem,
            "cpu": rmt["cpu"], "cpu_capability": rmt.get("cpu_capability", ""), "load_avg_1m": rmt["load_avg_1m"],
            "tokens_per_sample": rmt["tokens"],
            "tokens_per_s": rmt["tokens_per_s"], "gflops_per_s": rmt["gflops_per_s"],
            "matmul_peak_gflops": rmt["matmul_peak_gflops"], "fraction_of_peak": rmt["fraction_of_peak"],
            "paired_fraction": rmt["paired_fraction_median"],
            "segment_ms": 1e3 * rmt["segment_s_median"], "segment_ms_p10": 1e3 * rmt["segment_s_p10"],
            "segment_ms_p90": 1e3 * rmt["segment_s_p90"], "peak_mib": _own_peak(rmt),
            "paired_backbone_ms": 1e3 * rmt["paired_backbone_s_median"],
            "rmt_segment_over_backbone": rmt["paired_ratio_median"],
        }
        if bare is not None:
            row.update(backbone_segment_ms=1e3 * bare["segment_s_median"],
                       backbone_fraction_of_peak=bare["fraction_of_peak"])
        if naive is not None:
            row.update(naive_tokens_per_s=naive["tokens_per_s"], naive_peak_mib=naive["peak_mib"],
                       rmt_over_naive=rmt["tokens_per_s"] / naive["tokens_per_s"])
        row["rmt_over_plain_paired"] = rmt.get("paired_plain_speedup_median", float("nan"))
        if plain is not None:
            row.update(plain_tokens_per_s=plain["tokens_per_s"], plain_paired_fraction=plain["paired_fraction_median"],
                       plain_peak_mib=_own_peak(plain), rmt_over_plain=rmt["tokens_per_s"] / plain["tokens_per_s"])
        if compiled is not None:
            row.update(compiled_tokens_per_s=compiled["tokens_per_s"],
                       compiled_fraction_of_peak=compiled["fraction_of_peak"],
                       compiled_paired_fraction=compiled["paired_fraction_median"],
                       compiled_segment_over_backbone=compiled["paired_ratio_median"],
                       compiled_over_eager=compiled["tokens_per_s"] / rmt["tokens_per_s"],
                       compiled_over_plain_paired=compiled.get("paired_plain_speedup_median", float("nan")),
                       compiled_peak_mib=_own_peak(compiled))
            if plain is not None:
                row["compiled_over_plain"] = compiled["tokens_per_s"] / plain["tokens_per_s"]
        rows.append(row)
    return pd.DataFrame(rows)


def _own_peak(row: dict) -> float:
    """Peak memory of a streamed RMT run less the paired references it held (a matmul's operands, an eager
    backbone copy): resident through the run, so counted in its peak, but not the RMT's."""
    held = row.get("reference_mib", 0.0)
    return row["peak_mib"] - (held if held == held else 0.0)


def train_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (backbone, dtype, dropout, segment_size, batch, tokens) of the training step: without and
    with gradient checkpointing across segments, and the trade (time and peak memory, checkpointed / plain);
    the CPU, its vector width and the matmul peak of the same process with every row. `dropout`: the
    backbone's dropout probability the steps ran with (0: off; rows written before it was recorded)."""
    require_columns(frame, SPEED_COLUMNS, "speed table input")
    ok = _with_dropout(frame[(frame["status"] == "ok") & (frame["mode"] == "train")])
    rows = []
    keys = ["backbone", "dtype", "dropout", "segment_size", "batch", "tokens"]
    for (backbone, dtype, dropout, size, batch, tokens), group in ok.groupby(keys, sort=True):
        by = {r["method"]: r for r in group.to_dict("records")}
        plain, ckpt, compiled = by.get("rmt-train"), by.get("rmt-train-ckpt"), by.get("rmt-train-compiled")
        row = {"backbone": backbone, "dtype": dtype, "dropout": dropout, "segment_size": size, "batch": batch,
               "tokens_per_sample": tokens}
        for prefix, r in (("", plain), ("ckpt_", ckpt), ("compiled_", compiled)):
            if r is not None:
                row.update({f"{prefix}tokens_per_s": r["tokens_per_s"], f"{prefix}gflops_per_s": r["gflops_per_s"],
                            f"{prefix}matmul_peak_gflops": r["matmul_peak_gflops"],
                            f"{prefix}fraction_of_peak": r["fraction_of_peak"], f"{prefix}peak_mib": r["peak_mib"],
                            f"{prefix}paired_fraction": r.get("paired_fraction_median", float("nan")),
                            "cpu": r["cpu"], "cpu_capability": r.get("cpu_capability", ""),
                            f"{prefix}load_avg_1m": r["load_avg_1m"]})
        if plain is not None:
            row.update(over_plain_paired=plain.get("paired_plain_speedup_median", float("nan")))
        if plain is not None and ckpt is not None:
            row.update(ckpt_time_ratio=plain["tokens_per_s"] / ckpt["tokens_per_s"],
                       ckpt_memory_ratio=ckpt["peak_mib"] / plain["peak_mib"])
        if plain is not None and compiled is not None:
            row.update(compiled_over_eager=compiled["tokens_per_s"] / plain["tokens_per_s"],
                       compiled_warmup_s=compiled["warmup_s"])
        rows.append(row)
    return pd.DataFrame(rows)


def _with_dropout(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with its dropout column, 0 (off) where a row has none: rows written before it was recorded."""
    dropout = frame["dropout"].fillna(0.0) if "dropout" in frame else pd.Series(0.0, index=frame.index)
    return frame.assign(dropout=dropout)


def _dropout_note(dropout: float) -> str:
    return (f"; dropout {dropout:g} on the backbone's hidden states and attention weights, in train mode, "
            "the plain-loop step's too") if dropout else ""


def _machines(frame: pd.DataFrame) -> str:
    """Which CPU (and vector width) measured the rows, and how busy it was: every figure depends on them."""
    ok = frame[frame["status"] == "ok"]
    if ok.empty:
        return ""
    machines = sorted({f"{cpu}, {width}, {threads} threads"
                       for cpu, width, threads in zip(ok["cpu"], _vector_widths(ok), ok["torch_threads"])})
    load = ok["load_avg_1m"]
    return (f"\nmeasured on {'; '.join(machines)}; 1-minute load average {load.min():.2f}-{load.max():.2f} "
            "when the measured work began")


def _columns(title: str, heads: list[str], lines: list, rows: list[dict], markdown: bool = False) -> str:
    """A table with one column per row of `rows`: (label, format of one row) per line; missing or NaN: "-".
    `markdown`: a Markdown table, lines with nothing measured left out."""

    def cell(fmt, row) -> str:
        try:
            text = fmt(row)
        except KeyError:
            return "-"
        return "-" if "nan" in text else text

    if markdown:
        cells = [(label, [cell(fmt, r) for r in rows]) for label, fmt in lines]
        out = [title, "", f"| | {' | '.join(heads)} |", "| --- |" + " --- |" * len(heads)]
        out += [f"| {label} | {' | '.join(c)} |" for label, c in cells if any(x != "-" for x in c)]
        return "\n".join(out)
    width = max(len(label) for label, _ in lines)
    col = max(30, *(len(h) + 2 for h in heads))
    out = [title, " " * width + "".join(f"{h:>{col}}" for h in heads)]
    out += [f"{label:<{width}}" + "".join(f"{cell(fmt, r):>{col}}" for r in rows) for label, fmt in lines]
    return "\n".join(out)


def speed_report(frame: pd.DataFrame) -> str:
    """What `rmt-lab bench speed` prints of a speed sweep's table: a column per measured configuration."""
    table, train = speed_table(frame), train_table(frame)
    if table.empty and train.empty:
        return "\nno RMT speed point measured ok"
    parts = [_machines(frame)]
    if not table.empty:
        rows = table.to_dict("records")
        parts.append(_columns(
            f"\nRMT forward, {rows[0]['tokens_per_sample']:,} tokens per sample (FLOPs the task needs, analytic; "
            "matmul peak measured in the same process, before the run and between segments):",
            [f"{r['backbone']}, {r['dtype']}, batch {r['batch']}" for r in rows], [
                ("content tokens per segment + memory", lambda r: f"{r['segment_size']} + {r['num_mem']}"),
                ("tokens/s", lambda r: f"{r['tokens_per_s']:,.0f}"),
                ("achieved GFLOP/s", lambda r: f"{r['gflops_per_s']:,.1f}"),
                ("matmul peak GFLOP/s (before)", lambda r: f"{r['matmul_peak_gflops']:,.1f}"),
                ("fraction of peak (run / peak before)", lambda r: f"{r['fraction_of_peak']:.1%}"),
                ("fraction of peak (paired per segment)", lambda r: f"{r['paired_fraction']:.1%}"),
                ("ms per segment, median (p10-p90)",
                 lambda r: f"{r['segment_ms']:,.1f} ({r['segment_ms_p10']:,.1f}-{r['segment_ms_p90']:,.1f})"),
                ("bare backbone ms per pass, paired", lambda r: f"{r['paired_backbone_ms']:,.1f}"),
                ("RMT segment / bare backbone, paired", lambda r: f"{r['rmt_segment_over_backbone']:.3f}x"),
                ("bare backbone alone: ms per pass", lambda r: f"{r['backbone_segment_ms']:,.1f}"),
                ("bare backbone alone: fraction of peak", lambda r: f"{r['backbone_fraction_of_peak']:.1%}"),
                ("plain memory-cell loop (no logits) tokens/s", lambda r: f"{r['plain_tokens_per_s']:,.0f}"),
                ("plain loop: fraction of peak (paired)", lambda r: f"{r['plain_paired_fraction']:.1%}"),
                ("RMT / plain loop tokens/s", lambda r: f"{r['rmt_over_plain']:.3f}x"),
                ("RMT / plain loop, paired per segment", lambda r: f"{r['rmt_over_plain_paired']:.3f}x"),
                ("naive loop (logits, outputs kept) tokens/s", lambda r: f"{r['naive_tokens_per_s']:,.0f}"),
                ("RMT / naive loop tokens/s", lambda r: f"{r['rmt_over_naive']:.3f}x"),
                ("peak MiB, RMT (paired references excluded)", lambda r: f"{r['peak_mib']:,.0f}"),
                ("peak MiB, naive loop", lambda r: f"{r['naive_peak_mib']:,.0f}"),
                ("compiled: tokens/s", lambda r: f"{r['compiled_tokens_per_s']:,.0f}"),
                ("compiled / eager tokens/s", lambda r: f"{r['compiled_over_eager']:.3f}x"),
                ("compiled / plain loop tokens/s", lambda r: f"{r['compiled_over_plain']:.3f}x"),
                ("compiled / eager plain loop, paired", lambda r: f"{r['compiled_over_plain_paired']:.3f}x"),
                ("compiled: fraction of peak (run)", lambda r: f"{r['compiled_fraction_of_peak']:.1%}"),
                ("compiled: fraction of peak (paired)", lambda r: f"{r['compiled_paired_fraction']:.1%}"),
                ("compiled segment / eager bare backbone", lambda r: f"{r['compiled_segment_over_backbone']:.3f}x"),
                ("compiled: peak MiB", lambda r: f"{r['compiled_peak_mib']:,.0f}"),
            ], rows))
    if not train.empty:
        rows = train.to_dict("records")
        parts.append(_columns(
            "\nRMT training step (forward + backward through every segment, full BPTT; FLOPs: 3x the forward):",
            [f"{r['backbone']}, {r['dtype']}, {r['batch']} x {r['tokens_per_sample']:,} tok"
             + (f", dropout {r['dropout']:g}" if r["dropout"] else "") for r in rows], [
                ("content tokens per segment", lambda r: f"{r['segment_size']}"),
                ("tokens/s", lambda r: f"{r['tokens_per_s']:,.0f}"),
                ("achieved GFLOP/s", lambda r: f"{r['gflops_per_s']:,.1f}"),
                ("matmul peak GFLOP/s (before)", lambda r: f"{r['matmul_peak_gflops']:,.1f}"),
                ("fraction of matmul peak", lambda r: f"{r['fraction_of_peak']:.1%}"),
                ("fraction of matmul peak (paired per round)", lambda r: f"{r['paired_fraction']:.1%}"),
                ("RMT step / plain-loop step (published-style training, HF's sdpa attention), paired",
                 lambda r: f"{r['over_plain_paired']:.3f}x"),
                ("peak MiB", lambda r: f"{r['peak_mib']:,.0f}"),
                ("checkpointed segments: tokens/s", lambda r: f"{r['ckpt_tokens_per_s']:,.0f}"),
                ("checkpointed segments: fraction of matmul peak", lambda r: f"{r['ckpt_fraction_of_peak']:.1%}"),
                ("checkpointed segments: fraction (paired per round)", lambda r: f"{r['ckpt_paired_fraction']:.1%}"),
                ("checkpointed segments: peak MiB", lambda r: f"{r['ckpt_peak_mib']:,.0f}"),
                ("checkpointing: time x", lambda r: f"{r['ckpt_time_ratio']:.3f}x"),
                ("checkpointing: peak memory x", lambda r: f"{r['ckpt_memory_ratio']:.3f}x"),
                ("compiled step: tokens/s", lambda r: f"{r['compiled_tokens_per_s']:,.0f}"),
                ("compiled step: fraction of matmul peak", lambda r: f"{r['compiled_fraction_of_peak']:.1%}"),
                ("compiled step: peak MiB", lambda r: f"{r['compiled_peak_mib']:,.0f}"),
                ("compiled / eager step", lambda r: f"{r['compiled_over_eager']:.3f}x"),
                ("compiled step: warm-up s (compiling)", lambda r: f"{r['compiled_warmup_s']:,.0f}"),
            ], rows))
    return "\n".join(parts)


def speed_markdown(frame: pd.DataFrame) -> str:
    """The README's speed tables, made from a speed sweep's rows: a column per forward batch (one table per
    backbone and segment layout) and per training shape; the CPU, its vector width and load named with each."""
    table, train = speed_table(frame), train_table(frame)
    ok = frame[frame["status"] == "ok"]
    parts = []
    forward = table.groupby(["backbone", "segment_size", "num_mem"], sort=False) if not table.empty else []
    for (backbone, size, num_mem), group in forward:
        rows = group.to_dict("records")
        measured = ok[(ok["mode"] == "forward") & (ok["backbone"] == backbone) & (ok["segment_size"] == size)
                      & (ok["num_mem"] == num_mem)]
        parts.append(_columns(
            f"{backbone}, {size} content tokens + {num_mem} memory per segment, {rows[0]['tokens_per_sample']:,} "
            f"tokens per sample; {_machine_note(measured)}:",
            [f"batch {r['batch']}" for r in rows], [
                ("RMT tokens/s (eager)", lambda r: f"{r['tokens_per_s']:,.0f}"),
                ("fraction of the matmul peak, paired per segment", lambda r: f"{r['paired_fraction']:.1%}"),
                ("plain memory-cell loop, no logits (baseline): tokens/s",
                 lambda r: f"{r['plain_tokens_per_s']:,.0f}"),
                ("RMT / plain loop: tokens/s (own processes); paired per segment",
                 lambda r: f"{r['rmt_over_plain']:.3f}x; {r['rmt_over_plain_paired']:.3f}x"),
                ("naive loop, logits on every token, outputs kept (weak baseline): tokens/s",
                 lambda r: f"{r['naive_tokens_per_s']:,.0f}"),
                ("RMT / naive loop (tokens/s)", lambda r: f"{r['rmt_over_naive']:.2f}x"),
                ("RMT segment / bare HF backbone over the same positions, paired",
                 lambda r: f"{r['rmt_segment_over_backbone']:.3f}x"),
                ("compiled backbone (`rmt-compiled`): tokens/s (x eager), fraction of peak (paired)",
                 lambda r: f"{r['compiled_tokens_per_s']:,.0f} ({r['compiled_over_eager']:.2f}x), "
                           f"{r['compiled_paired_fraction']:.1%}"),
                ("compiled / plain loop (eager): tokens/s; paired per segment",
                 lambda r: f"{r['compiled_over_plain']:.3f}x; {r['compiled_over_plain_paired']:.3f}x"),
                ("peak RSS MiB: RMT / plain loop / naive loop",
                 lambda r: f"{r['peak_mib']:,.0f} / {r['plain_peak_mib']:,.0f} / {r['naive_peak_mib']:,.0f}"),
            ], rows, markdown=True))
    trained = _with_dropout(ok[ok["mode"] == "train"])
    for (backbone, dropout), group in train.groupby(["backbone", "dropout"], sort=False) if not train.empty else []:
        rows = group.to_dict("records")
        measured = trained[(trained["backbone"] == backbone) & (trained["dropout"] == dropout)]
        parts.append(_columns(
            f"{backbone} training step (full BPTT through {rows[0]['tokens_per_sample'] // rows[0]['segment_size']} "
            f"segments, every weight trained{_dropout_note(dropout)}; FLOPs: 3x the forward's; fraction of the "
            f"matmul peak measured in the same process); {_machine_note(measured)}:",
            [f"{r['segment_size']} tok/seg, batch {r['batch']}" for r in rows], [
                ("tokens/s", lambda r: f"{r['tokens_per_s']:,.0f}"),
                ("fraction of the matmul peak", lambda r: f"{r['fraction_of_peak']:.1%}"),
                ("fraction of the matmul peak, paired per round", lambda r: f"{r['paired_fraction']:.1%}"),
                ("RMT step / plain-loop step (published-style training, HF's sdpa attention), paired",
                 lambda r: f"{r['over_plain_paired']:.3f}x"),
                ("peak RSS MiB", lambda r: f"{r['peak_mib']:,.0f}"),
                ("checkpointed segments: tokens/s, fraction, peak RSS MiB",
                 lambda r: f"{r['ckpt_tokens_per_s']:,.0f}, {r['ckpt_fraction_of_peak']:.1%}, "
                           f"{r['ckpt_peak_mib']:,.0f}"),
                ("checkpointed segments: fraction of the peak, paired per round",
                 lambda r: f"{r['ckpt_paired_fraction']:.1%}"),
                ("compiled step: tokens/s (x eager), fraction, peak RSS MiB",
                 lambda r: f"{r['compiled_tokens_per_s']:,.0f} ({r['compiled_over_eager']:.2f}x), "
                           f"{r['compiled_fraction_of_peak']:.1%}, {r['compiled_peak_mib']:,.0f}"),
            ], rows, markdown=True))
    return "\n\n".join(parts)


def _vector_widths(rows: pd.DataFrame) -> list[str]:
    """Per row, the vector width torch's kernels ran at, and the CPU's own where it was lowered on purpose (rows
    older than either column say so)."""
    def column(name: str) -> pd.Series:
        return rows[name].fillna("") if name in rows else pd.Series("", index=rows.index)

    def width(cap: str, isa: str) -> str:
        if not cap:
            return "vector width not recorded"
        return f"{cap} kernels on an {isa} CPU" if isa and isa != cap else cap

    return [width(cap, isa) for cap, isa in zip(column("cpu_capability"), column("cpu_isa"))]


def _machine_note(measured: pd.DataFrame) -> str:
    """The CPU and vector width that measured the rows of a table, the matmul peaks and loads they saw."""
    cpus = sorted({f"{cpu} ({width})" for cpu, width in zip(measured["cpu"], _vector_widths(measured))})
    peaks, loads = measured["matmul_peak_gflops"].dropna(), measured["load_avg_1m"].dropna()
    note = f"{', '.join(cpus)}, fp32"
    note += f", matmul peak {peaks.min():,.0f}-{peaks.max():,.0f} GFLOP/s" if len(peaks) else ""
    return note + (f", 1-minute load average {loads.min():.1f}-{loads.max():.1f}" if len(loads) else "")
