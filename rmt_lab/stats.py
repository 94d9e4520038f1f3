"""Interval estimates for the accuracies rmt_lab reports (every accuracy comes with its sample count)."""

from __future__ import annotations

import numpy as np


def wilson_interval(accuracy, n, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """95% Wilson score interval of a proportion from `n` samples (well-behaved at 0 and 1, unlike p +- 2se)."""
    p = np.asarray(accuracy, dtype=float)
    n = np.maximum(np.asarray(n, dtype=float), 1.0)
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)
