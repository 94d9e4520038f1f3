"""Running a sweep of benchmark points into one tidy parquet file: resume, budget, progress.

A `Point` names what it measures (its `key`: method, attention, mode, lengths ...) and which
workload runs it. `run_sweep` runs each point in a fresh process (`runner.run_point`) and writes
one row per point, with this machine's description (`machine_description()`) and the budget as
columns, after every point, atomically, so an interrupted sweep loses at most the running point.

Resume: a point already in the file for this machine is not run again if its row is "ok", or if it
ran out of the same budget ("oom", "rss_limit", "timeout"); "error" rows are retried. Rows of other
machines, backbones or settings in the file are kept untouched.

Series: the points that differ only in length form a series (`series_key`). Once a point of a
series runs out of the budget, its longer points are recorded as "skipped", with the reason, rather
than run: full attention past its largest feasible length costs nothing to record.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from rmt_lab.bench.machine import machine_description
from rmt_lab.bench.runner import run_point
from rmt_lab.process import OVER_BUDGET, Budget
from rmt_lab.config import ConfigError
from rmt_lab.io import write_parquet

# What identifies a point (with the machine columns); every sweep's rows carry all of them.
KEY_COLUMNS = ["sweep", "method", "attn", "mode", "backbone", "dtype", "tokens", "batch", "segment_size", "num_mem",
               "bptt_depth"]
# Key columns that only some points carry, with the value a row without one is taken to have (rows written
# before the column existed included): a training step with dropout must not resume from the dropout-off
# row of the same shape, and adding the column must not make every stored row look new.
OPTIONAL_KEY_COLUMNS = {"dropout": 0.0}
BUDGET_COLUMNS = ["grace_s", "min_tokens_per_s", "rss_limit_mib"]
RESULT_COLUMNS = [  # in this order after the key; NaN where a column does not apply
    "status", "reason", "seconds", "tokens_per_s", "peak_mib", "memory_metric", "peak_rss_mib",
    "baseline_rss_mib", "peak_cuda_mib", "n_segments", "positions", "flops", "gflops_per_s",
    "matmul_peak_gflops", "matmul_peak_gflops_min", "matmul_peak_gflops_max", "fraction_of_peak",
    "segment_s_median", "segment_s_p10", "segment_s_p90", "paired_backbone_s_median", "paired_backbone_s_p10",
    "paired_backbone_s_p90", "paired_ratio_median", "paired_plain_s_median", "paired_plain_s_p10", "paired_plain_s_p90",
    "paired_plain_speedup_median", "paired_peak_gflops_median", "paired_fraction_median",
    "warmup_s", "reference_mib", "backward_s", "attn_impl", "time_limit_s", "wall_s",
    "device", "threads", "cpu_capability", "cpu_isa", "load_avg_1m", "measured_at",
]


def machine_columns() -> list[str]:
    return list(machine_description())


@dataclass(frozen=True)
class Point:
    """One measurement: identifying columns, the workload that measures it, what is known beforehand."""

    key: dict  # values of KEY_COLUMNS
    workload: str  # a name in rmt_lab.bench.workloads.WORKLOADS
    params: dict  # keyword arguments of the workload (JSON-ready)
    work_tokens: int  # forward-equivalent tokens (training x3): sets the time limit
    known: dict = field(default_factory=dict)  # columns known without running: analytic flops, positions ...

    def __post_init__(self) -> None:
        missing = [c for c in KEY_COLUMNS if c not in self.key]
        if missing:
            raise ConfigError(f"benchmark point is missing key field(s) {missing}; a point needs {KEY_COLUMNS}")

    @property
    def series_key(self) -> tuple:
        return tuple(self.key[c] for c in KEY_COLUMNS if c != "tokens") + _optional_keys(self.key)

    def describe(self) -> str:
        k = self.key
        depth = "all" if k["bptt_depth"] == -1 else k["bptt_depth"]
        extra = f" k2={depth}" if k["mode"] == "train" and k["method"] == "rmt" else ""
        extra += f" dropout {k['dropout']:g}" if k.get("dropout") else ""
        return f"{k['method']}/{k['attn']} {k['mode']}{extra} {k['tokens']:,} tok x{k['batch']}"


def require_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """Fail naming every missing column, rather than with a KeyError on the first."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ConfigError(f"{what} is missing column(s) {missing}; it needs {list(columns)}")


def _optional_keys(row: dict) -> tuple:
    """The values of OPTIONAL_KEY_COLUMNS in `row`, the default where it has none (missing or NaN)."""
    values = ((row.get(c, default), default) for c, default in OPTIONAL_KEY_COLUMNS.items())
    return tuple(default if value is None or value != value else value for value, default in values)


def _identity(row: dict, machine: list[str]) -> tuple:
    return tuple(row[c] for c in KEY_COLUMNS + machine) + _optional_keys(row)


def _finish(row: dict) -> dict:
    """Derived columns: throughput, achieved FLOP/s and its fraction of the matmul peak, headline memory."""
    seconds = row.get("seconds", math.nan)
    ok = row["status"] == "ok" and seconds and seconds > 0
    row["tokens_per_s"] = row["tokens"] * row["batch"] / seconds if ok else math.nan
    row["gflops_per_s"] = row["flops"] / seconds / 1e9 if ok else math.nan
    peak = row.get("matmul_peak_gflops", math.nan)
    row["fraction_of_peak"] = row["gflops_per_s"] / peak if ok and peak == peak else math.nan
    cuda = row.get("peak_cuda_mib", math.nan)
    on_cuda = str(row.get("device", "")).startswith("cuda") and cuda == cuda
    row["memory_metric"] = "cuda_max_allocated" if on_cuda else "peak_rss"
    row["peak_mib"] = cuda if on_cuda else row.get("peak_rss_mib", math.nan)
    row.pop("memory_shape", None)  # a list; the shape follows from the key columns anyway
    return row


