"""Streaming inference of an RMT in a fresh process: tokens/s and peak memory of one input length.

The quick measurement behind `rmt-lab demo` and `rmt-lab info --bench`: one point of the memory
sweep's machinery (`runner.run_point` with the "rmt" workload), returned as a dict.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from rmt_lab.bench.runner import run_point
from rmt_lab.process import Budget


def measure_in_subprocess(n_tokens: int, backbone: str = "minilm", num_mem_tokens: int = 10,
                          segment_size: int = 499, batch: int = 1, budget: Budget = Budget(), *,
                          device: str = "auto", dtype: str = "float32", compile: str = "") -> dict:
    """Stream `n_tokens` random tokens per sample through a fresh RMT in its own process.

    `device` ("auto": cuda if available), `dtype` and `compile` (a torch.compile mode, "" = eager)
    are those of the "rmt" workload.

    Returns tokens, n_segments, seconds, tokens_per_s, peak_mib (peak RSS, or peak CUDA memory
    allocated on a GPU), device, threads, memory_shape (batch, memory tokens, d_model) and the
    per-segment times. Raises RuntimeError if the point failed or ran out of `budget`.
    """
    params = {"backbone": backbone, "tokens": n_tokens, "batch": batch, "num_mem": num_mem_tokens,
              "segment_size": segment_size, "device": device, "dtype": dtype, "compile": compile}
    r = run_point("rmt", params, budget, time_limit_s=budget.time_limit_s(n_tokens * batch))
    if r["status"] != "ok":
        raise RuntimeError(f"benchmark point {n_tokens} tokens: {r['status']}: {r['reason']}")
    r["tokens"] = n_tokens
    r["tokens_per_s"] = n_tokens * batch / r["seconds"]
    r["peak_mib"] = r.get("peak_cuda_mib", r["peak_rss_mib"])
    return r


def stream_summary(r: dict) -> str:
    """What `rmt-lab demo` prints of a `measure_in_subprocess` result."""
    return (f"{r['n_segments']:,} segments in {r['seconds']:.1f} s: {r['tokens_per_s']:,.0f} tokens/s on {r['device']} "
            f"({r['threads']} threads); memory shape {tuple(r['memory_shape'])} (batch, memory tokens, d_model); "
            f"peak memory {r['peak_mib']:.0f} MiB")


def stream_table(results: Iterable[dict]) -> Iterator[str]:
    """What `rmt-lab info --bench` prints of minilm `measure_in_subprocess` results at several lengths, each
    peak against the first length's. Lines, not one text: a caller printing each line as it comes shows each
    length when it is measured (a million tokens take minutes)."""
    yield "minilm RMT, 10 memory tokens, 499 content tokens per segment (512 positions), batch 1, streaming:"
    yield f"{'tokens':>10} {'segments':>9} {'seconds':>9} {'tokens/s':>9} {'peak MiB':>9}"
    first = None
    for r in results:
        first = first or r["peak_mib"]
        yield (f"{r['tokens']:>10,} {r['n_segments']:>9,} {r['seconds']:>9.1f} {r['tokens_per_s']:>9.0f} "
               f"{r['peak_mib']:>9.1f}  ({r['peak_mib'] / first:.3f}x the first length's peak)")
