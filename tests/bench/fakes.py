"""A stand-in for `runner.run_point` that starts no process: sweeps are tested in milliseconds."""

from __future__ import annotations


class FakeRunner:
    """Records the points it is asked to run; answers "ok", or a scripted status for given lengths."""

    def __init__(self, fail: dict[int, str] | None = None):
        self.fail = fail or {}  # tokens -> status to answer (e.g. {4000: "oom"})
        self.calls: list[tuple[str, dict]] = []

    def __call__(self, workload: str, params: dict, budget, *, time_limit_s: float) -> dict:
        self.calls.append((workload, params))
        tokens = params.get("tokens", params.get("positions", 0))
        status = self.fail.get(tokens, "ok")
        if status != "ok":
            return {"status": status, "reason": f"scripted {status}", "peak_rss_mib": 900.0, "wall_s": 1.0}
        return {
            "status": "ok", "reason": "", "seconds": 2.0, "peak_rss_mib": 500.0 + tokens / 1000,
            "baseline_rss_mib": 450.0, "wall_s": 3.0, "device": "cpu", "threads": 2, "attn_impl": "sdpa",
            "segment_s_median": 0.1 if workload == "rmt" else 0.095, "segment_s_p10": 0.09, "segment_s_p90": 0.12,
            "matmul_peak_gflops": 100.0, "matmul_peak_gflops_min": 90.0, "matmul_peak_gflops_max": 110.0,
            "memory_shape": [1, 10, 64], "load_avg_1m": 0.5, "cpu_capability": "AVX512",
            **({"paired_backbone_s_median": 0.095, "paired_backbone_s_p10": 0.09, "paired_backbone_s_p90": 0.1,
                "paired_ratio_median": 1.04} if params.get("paired_backbone") else {}),
            **({"paired_peak_gflops_median": 110.0, "paired_fraction_median": 0.75} if params.get("paired_peak") else {}),
            **({"paired_plain_speedup_median": 1.12} if params.get("paired_plain") else {}),
            **({"seconds": 2.2} if params.get("plain") else {}),  # the plain loop: a little slower
            # a training step with checkpointing: slower, less memory
            **({"seconds": 2.5, "peak_rss_mib": 300.0} if params.get("checkpoint_segments") else {}),
        }