def _frame(rows: list[dict], machine: list[str]) -> pd.DataFrame:
    columns = KEY_COLUMNS + RESULT_COLUMNS + BUDGET_COLUMNS + machine
    frame = pd.DataFrame(rows)
    for c in columns:
        if c not in frame:
            frame[c] = math.nan
    optional = [c for c in OPTIONAL_KEY_COLUMNS if c in frame]  # after the key, the default where a row has none
    for c in optional:
        frame[c] = frame[c].fillna(OPTIONAL_KEY_COLUMNS[c])
    columns = KEY_COLUMNS + optional + columns[len(KEY_COLUMNS):]
    extra = [c for c in frame.columns if c not in columns]  # e.g. memory_shape
    frame = frame[columns + extra]
    for c in ("status", "reason", "memory_metric", "attn_impl", "device", "cpu_capability", "cpu_isa", "measured_at"):
        frame[c] = frame[c].fillna("").astype(str)
    return frame


def load_previous(path: Path) -> pd.DataFrame | None:
    if not path.exists():
        return None
    frame = pd.read_parquet(path)
    require_columns(frame, KEY_COLUMNS + ["status"] + BUDGET_COLUMNS + machine_columns(),
                    f"{path} (an earlier sweep's results, read to resume)")
    return frame


def run_sweep(points: Sequence[Point], path: str | Path, budget: Budget, *, progress: bool = True,
              remeasure: bool = False, runner: Callable[..., dict] | None = None) -> pd.DataFrame:
    """Measure `points` (resuming from `path`), write every row to `path`; returns this sweep's rows.

    `remeasure`: run every point again (e.g. once the machine is quiet), replacing its stored row.
    `runner` defaults to `run_point` (tests pass a stand-in that starts no process).
    """
    from tqdm.auto import tqdm

    runner = runner or run_point
    path = Path(path)
    machine_info = machine_description()
    machine = list(machine_info)
    previous = load_previous(path)
    budget_values = {"grace_s": budget.grace_s, "min_tokens_per_s": budget.min_tokens_per_s,
                     "rss_limit_mib": budget.rss_limit_mib}
    done: dict[tuple, dict] = {}
    if previous is not None and not remeasure:
        for row in previous.to_dict("records"):
            same_budget = all(row[c] == v for c, v in budget_values.items())
            if row["status"] == "ok" or (row["status"] in OVER_BUDGET and same_budget):
                done[_identity(row, machine)] = row
    ordered = sorted(points, key=lambda p: (p.series_key, p.key["tokens"]))
    exhausted: dict[tuple, str] = {}  # series -> why its longer points are skipped
    rows: list[dict] = []
    ids = [_identity({**p.key, **machine_info}, machine) for p in ordered]

    def save() -> None:
        mine = set(ids[: len(rows)])
        kept = [] if previous is None else [
            r for r in previous.to_dict("records") if _identity(r, machine) not in mine]
        write_parquet(path, _frame(kept + rows, machine))

    bar = tqdm(ordered, desc=path.stem, unit="point", disable=not progress)
    for point, identity in zip(bar, ids):
        bar.set_postfix_str(point.describe())
        base = {**point.key, **point.known, **budget_values, **machine_info}
        if identity in done:
            row = done[identity]
        elif point.series_key in exhausted:
            row = _finish({**base, "status": "skipped", "reason": exhausted[point.series_key],
                           "measured_at": _now()})
        else:
            limit = budget.time_limit_s(point.work_tokens)
            result = runner(point.workload, point.params, budget, time_limit_s=limit)
            # The point's own key wins over anything the workload reports under the same name.
            row = _finish({**base, **result, **point.key, "time_limit_s": limit, "measured_at": _now()})
            bar.write(_summary(point, row))
        if row["status"] in OVER_BUDGET and point.series_key not in exhausted:
            exhausted[point.series_key] = f"over budget at {point.key['tokens']:,} tokens ({row['status']})"
        rows.append(row)
        save()
    return _frame(rows, machine)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _summary(point: Point, row: dict) -> str:
    if row["status"] != "ok":
        return f"{point.describe()}: {row['status']}: {row['reason']}"
    return (f"{point.describe()}: {row['seconds']:.1f} s, {row['tokens_per_s']:,.0f} tokens/s, "
            f"peak {row['peak_mib']:,.0f} MiB")


def check_backbone(name: str) -> str:
    """A ready backbone's name, or a ConfigError listing the available ones."""
    from rmt_lab.model import available_backbones

    if name not in available_backbones():
        raise ConfigError(f"unknown backbone {name!r}; available backbones: {available_backbones()}")
    return name


def backbone_shape(name: str):
    """The `TransformerShape` of a ready backbone, from its config alone (nothing built or loaded)."""
    from rmt_lab.bench.shapes import shape_from_config
    from rmt_lab.model.backbones import backbone_config

    return shape_from_config(backbone_config(check_backbone(name)))


def check_lengths(lengths: Sequence[int], segment_size: int, what: str) -> None:
    """Lengths are positive, and each holds at least one segment (the RMT's unit; below it there is no RMT)."""
    from rmt_lab.bench.flops import require_positive

    if not lengths:
        raise ConfigError(f"{what} is empty; give at least one length")
    for n in lengths:
        require_positive(f"{what} item", n)
    short = [n for n in lengths if n < segment_size]
    if short:
        raise ConfigError(f"{what}: length(s) {short} are shorter than one segment of {segment_size} tokens")
