"""One benchmark point in a fresh Python process, under a time limit and a memory limit.

A point runs `rmt_lab.bench.workloads.WORKLOADS[workload](**params)` through `rmt_lab.process`
(which measures its peak memory and enforces the `Budget`); running out of the budget is a row with
its status ("oom", "rss_limit", "timeout"), not an exception.
"""

from __future__ import annotations

from rmt_lab.process import Budget, run_in_process


def run_point(workload: str, params: dict, budget: Budget, *, time_limit_s: float) -> dict:
    """Run `WORKLOADS[workload](**params)` in a fresh process within `budget`; never raises for the point.

    Returns the workload's measurements plus: status (one of rmt_lab.process.STATUSES but "skipped"),
    reason (empty when ok), peak_rss_mib (the child's whole-life peak RSS), wall_s (the child's life,
    imports included).
    """
    r = run_in_process("rmt_lab.bench.workloads:run_workload", {"workload": workload, "params": params},
                       budget=budget, time_limit_s=time_limit_s)
    return {"status": r["status"], "reason": r["reason"], **(r["value"] or {}), "peak_rss_mib": r["peak_rss_mib"],
            "wall_s": r["wall_s"]}
