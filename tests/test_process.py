"""One call in a fresh process: its value, its failures as results, its peak memory, its budget."""

import json
import time

from rmt_lab.process import Budget, peak_rss_mib, rss_mib, run_in_process


def test_a_call_returns_its_value_and_the_child_s_peak_memory():
    r = run_in_process("json:dumps", {"obj": [1, 2], "indent": None})
    assert r["status"] == "ok" and json.loads(r["value"]) == [1, 2]
    assert r["peak_rss_mib"] > 5 and r["wall_s"] > 0
    assert 0 < rss_mib() <= peak_rss_mib() + 1


def test_failures_are_results_with_reasons(tmp_path):
    r = run_in_process("json:loads", {"s": "{not json"}, log=tmp_path / "log")
    assert r["status"] == "error" and r["reason"].startswith("JSONDecodeError") and r["value"] is None
    assert "Traceback" in (tmp_path / "log").read_text()  # the child's traceback goes to its log
    r = run_in_process("tests.test_process:sleep", {"seconds": 30}, time_limit_s=0.5)
    assert r["status"] == "timeout" and r["wall_s"] < 10
    r = run_in_process("rmt_lab.no_such_module:f", {})
    assert r["status"] == "error" and "ModuleNotFoundError" in r["reason"]


def test_the_memory_budget_turns_a_huge_allocation_into_oom():
    r = run_in_process("torch:empty", {"size": [8 * 2**30]}, budget=Budget(rss_limit_mib=2048), time_limit_s=60)
    assert r["status"] == "oom" and r["peak_rss_mib"] < 2048


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def test_a_child_dies_with_its_parent(tmp_path):
    """A parent killed outright (no chance to clean up) takes its child with it."""
    import os
    import signal
    import subprocess
    import sys

    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", (
        "from rmt_lab.process import run_in_process; "
        f"run_in_process('tests.test_process:write_pid_and_sleep', {{'path': {str(pid_file)!r}}})")])
    deadline = time.monotonic() + 30
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pid_file.read_text())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        # a killed child stays a zombie until reaped by init; its state says it is gone
        if open(f"/proc/{child}/stat").read().split(")")[-1].split()[0] == "Z":
            return
        time.sleep(0.05)
    raise AssertionError(f"child {child} still running after its parent was killed")


def write_pid_and_sleep(path: str) -> None:
    import os
    from pathlib import Path

    Path(path).write_text(str(os.getpid()))
    time.sleep(60)
