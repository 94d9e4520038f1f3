"""Benchmarks of the recorder: its overhead against recording off, and a million-token trace's memory.

Overhead is a ratio measured in one process: untraced and traced runs of the same segments
alternate (the order flips every repeat, so drift in machine load falls on both). Reported: the median
of the per-pair ratios with its spread, and the ratio of the fastest runs ("best of n"), for wall time
and process CPU time. On a shared machine the best-of-n CPU-time ratio with one thread is the steadiest
(a preempted single thread stops its CPU clock; two threads spin while waiting for each other).

The million-token trace runs in a fresh process (peak RSS is a process-wide high-water mark):
a detect_memorize sample streamed from the task generator, summaries for every segment, full maps
for 4 segments (the fact's segment among them) spilled to a trace folder.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import pyarrow.parquet as pq
import torch

from rmt_lab.process import peak_rss_mib, run_in_process
from rmt_lab.model import RecurrentWrapper, RMTConfig
from rmt_lab.model.backbones import attention_implementation
from rmt_lab.tasks import NUM_CLASSES
from rmt_lab.trace.config import TraceConfig
from rmt_lab.trace.recorder import Recorder
from rmt_lab.trace.store import SUMMARIES_FILE



@contextmanager
def _torch_threads(threads: int | None) -> Iterator[int]:
    """Run on `threads` torch threads (None: as set), restored afterwards; yields the count in use."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield threads or previous
    finally:
        torch.set_num_threads(previous)


def _bench_model(backbone: str, num_mem_tokens: int, segment_size: int, seed: int) -> RecurrentWrapper:
    """A fresh untrained RMT in eval mode, its weights drawn from `seed`."""
    torch.manual_seed(seed)
    return RecurrentWrapper.from_backbone(backbone, RMTConfig(num_mem_tokens=num_mem_tokens,
                                                              segment_size=segment_size)).eval()


def overhead_ratio(backbone: str = "minilm", n_segments: int = 10, repeats: int = 7, segment_size: int = 499,
                   num_mem_tokens: int = 10, batch: int = 1, config: TraceConfig | None = None,
                   seed: int = 0, threads: int | None = None) -> dict:
    """Time of `n_segments` segments with summaries for every segment, over the same run untraced."""
    with _torch_threads(threads):
        return _overhead_ratio(backbone, n_segments, repeats, segment_size, num_mem_tokens, batch, config, seed)


def _overhead_ratio(backbone, n_segments, repeats, segment_size, num_mem_tokens, batch, config, seed) -> dict:
    model = _bench_model(backbone, num_mem_tokens, segment_size, seed)
    g = torch.Generator().manual_seed(seed)
    segments = [torch.randint(1000, 29000, (batch, segment_size), generator=g) for _ in range(n_segments)]
    config = config or TraceConfig()

    def plain():
        model.stream(iter(segments))

    def traced():
        with Recorder(model, config):
            model.stream(iter(segments))

    times = {"plain": [], "traced": [], "plain_cpu": [], "traced_cpu": []}
    with torch.inference_mode():
        plain(), traced()  # warm-up: allocator, kernels, the weights digest
        for r in range(repeats):
            for name, run in (("plain", plain), ("traced", traced))[:: 1 if r % 2 == 0 else -1]:
                wall, cpu = time.perf_counter(), time.process_time()
                run()
                times[name].append(time.perf_counter() - wall)
                times[name + "_cpu"].append(time.process_time() - cpu)
    ratios = [t / p for p, t in zip(times["plain"], times["traced"])]
    cpu_ratios = [t / p for p, t in zip(times["plain_cpu"], times["traced_cpu"])]
    return {
        "backbone": backbone, "segment_size": segment_size, "num_mem_tokens": num_mem_tokens, "batch": batch,
        "n_segments": n_segments, "repeats": repeats, "threads": torch.get_num_threads(),
        "plain_ms_per_segment": statistics.median(times["plain"]) / n_segments * 1e3,
        "traced_ms_per_segment": statistics.median(times["traced"]) / n_segments * 1e3,
        "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
        "cpu_ratio": statistics.median(cpu_ratios), "cpu_ratio_min": min(cpu_ratios), "cpu_ratio_max": max(cpu_ratios),
        "best_ratio": min(times["traced"]) / min(times["plain"]),
        "best_cpu_ratio": min(times["traced_cpu"]) / min(times["plain_cpu"]),
        "load_average": os.getloadavg()[0],
    }


