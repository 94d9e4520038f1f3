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
