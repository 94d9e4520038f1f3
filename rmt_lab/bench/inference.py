"""Streaming inference of an RMT in a fresh process: tokens/s and peak memory of one input length.

The quick measurement behind `rmt-lab demo` and `rmt-lab info --bench`: one point of the memory
sweep's machinery (`runner.run_point` with the "rmt" workload), returned as a dict.
"""

from __future__ import annotations

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