def segment_overhead(backbone: str = "minilm", n_pairs: int = 30, segment_size: int = 499, num_mem_tokens: int = 10,
                     batch: int = 1, threads: int | None = 1, seed: int = 0) -> dict:
    """Per-segment cost of recording, paired segment by segment inside one recording: each segment runs
    once through the hooked cell with the recorded attention and once through `cell.forward` (no hooks)
    with the model's own attention restored (sdpa's numbers in inference), in alternating order. Drift
    in machine load then hits both halves of a pair alike; the median pair ratio is reported.
    Per-recording costs (entering, writing tables) are left out: they do not grow with the input."""
    plain, traced = [], []
    with _torch_threads(threads) as used:
        model = _bench_model(backbone, num_mem_tokens, segment_size, seed)
        seg = torch.randint(1000, 29000, (batch, segment_size), generator=torch.Generator().manual_seed(seed))
        mask = torch.ones_like(seg, dtype=torch.bool)
        hf = model.cell.model
        own = hf.config._attn_implementation  # sdpa's numbers in inference, whatever its name
        with torch.inference_mode(), Recorder(model, TraceConfig()):
            memory = model.init_memory(batch)
            for i in range(n_pairs + 2):
                for mode in ("traced", "plain")[:: 1 if i % 2 == 0 else -1]:
                    with nullcontext() if mode == "traced" else attention_implementation(hf, own):
                        start = time.process_time()
                        # check=False: as the segment loop calls the cell, the input known valid
                        out = (model.cell(seg, mask, memory, check=False) if mode == "traced"
                               else model.cell.forward(seg, mask, memory, check=False))
                        (traced if mode == "traced" else plain).append(time.process_time() - start)
                    if mode == "traced":
                        memory = out.memory
    plain, traced = plain[2:], traced[2:]  # warm-up pairs
    ratios = [t / p for p, t in zip(plain, traced)]
    return {
        "backbone": backbone, "threads": used, "n_pairs": n_pairs,
        "plain_ms": statistics.median(plain) * 1e3, "traced_ms": statistics.median(traced) * 1e3,
        "ratio": statistics.median(ratios), "ratio_q1": statistics.quantiles(ratios, n=4)[0],
        "ratio_q3": statistics.quantiles(ratios, n=4)[2], "extra_ms": statistics.median(
            [t - p for p, t in zip(plain, traced)]) * 1e3, "load_average": os.getloadavg()[0],
    }


