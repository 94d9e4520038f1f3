"""One function call in a fresh Python process: the one way rmt_lab runs work apart from itself.

Every measurement of peak memory, every benchmark point, each length of a long evaluation and each
step of `rmt-lab reproduce` runs through `run_in_process`: a fresh process gives the call its own peak
memory (on CPU the process's peak resident set, `ru_maxrss`, read by the parent from `wait4`, so it is
known even for a process that was stopped; tracemalloc cannot see tensor memory) and its own threads.

Protocol: the parent writes the keyword arguments to a JSON file and starts
`python -m rmt_lab.process PARENT_PID MODULE:FUNCTION ARGS.json RESULT.json RSS_LIMIT_MIB`; the child
(killed by the kernel if the parent dies first) calls the function and writes {"status", "reason", "value"} (the function's return value, JSON) to RESULT.json.
The parent adds the child's peak_rss_mib and wall_s. It never raises for the call's failure:

    ok          the function returned
    error       it raised, or the process died (reason: the exception, or the exit code and stderr's end)
    oom         it failed to allocate memory (within the budget's address-space cap, or torch's OOM)
    rss_limit   the parent saw its resident set pass `Budget.rss_limit_mib` and killed it
    timeout     still running past `time_limit_s`

A `Budget` bounds memory twice: after its imports the child caps its own address space (RLIMIT_AS) to
the room left under the limit, so an oversized allocation fails at once inside torch ("oom"); and the
parent samples the resident set every POLL_S ("rss_limit": catches what the cap does not, e.g. CUDA).
The limits keep a shared machine out of the kernel's OOM killer and turn "ran out" into a result.

This module imports nothing but the standard library at the top: it sits below every other part.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

POLL_S = 0.02  # RSS sampling period; at ~5 GB/s of page faults a child overshoots the limit by ~100 MB at most
OVER_BUDGET = ("oom", "rss_limit", "timeout")  # a call that ran out of its budget
STATUSES = ("ok", *OVER_BUDGET, "error", "skipped")


@dataclass(frozen=True)
class Budget:
    """How long and how much memory one call may take.

    The time limit grows with the work, so that one rule serves a 1,000-token point and a
    2,048,000-token one: `grace_s + work_tokens / min_tokens_per_s`, where `work_tokens` counts a
    training step's tokens three times (backward ~ 2x forward). A method that cannot keep that pace
    at some length is out of the time budget there.
    """

    grace_s: float = 120.0  # imports, model build and warm-up take ~5-10 s here, ~3x that when the machine is shared
    min_tokens_per_s: float = 500.0  # ~1/10 of the MiniLM RMT's pace on this 2-core machine, when it is not shared
    rss_limit_mib: float = 12 * 1024.0  # half of this 24 GiB machine, which other jobs share

    def __post_init__(self) -> None:
        from rmt_lab.config import ConfigError

        for name in ("grace_s", "min_tokens_per_s", "rss_limit_mib"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"Budget.{name} must be a positive number, got {value!r}")

    def time_limit_s(self, work_tokens: int) -> float:
        return self.grace_s + work_tokens / self.min_tokens_per_s


def peak_rss_mib() -> float:
    """This process's peak resident set so far, in MiB (a high-water mark: measure in a fresh process)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def rss_mib(pid: int | str = "self") -> float:
    """Resident set of process `pid` (default this one) now, in MiB; 0 once it has exited."""
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


