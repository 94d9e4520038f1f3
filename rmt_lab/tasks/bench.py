"""Streaming speed and memory of long samples: tokens/s and peak RSS, one fresh process per length.

Peak RSS is the process's ru_maxrss, so each length runs in its own subprocess (tracemalloc would
not see numpy/torch buffers). Setup (tokenizer, noise bank) is timed apart from generation;
streaming is warmed up, then repeated, and the median and spread are reported.

    rmt-lab data bench            # 2,048,000 and 10,000,000 tokens
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

from rmt_lab.process import peak_rss_mib, run_in_process
from rmt_lab.tasks.config import TaskConfig
from rmt_lab.tasks.sample import TaskGenerator

DEFAULT_TOKENS = (2_048_000, 10_000_000)  # the report's ~2M-token evaluation, and 5x beyond


def measure(config: TaskConfig, repeats: int = 3, split: str = "test") -> dict:
    """Stream samples 0..repeats of `config` in this process; time each and read the peak RSS."""
    t0 = time.perf_counter()
    generator = TaskGenerator(config)
    setup_s = time.perf_counter() - t0
    for _ in generator.segments(split, repeats):  # warm-up, also counted in rss_before
        pass
    rss_before = peak_rss_mib()
    seconds = []
    for index in range(repeats):
        t0 = time.perf_counter()
        n = sum(len(segment) for segment in generator.segments(split, index))
        seconds.append(time.perf_counter() - t0)
        assert n == config.n_tokens
    median = statistics.median(seconds)
    return {
        "n_tokens": config.n_tokens,
        "task": config.task,
        "placement": config.placement,
        "segment_size": config.segment_size,
        "setup_s": round(setup_s, 3),
        "stream_s_median": round(median, 4),
        "stream_s_min": round(min(seconds), 4),
        "stream_s_max": round(max(seconds), 4),
        "tokens_per_s": round(config.n_tokens / median),
        "peak_rss_mb_before_streaming": round(rss_before, 1),
        "peak_rss_mb": round(peak_rss_mib(), 1),
    }


def measure_length(n_tokens: int, task: str, placement: str, segment_size: int, repeats: int) -> dict:
    """`measure` of one length, with JSON arguments: what `run` calls in each fresh process."""
    config = TaskConfig(task=task, placement=placement, segment_size=segment_size, length=n_tokens, unit="tokens")
    return measure(config, repeats)


def run(
    tokens: Sequence[int] = DEFAULT_TOKENS,
    task: str = "reasoning",
    placement: str = "segment",
    segment_size: int = 499,
    repeats: int = 3,
) -> list[dict]:
    """Measure each length in a fresh Python process (rmt_lab.process); returns one result dict per length."""
    results = []
    for n in tokens:
        r = run_in_process("rmt_lab.tasks.bench:measure_length", {
            "n_tokens": n, "task": task, "placement": placement, "segment_size": segment_size, "repeats": repeats})
        if r["status"] != "ok":
            raise RuntimeError(f"streaming {n:,} tokens failed: {r['reason']}")
        results.append(r["value"])
    return results


def format_results(results: list[dict]) -> str:
    lines = [
        f"{'tokens':>12} {'task':>10} {'placement':>9} {'stream s (median, min-max)':>28} {'tokens/s':>12} "
        f"{'peak RSS MB':>12} {'(before)':>9}"
    ]
    for r in results:
        spread = f"{r['stream_s_median']:.3f} ({r['stream_s_min']:.3f}-{r['stream_s_max']:.3f})"
        lines.append(
            f"{r['n_tokens']:>12,} {r['task']:>10} {r['placement']:>9} {spread:>28} {r['tokens_per_s']:>12,} "
            f"{r['peak_rss_mb']:>12.1f} {r['peak_rss_mb_before_streaming']:>9.1f}"
        )
    setups = ", ".join(f"{r['setup_s']:.2f} s" for r in results)
    lines.append(f"setup (tokenizer + noise bank, once per process): {setups}")
    return "\n".join(lines)