class _TimedRecorder(Recorder):
    """A Recorder that adds up the time spent in its own work: the hooks, and its attention function
    minus the model's own fused attention call inside it."""

    own = 0.0

    def _timed(self, method, *args, **kwargs):
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            self.own += time.perf_counter() - start

    def _before(self, *args, **kwargs):
        return self._timed(super()._before, *args, **kwargs)

    def _after(self, *args, **kwargs):
        return self._timed(super()._after, *args, **kwargs)

    def attend(self, *args, **kwargs):
        return self._timed(super().attend, *args, **kwargs)

    def _fused(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return super()._fused(*args, **kwargs)
        finally:
            self.own -= time.perf_counter() - start

    def __exit__(self, *exc):
        return self._timed(super().__exit__, *exc)


def own_time_share(backbone: str = "minilm", n_segments: int = 20, repeats: int = 3, segment_size: int = 499,
                   num_mem_tokens: int = 10, batch: int = 1, threads: int | None = None, seed: int = 0) -> dict:
    """The recorder's own time over the model's time in the same traced runs: (own) / (total - own).

    Unlike an A/B ratio of two runs, both parts come from the same seconds, so machine load moves them
    together; it leaves out indirect costs (caches), which the A/B ratios include."""
    shares, owns = [], []
    with _torch_threads(threads) as used:
        model = _bench_model(backbone, num_mem_tokens, segment_size, seed)
        g = torch.Generator().manual_seed(seed)
        segments = [torch.randint(1000, 29000, (batch, segment_size), generator=g) for _ in range(n_segments)]
        with torch.inference_mode():
            for r in range(repeats + 1):
                rec = _TimedRecorder(model, TraceConfig())
                start = time.perf_counter()
                with rec:
                    model.stream(iter(segments))
                total = time.perf_counter() - start
                if r:  # the first run warms up
                    shares.append(rec.own / (total - rec.own))
                    owns.append(rec.own / n_segments)
    return {"backbone": backbone, "threads": used, "n_segments": n_segments,
            "own_ms_per_segment": statistics.median(owns) * 1e3, "share": statistics.median(shares),
            "share_min": min(shares), "share_max": max(shares), "load_average": os.getloadavg()[0]}


def million_trace(n_tokens: int = 1_000_000, backbone: str = "minilm", segment_size: int = 499,
                  num_mem_tokens: int = 10, budget_mib: float = 256.0, out: str | None = None) -> dict:
    """Trace one long detect_memorize sample: summaries everywhere, full maps of 4 segments; peak memory.
    Without `out` the trace goes to a temporary folder, removed once measured."""
    from rmt_lab.tasks import TaskConfig, TaskGenerator

    model = RecurrentWrapper.from_backbone(backbone, RMTConfig(num_mem_tokens=num_mem_tokens,
                                                               segment_size=segment_size, num_classes=NUM_CLASSES)).eval()
    sample = TaskGenerator(TaskConfig(task="detect_memorize", segment_size=segment_size, length=n_tokens,
                                      unit="tokens")).sample("test", 0)
    n_seg = sample.n_segments
    fact_segment = sample.facts[0].segments[0]
    chosen = {fact_segment}
    for s in (0, n_seg // 2, n_seg - 1, 1, n_seg // 4):
        if len(chosen) < 4:
            chosen.add(s)
    config = TraceConfig(segments=",".join(str(s) for s in sorted(chosen)), budget_mib=budget_mib)
    folder = Path(out) if out else Path(tempfile.mkdtemp(prefix="rmt-trace-"))
    rss_before = peak_rss_mib()
    start = time.perf_counter()
    with torch.inference_mode(), Recorder(model, config, out=folder, facts=[sample], n_segments=n_seg,
                                          overwrite=True) as rec:
        model.stream((seg.unsqueeze(0) for seg in sample.segments()), n_segments=n_seg)
    seconds = time.perf_counter() - start
    peak_rss = peak_rss_mib()  # before anything is read back
    trace = rec.trace
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    summary_rows = pq.ParquetFile(folder / SUMMARIES_FILE).metadata.num_rows
    if out is None:
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "backbone": backbone, "tokens": n_tokens, "n_segments": n_seg, "seconds": seconds,
        "tokens_per_s": n_tokens / seconds, "map_segments": trace.map_segments, "fact_segment": fact_segment,
        "summary_rows": summary_rows, "peak_rss_mib": peak_rss, "rss_before_mib": rss_before,
        "peak_held_mib": rec.peak_held_mib, "budget_mib": budget_mib, "trace_folder_mib": size / 2**20,
        "folder": str(folder) if out else None, "threads": torch.get_num_threads(),
    }


def million_in_subprocess(**kwargs) -> dict:
    """`million_trace` in a fresh process (rmt_lab.process), so its peak RSS is the trace's alone."""
    result = run_in_process("rmt_lab.trace.bench:million_trace", kwargs)
    if result["status"] != "ok":
        raise RuntimeError(f"million-token trace failed: {result['reason']}")
    return result["value"]


# ------------------------------------------------------------------------------------------- reports
def _table_lines(columns: list, rows: Iterable[dict]) -> Iterator[str]:
    """A header, then a line per row as `rows` yields it: (header, width, format of one row) per column;
    a negative width aligns left."""
    yield " ".join(f"{h:<{-w}}" if w < 0 else f"{h:>{w}}" for h, w, _ in columns)
    for r in rows:
        yield " ".join(f"{fmt(r)!s:<{-w}}" if w < 0 else f"{fmt(r)!s:>{w}}" for _, w, fmt in columns)


def overhead_report(tables: dict[str, Iterable[dict]], segments: int, repeats: int, pairs: int) -> Iterator[str]:
    """What `rmt-lab trace --bench` prints of `rmt_lab.recipes.trace_overhead`'s tables, run with `segments`,
    `repeats` and `pairs`. Lines, not one text: the tables measure a row when it is read, and a row takes
    seconds to minutes, so a caller printing each line shows each row when it is ready."""
    where = [("backbone", -11, lambda r: r["backbone"]), ("threads", 7, lambda r: r["threads"]),
             ("load", 5, lambda r: f"{r['load_average']:.1f}")]
    yield (f"recorder overhead: summaries for every segment vs recording off ({segments} segments per run, "
           f"{repeats} alternating pairs; batch 1, 10 memory tokens, segment 499). Ratios: median of the pairs "
           "(min-max), and best of n (fastest traced run / fastest plain run)")
    yield from _table_lines(where + [
        ("plain ms/seg", 12, lambda r: f"{r['plain_ms_per_segment']:.1f}"),
        ("traced ms/seg", 13, lambda r: f"{r['traced_ms_per_segment']:.1f}"),
        ("wall: median (min-max)", 23, lambda r: f"{r['ratio']:.3f} ({r['ratio_min']:.2f}-{r['ratio_max']:.2f})"),
        ("best", 6, lambda r: f"{r['best_ratio']:.3f}"),
        ("cpu: median (min-max)", 23,
         lambda r: f"{r['cpu_ratio']:.3f} ({r['cpu_ratio_min']:.2f}-{r['cpu_ratio_max']:.2f})"),
        ("best", 6, lambda r: f"{r['best_cpu_ratio']:.3f}"),
    ], tables["wall"])
    yield f"\nper segment, paired inside one recording (CPU time, {pairs} pairs, median and quartiles):"
    yield from _table_lines(where + [
        ("plain ms", 9, lambda r: f"{r['plain_ms']:.1f}"), ("traced ms", 9, lambda r: f"{r['traced_ms']:.1f}"),
        ("extra ms", 8, lambda r: f"{r['extra_ms']:.2f}"),
        ("ratio (q1-q3)", 20, lambda r: f"{r['ratio']:.3f} ({r['ratio_q1']:.3f}-{r['ratio_q3']:.3f})"),
    ], tables["segment"])
    yield (f"\nthe recorder's own time over the model's, in the same traced runs ({segments} segments, "
           "median (min-max) of 3 runs):")
    yield from _table_lines(where + [
        ("own ms/seg", 10, lambda r: f"{r['own_ms_per_segment']:.2f}"),
        ("share", 22, lambda r: f"{r['share']:.3f} ({r['share_min']:.3f}-{r['share_max']:.3f})"),
    ], tables["own_time"])


def million_report(r: dict) -> str:
    """What `rmt-lab trace --bench` prints of `million_trace`'s result."""
    return (f"{r['tokens']:,}-token detect_memorize trace on {r['backbone']!r} ({r['n_segments']:,} segments): "
            f"{r['seconds']:.0f} s, {r['tokens_per_s']:,.0f} tokens/s; summaries for every segment "
            f"({r['summary_rows']:,} rows), full maps for segments {r['map_segments']} (fact in {r['fact_segment']})\n"
            f"peak RSS {r['peak_rss_mib']:.0f} MiB (model and task loaded: {r['rss_before_mib']:.0f} MiB); "
            f"trace data held in RAM at most {r['peak_held_mib']:.1f} MiB of the {r['budget_mib']:.0f} MiB budget; "
            f"trace folder {r['trace_folder_mib']:.1f} MiB (temporary, removed)")
