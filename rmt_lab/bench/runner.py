"""One benchmark point in a fresh Python process, under a time limit and a memory limit.

A fresh process per point gives every point its own peak memory: on CPU the process's peak
resident set (`ru_maxrss`, read by the parent from `wait4`, so it is known even for a process that
was stopped); tracemalloc cannot see tensor memory (REFERENCE.md). On CUDA the child also reports
`torch.cuda.max_memory_allocated`.

The limits keep a shared machine out of the kernel's OOM killer, and turn "ran out" into a result:
- time: the parent kills the child past `Budget.time_limit_s(...)`          -> status "timeout"
- memory: `rss_limit_mib` bounds the whole process's resident memory, twice over:
  hard: after its imports the child caps its own address space (RLIMIT_AS) so that it cannot map
  more than the room left under the limit; an oversized allocation fails at once inside torch
                                                                             -> status "oom"
  sampled: the parent reads the child's resident set every `POLL_S` and kills it past the limit
  (catches what the cap does not, e.g. on CUDA where there is no cap)       -> status "rss_limit"
Any other failure is status "error" with the last lines of the child's stderr. Never an exception.

The child side: `python -m rmt_lab.bench.runner WORKLOAD PARAMS.json RESULT.json RSS_LIMIT_MIB` runs
`rmt_lab.bench.workloads.WORKLOADS[WORKLOAD](**params)` and writes its dict of measurements.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rmt_lab.config import ConfigError

POLL_S = 0.02  # RSS sampling period; at ~5 GB/s of page faults a child overshoots the limit by ~100 MB at most
OVER_BUDGET = ("oom", "rss_limit", "timeout")  # a point that ran out of the budget
STATUSES = ("ok", *OVER_BUDGET, "error", "skipped")


@dataclass(frozen=True)
class Budget:
    """How long and how much memory one point may take.

    The time limit grows with the work, so that one rule serves a 1,000-token point and a
    2,048,000-token one: `grace_s + work_tokens / min_tokens_per_s`, where `work_tokens` counts a
    training step's tokens three times (backward ~ 2x forward). A method that cannot keep that pace
    at some length is out of the time budget there.
    """

    grace_s: float = 120.0  # imports, model build and warm-up take ~5-10 s here, ~3x that when the machine is shared
    min_tokens_per_s: float = 500.0  # ~1/10 of the MiniLM RMT's pace on this 2-core machine, when it is not shared
    rss_limit_mib: float = 12 * 1024.0  # half of this 24 GiB machine, which other jobs share

    def __post_init__(self) -> None:
        for name in ("grace_s", "min_tokens_per_s", "rss_limit_mib"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"Budget.{name} must be a positive number, got {value!r}")

    def time_limit_s(self, work_tokens: int) -> float:
        return self.grace_s + work_tokens / self.min_tokens_per_s


def _rss_mib(pid: int) -> float:
    """Resident set of process `pid` in MiB (0 once it has exited)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


def _tail(path: Path, lines: int = 8) -> str:
    text = path.read_text(errors="replace").strip().splitlines() if path.exists() else []
    return " | ".join(text[-lines:])[-1500:]


def run_point(workload: str, params: dict, budget: Budget, *, time_limit_s: float) -> dict:
    """Run `WORKLOADS[workload](**params)` in a fresh process within `budget`; never raises for the point.

    Returns the workload's measurements plus: status (one of STATUSES but "skipped"), reason (empty
    when ok), peak_rss_mib (the child's whole-life peak RSS), wall_s (the child's life, imports included).
    """
    root = Path(__file__).resolve().parents[2]  # so `-m rmt_lab...` resolves to this very checkout
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
    with tempfile.TemporaryDirectory(prefix="rmt-bench-") as tmp:
        tmp = Path(tmp)
        (tmp / "params.json").write_text(json.dumps(params))
        args = [sys.executable, "-m", "rmt_lab.bench.runner", workload, str(tmp / "params.json"),
                str(tmp / "result.json"), str(budget.rss_limit_mib)]
        verdict: tuple[str, str] | None = None
        start = time.monotonic()
        with open(tmp / "stdout", "w") as out, open(tmp / "stderr", "w") as err:
            proc = subprocess.Popen(args, stdout=out, stderr=err, env=env)
        reaped = None
        try:
            while reaped is None:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    reaped = (status, usage)
                    break
                elapsed = time.monotonic() - start
                rss = _rss_mib(proc.pid)
                if verdict is None and rss > budget.rss_limit_mib:
                    verdict = ("rss_limit", f"resident memory {rss:,.0f} MiB passed the limit of "
                                            f"{budget.rss_limit_mib:,.0f} MiB after {elapsed:.1f} s")
                    proc.kill()
                elif verdict is None and elapsed > time_limit_s:
                    verdict = ("timeout", f"still running after the time limit of {time_limit_s:,.0f} s")
                    proc.kill()
                time.sleep(POLL_S)
        finally:
            if reaped is None:  # interrupted (Ctrl-C): leave no orphan behind
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                reaped = (status, usage)
            proc.returncode = os.waitstatus_to_exitcode(reaped[0])  # reaped here, not by Popen
        wall = time.monotonic() - start
        peak_rss = reaped[1].ru_maxrss / 1024  # Linux reports KiB
        result_path = tmp / "result.json"
        if verdict is not None:
            result = {"status": verdict[0], "reason": verdict[1]}
        elif result_path.exists():
            result = json.loads(result_path.read_text())
        else:
            result = {"status": "error", "reason": f"exit code {proc.returncode}: {_tail(tmp / 'stderr')}"}
    result.update(peak_rss_mib=peak_rss, wall_s=wall)
    return result


# ---------------------------------------------------------------------------------------- child side
def _limit_address_space(rss_limit_mib: float) -> None:
    """Cap this process's address space so that what it maps from here on fits the memory limit (CPU only).

    The cap is the address space held now plus the room left under `rss_limit_mib` by the resident
    set now. Address space counts an allocation when it is made, resident memory when it is touched,
    so the cap trips no later than the limit would: torch refuses an oversized allocation with an
    error the child reports as status "oom", before a page of it is touched. CUDA reserves far more
    address space than it uses, so no cap there.
    """
    import torch

    if torch.cuda.is_available():
        return
    with open("/proc/self/status") as f:
        status = {line.split(":")[0]: line.split()[1] for line in f if line.startswith(("VmSize:", "VmRSS:"))}
    room = max(rss_limit_mib - int(status["VmRSS"]) / 1024, 0.0)
    cap = int(status["VmSize"]) * 1024 + int(room * 2**20)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))


def _is_out_of_memory(err: BaseException) -> bool:
    import torch

    if isinstance(err, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)


def _child(argv: list[str]) -> None:
    workload, params_path, result_path, rss_limit = argv
    from rmt_lab.bench.workloads import WORKLOADS  # imports torch and transformers

    params = json.loads(Path(params_path).read_text())
    _limit_address_space(float(rss_limit))
    try:
        result = {"status": "ok", "reason": "", **WORKLOADS[workload](**params)}
    except BaseException as err:  # noqa: BLE001 - every failure becomes a row
        status = "oom" if _is_out_of_memory(err) else "error"
        first = (str(err).strip().splitlines() or [""])[0]
        result = {"status": status, "reason": f"{type(err).__name__}: {first}"[:400]}
    Path(result_path).write_text(json.dumps(result))


if __name__ == "__main__":
    _child(sys.argv[1:])
