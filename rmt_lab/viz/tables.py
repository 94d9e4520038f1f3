"""Small helpers on the tidy result tables the figures are drawn from."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

# The report's three tasks, in its order; other task names follow alphabetically.
TASK_ORDER = ("memorize", "detect_memorize", "reasoning")
TASK_TITLES = {"memorize": "Memorize", "detect_memorize": "Detect & Memorize", "reasoning": "Reasoning"}
N_CLASSES = 6  # the answer is one of the six bAbI places: chance is 1/6


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


def wilson_interval(accuracy, n, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """95% Wilson score interval of a proportion from `n` samples (well-behaved at 0 and 1, unlike p +- 2se)."""
    p = np.asarray(accuracy, dtype=float)
    n = np.maximum(np.asarray(n, dtype=float), 1.0)
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)
