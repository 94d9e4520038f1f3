"""Small helpers on the tidy result tables the figures are drawn from."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from rmt_lab.tasks.registry import NUM_CLASSES as N_CLASSES  # the answer is one of the places: chance 1/N

# The report's three tasks, in its order; other task names follow alphabetically.
TASK_ORDER = ("memorize", "detect_memorize", "reasoning")
TASK_TITLES = {"memorize": "Memorize", "detect_memorize": "Detect & Memorize", "reasoning": "Reasoning"}
# What tells a task's models apart in long evaluations: the training length, and the weight of the loss that
# held memory still over noise (OptimConfig.retention_loss).
MODEL_COLUMNS = ("trained_segments", "retention_loss")


class TableError(ValueError):
    """A table given to a figure function lacks what the figure needs."""


def require_columns(frame: pd.DataFrame, columns: Iterable[str], table: str) -> None:
    """Fail with the missing column names and the table they were expected in."""
    if not isinstance(frame, pd.DataFrame):
        raise TableError(f"{table}: expected a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise TableError(f"{table} lacks columns {missing}; it has {list(frame.columns)}")
    if frame.empty:
        raise TableError(f"{table} has no rows")


def ordered_tasks(tasks: Iterable[str]) -> list[str]:
    present = list(dict.fromkeys(tasks))
    return [t for t in TASK_ORDER if t in present] + sorted(t for t in present if t not in TASK_ORDER)


def task_title(task: str) -> str:
    return TASK_TITLES.get(task, task.replace("_", " ").capitalize())
