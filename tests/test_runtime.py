"""A running process takes up the thread count its launcher writes for it."""

import torch

from rmt_lab.runtime import THREADS_FILE_ENV, follow_thread_budget, write_thread_budget


def test_the_thread_count_follows_the_budget_file(tmp_path, monkeypatch):
    before = torch.get_num_threads()
    budget = tmp_path / "step.threads"
    try:
        assert follow_thread_budget() is None  # no launcher: nothing changes
        monkeypatch.setenv(THREADS_FILE_ENV, str(budget))
        assert follow_thread_budget() is None  # not written yet
        write_thread_budget(budget, 1)
        assert follow_thread_budget() == 1 and torch.get_num_threads() == 1
        assert follow_thread_budget() is None  # unchanged since: one stat, no read
        write_thread_budget(budget, 2)
        assert follow_thread_budget() == 2 and torch.get_num_threads() == 2
        budget.write_text("two")
        assert follow_thread_budget() is None and torch.get_num_threads() == 2  # unreadable: kept
    finally:
        torch.set_num_threads(before)