def run_in_process(target: str, arguments: dict[str, Any] | None = None, *, budget: Budget | None = None,
                   time_limit_s: float | None = None, log: str | Path | None = None, inherit_output: bool = False,
                   env: dict[str, str] | None = None) -> dict[str, Any]:
    """Call `target` ("package.module:function") with `arguments` in a fresh process; never raises for the call.

    `budget`: memory limits (and `time_limit_s`, else none); `log`: the child's stdout and stderr go to this
    file; `inherit_output`: to this terminal instead; otherwise they are kept aside and the end of stderr
    becomes the reason of a failure. `env`: variables added to the child's environment. Returns
    {"status" (see STATUSES), "reason", "value", "peak_rss_mib", "wall_s"}.
    """
    root = Path(__file__).resolve().parents[1]  # so `-m rmt_lab...` resolves to this very checkout
    child_env = {**os.environ, **(env or {})}
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), child_env.get("PYTHONPATH", "")) if p)
    limit = budget.rss_limit_mib if budget is not None else 0.0
    with tempfile.TemporaryDirectory(prefix="rmt-process-") as tmp:
        tmp = Path(tmp)
        (tmp / "arguments.json").write_text(json.dumps(arguments or {}))
        args = [sys.executable, "-m", "rmt_lab.process", str(os.getpid()), target, str(tmp / "arguments.json"),
                str(tmp / "result.json"), str(limit)]
        stderr_path = Path(log) if log is not None else tmp / "stderr"
        if log is not None:
            stderr_path.parent.mkdir(parents=True, exist_ok=True)
        verdict: tuple[str, str] | None = None
        start = time.monotonic()
        if inherit_output:
            proc = subprocess.Popen(args, env=child_env)
        elif log is not None:
            with open(stderr_path, "w", encoding="utf-8") as out:
                proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=child_env)
        else:
            with open(tmp / "stdout", "w") as out, open(stderr_path, "w") as err:
                proc = subprocess.Popen(args, stdout=out, stderr=err, env=child_env)
        reaped = None
        try:
            while reaped is None:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    reaped = (status, usage)
                    break
                elapsed = time.monotonic() - start
                rss = rss_mib(proc.pid) if limit else 0.0
                if verdict is None and limit and rss > limit:
                    verdict = ("rss_limit", f"resident memory {rss:,.0f} MiB passed the limit of "
                                            f"{limit:,.0f} MiB after {elapsed:.1f} s")
                    proc.kill()
                elif verdict is None and time_limit_s is not None and elapsed > time_limit_s:
                    verdict = ("timeout", f"still running after the time limit of {time_limit_s:,.0f} s")
                    proc.kill()
                time.sleep(POLL_S if limit or time_limit_s is not None else 0.2)
        finally:
            if reaped is None:  # interrupted (Ctrl-C): leave no orphan behind
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                reaped = (status, usage)
            proc.returncode = os.waitstatus_to_exitcode(reaped[0])  # reaped here, not by Popen
        wall = time.monotonic() - start
        result_path = tmp / "result.json"
        if verdict is not None:
            result = {"status": verdict[0], "reason": verdict[1], "value": None}
        elif result_path.exists():
            result = json.loads(result_path.read_text())
        else:
            result = {"status": "error", "value": None,
                      "reason": f"exit code {proc.returncode}: {_tail(stderr_path)}"}
    result.update(peak_rss_mib=reaped[1].ru_maxrss / 1024, wall_s=wall)  # Linux reports KiB
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
    if isinstance(err, MemoryError):
        return True
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)


def _die_with_parent(parent: int) -> None:
    """Linux: have the kernel kill this process when the one that started it dies, so that a killed
    reproduction or evaluation leaves no orphan computing on (a parent that dies normally waits for it)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: nothing to ask for
        return
    if os.getppid() != parent:  # the parent died before the request: nobody waits for this process
        os._exit(1)


def _child(argv: list[str]) -> int:
    parent, target, arguments_path, result_path, rss_limit = argv
    _die_with_parent(int(parent))
    module, _, name = target.partition(":")
    function = getattr(importlib.import_module(module), name)  # imports torch etc. before the cap
    arguments = json.loads(Path(arguments_path).read_text())
    if float(rss_limit):
        _limit_address_space(float(rss_limit))
    try:
        result = {"status": "ok", "reason": "", "value": function(**arguments)}
        code = 0
    except BaseException as err:  # noqa: BLE001 - every failure becomes a result
        import traceback

        traceback.print_exc()  # into the child's log
        first = (str(err).strip().splitlines() or [""])[0]
        result = {"status": "oom" if _is_out_of_memory(err) else "error", "value": None,
                  "reason": f"{type(err).__name__}: {first}"[:400]}
        code = 1
    Path(result_path).write_text(json.dumps(result))
    return code


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
