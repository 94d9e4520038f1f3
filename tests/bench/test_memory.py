"""The measured-memory sweep: the fresh-process runner, its budget, resume, parquet schema, bad input."""

import math
import re

import pandas as pd
import pytest
import torch

from rmt_lab.bench.flops import rmt_flops, total
from rmt_lab.bench.machine import machine_description
from rmt_lab.bench.memory import (
    MemorySweepConfig, feasible_lengths, flatness, memory_points, memory_status_table, memory_sweep, memory_table,
)
from rmt_lab.bench.runner import run_point
from rmt_lab.process import STATUSES, Budget
from rmt_lab.bench.sweep import BUDGET_COLUMNS, KEY_COLUMNS, RESULT_COLUMNS, Point, backbone_shape, run_sweep
from rmt_lab.config import ConfigError, from_dict
from tests.bench.fakes import FakeRunner

TINY = dict(backbone="tiny-bert", lengths=(1000, 2000, 4000), train_lengths=(1000,), bptt_depths=(-1,))


# ------------------------------------------------------------------------- runner: real subprocesses
def test_oversized_allocation_becomes_an_oom_row():
    # Eager attention over 16,000 tokens wants a 4 GiB score matrix (4 heads x 16000^2 x 4 bytes): the
    # address-space cap under a 2 GiB limit refuses it at once, and the point is a row, not a crash.
    r = run_point("full", {"backbone": "tiny-bert", "tokens": 16_000, "attn": "eager"},
                  Budget(rss_limit_mib=2048), time_limit_s=120)
    assert r["status"] in ("oom", "rss_limit"), r
    assert "allocate" in r["reason"] or "limit" in r["reason"]
    assert 0 < r["peak_rss_mib"] < 2048 + 256  # never far past the limit


def test_point_past_its_time_limit_becomes_a_timeout_row():
    r = run_point("rmt", {"backbone": "tiny-bert", "tokens": 1000}, Budget(), time_limit_s=0.3)
    assert r["status"] == "timeout" and "0 s" in r["reason"]
    assert r["wall_s"] < 10


def test_budget_time_limit_grows_with_the_work():
    b = Budget(grace_s=60, min_tokens_per_s=1000)
    assert b.time_limit_s(2_048_000) == pytest.approx(60 + 2048)
    with pytest.raises(ConfigError, match="Budget.rss_limit_mib must be a positive number"):
        Budget(rss_limit_mib=0)


# ------------------------------------------------------------------------------- workloads in-process
def test_workloads_in_process_return_sane_measurements():
    from rmt_lab.bench.workloads import WORKLOADS

    train = WORKLOADS["rmt"](backbone="tiny-bert", tokens=1200, mode="train", bptt_depth=2)
    assert train["n_segments"] == 3 and 0 < train["backward_s"] < train["seconds"]
    assert train["segment_s_p10"] <= train["segment_s_median"] <= train["segment_s_p90"]
    full = WORKLOADS["full"](backbone="tiny-gpt2", tokens=1500, attn="sdpa", mode="train")
    assert full["positions"] == 1500 and full["seconds"] > 0 and full["attn_impl"] == "sdpa"
    eager = WORKLOADS["full"](backbone="tiny-bert", tokens=700, attn="eager")  # past BERT's 512 positions
    assert eager["attn_impl"] == "eager"
    naive = WORKLOADS["rmt"](backbone="tiny-bert", tokens=1000, keep_outputs=True)
    stream = WORKLOADS["rmt"](backbone="tiny-bert", tokens=1000, paired_backbone=True)
    assert naive["n_segments"] == stream["n_segments"] == 3
    assert stream["paired_backbone_s_median"] > 0 and stream["paired_ratio_median"] > 0
    assert naive["memory_shape"] == stream["memory_shape"] == [1, 10, 64]
    # Kept per token: hidden (64 floats) and vocabulary logits, the bulk, as the published wrapper keeps them.
    vocab = 30522
    assert naive["kept_mib"] * 2**20 >= 1000 * (64 + vocab) * 4
    bare = WORKLOADS["backbone"](backbone="tiny-bert", positions=512, passes=3, matmul_n=256, matmul_repeats=3)
    assert bare["n_segments"] == 3 and bare["matmul_peak_gflops_min"] <= bare["matmul_peak_gflops"]


def test_segment_clock_runs_the_paired_references_before_each_segment():
    from rmt_lab.bench.workloads import SegmentClock

    calls = []
    clock = SegmentClock(["a", "b", "c"], torch.device("cpu"), {"ref": lambda: calls.append(1) or len(calls)})
    assert list(clock) == ["a", "b", "c"]
    assert clock.between_results["ref"] == [1, 2, 3] and len(clock.between_times["ref"]) == 3
    assert len(clock.times()) == 3 and min(clock.times()) >= 0


def test_speed_workload_options_in_process():
    """Paired matmul peak, checkpointed training segments and a dtype: the options `bench speed` uses."""
    from rmt_lab.bench.workloads import WORKLOADS

    paired = WORKLOADS["rmt"](backbone="tiny-bert", tokens=3 * 499, paired_backbone=True, paired_peak=True,
                              matmul_n=256)
    assert paired["paired_peak_gflops_median"] > 0 and 0 < paired["paired_fraction_median"] < 2
    assert paired["reference_mib"] == 3 * 256 * 256 * 4 / 2**20  # the matmul's operands; the backbone is shared
    plain = WORKLOADS["rmt"](backbone="tiny-bert", tokens=1200, mode="train")
    ckpt = WORKLOADS["rmt"](backbone="tiny-bert", tokens=1200, mode="train", checkpoint_segments=True)
    assert plain["n_segments"] == ckpt["n_segments"] == 3 and ckpt["backward_s"] > 0
    half = WORKLOADS["rmt"](backbone="tiny-bert", tokens=600, dtype="bfloat16", matmul_n=128, matmul_repeats=2)
    assert half["n_segments"] == 2 and half["matmul_peak_gflops"] > 0
    with pytest.raises(ValueError, match=r"unknown dtype 'fp8'; allowed: \['bfloat16', 'float16', 'float32'\]"):
        WORKLOADS["rmt"](backbone="tiny-bert", tokens=600, dtype="fp8")


# ---------------------------------------------------------------------------- sweep: fake runner
def test_points_carry_analytic_flops_and_positions():
    config = MemorySweepConfig(**TINY)
    points = memory_points(config)
    # 3 methods x (3 forward + 1 train) lengths
    assert len(points) == 12
    rmt = next(p for p in points if p.key["method"] == "rmt" and p.key["tokens"] == 2000
               and p.key["mode"] == "forward")
    shape = backbone_shape("tiny-bert")
    assert rmt.known["flops"] == total(rmt_flops(shape, 2000, 499, 10, head="none"))
    assert rmt.known["positions"] == 512 and rmt.known["n_segments"] == 5
    train = [p for p in points if p.key["mode"] == "train"]
    assert all(p.work_tokens == 3 * p.key["tokens"] for p in train)


def test_sweep_writes_tidy_parquet_with_machine_columns(tmp_path):
    path = tmp_path / "memory.parquet"
    frame = memory_sweep(MemorySweepConfig(**TINY), path, progress=False, runner=FakeRunner())
    stored = pd.read_parquet(path)
    assert len(stored) == len(frame) == 12
    machine = list(machine_description())
    assert list(stored.columns[: len(KEY_COLUMNS)]) == KEY_COLUMNS
    assert set(RESULT_COLUMNS + BUDGET_COLUMNS + machine) <= set(stored.columns)
    assert "memory_shape" not in stored.columns
    assert set(stored["status"]) <= set(STATUSES)
    ok = stored[stored["status"] == "ok"]
    assert (ok["tokens_per_s"] == ok["tokens"] / 2.0).all()
    assert (ok["gflops_per_s"] == ok["flops"] / 2.0 / 1e9).all()
    assert (ok["memory_metric"] == "peak_rss").all() and (ok["peak_mib"] == ok["peak_rss_mib"]).all()
    assert stored["cpu"].iloc[0] == machine_description()["cpu"]
    assert not list(tmp_path.glob(".*.tmp"))


def test_resume_skips_points_already_measured(tmp_path):
    path = tmp_path / "memory.parquet"
    first = FakeRunner(fail={4000: "oom"})
    memory_sweep(MemorySweepConfig(**TINY), path, progress=False, runner=first)
    assert len(first.calls) == 12  # forward at 4000 is oom in every series: the last length, nothing skipped

    again = FakeRunner()
    frame = memory_sweep(MemorySweepConfig(**TINY), path, progress=False, runner=again)
    assert again.calls == []  # ok rows and over-budget rows under the same budget are kept
    assert (frame["status"] == "oom").sum() == 3

    # A larger budget retries what ran out of the old one, and only that.
    bigger = {**TINY, "budget": {"rss_limit_mib": 20_000.0}}
    retry = FakeRunner()
    frame = memory_sweep(from_dict(MemorySweepConfig, bigger), path, progress=False, runner=retry)
    assert sorted(p["tokens"] for _, p in retry.calls) == [4000, 4000, 4000]
    assert (frame["status"] == "ok").all()
    assert len(pd.read_parquet(path)) == 12  # replaced, not appended

    everything = FakeRunner()
    memory_sweep(MemorySweepConfig(**TINY), path, progress=False, remeasure=True, runner=everything)
    assert len(everything.calls) == 12 and len(pd.read_parquet(path)) == 12


def test_resume_keeps_other_rows_and_retries_errors(tmp_path):
    path = tmp_path / "memory.parquet"
    memory_sweep(MemorySweepConfig(**{**TINY, "methods": ("rmt",)}), path, progress=False,
                 runner=FakeRunner(fail={2000: "error"}))
    retry = FakeRunner()
    memory_sweep(MemorySweepConfig(**{**TINY, "methods": ("full-sdpa",)}), path, progress=False, runner=retry)
    stored = pd.read_parquet(path)
    assert set(stored["method"]) == {"rmt", "full"}  # the rmt rows of the first sweep are still there
    retry_rmt = FakeRunner()
    memory_sweep(MemorySweepConfig(**{**TINY, "methods": ("rmt",)}), path, progress=False, runner=retry_rmt)
    assert [p["tokens"] for _, p in retry_rmt.calls] == [2000]  # the error row, retried


def test_series_stops_after_running_out_and_records_why(tmp_path):
    config = MemorySweepConfig(**{**TINY, "methods": ("full-eager",), "modes": ("forward",)})
    runner = FakeRunner(fail={2000: "timeout"})
    frame = memory_sweep(config, tmp_path / "m.parquet", progress=False, runner=runner)
    assert [p["tokens"] for _, p in runner.calls] == [1000, 2000]
    by = frame.set_index("tokens")
    assert by.loc[2000, "status"] == "timeout" and by.loc[4000, "status"] == "skipped"
    assert by.loc[4000, "reason"] == "over budget at 2,000 tokens (timeout)"
    assert math.isnan(by.loc[4000, "peak_mib"]) and by.loc[4000, "flops"] > 0  # FLOPs known without a run


def test_tables_compare_rmt_and_full_attention(tmp_path):
    frame = memory_sweep(MemorySweepConfig(**TINY), tmp_path / "m.parquet", progress=False,
                         runner=FakeRunner(fail={4000: "oom"}))
    wide = memory_table(frame)
    assert list(wide.index) == [1000, 2000, 4000]
    assert {"rmt forward", "full-eager forward", "full-sdpa train", "rmt train k2=all"} <= set(wide.columns)
    assert math.isnan(wide.loc[4000, "rmt forward"])  # not ok: no number
    text = memory_status_table(frame)
    assert text.loc[4000, "rmt forward"] == "oom" and text.loc[1000, "rmt forward"] == f"{501 / 1024:.2f}"
    feasible = feasible_lengths(frame).set_index("series")
    assert feasible.loc["full-eager forward", "largest_ok_tokens"] == 2000
    assert feasible.loc["full-eager forward", "first_failed_tokens"] == 4000
    f = flatness(frame, low=1000)
    assert f["high_tokens"] == 2000 and f["high_over_low"] == pytest.approx(502 / 501)


# --------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("override, message", [
    ({"backbone": "bert-huge"}, re.escape("unknown backbone 'bert-huge'; available backbones: ['gpt2-minilm', 'minilm', 'minilm-random', 'small-bert', 'tiny-bert'")),
    ({"lengths": (100, 1000)}, r"length\(s\) \[100\] are shorter than one segment of 499 tokens"),
    ({"train_lengths": (10,)}, r"train_lengths: length\(s\) \[10\] are shorter than one segment"),
    ({"methods": ("rmt", "full")}, r"methods='full' is not allowed; allowed values: \['rmt', 'full-sdpa'"),
    ({"bptt_depths": (0,)}, "each must be -1"),
    ({"segment_size": 600}, "exceeds the model's 512 positions"),
    ({"lengths": ()}, "is empty"),
    ({"budget": {"grace": 5}}, r"unknown Budget key\(s\) \['grace'\]"),
    ({"colour": "red"}, r"unknown MemorySweepConfig key\(s\) \['colour'\]; allowed keys"),
])
def test_bad_configs_fail_clearly(override, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(MemorySweepConfig, {**TINY, **override})


def test_resume_from_a_file_missing_fields_names_them(tmp_path):
    path = tmp_path / "memory.parquet"
    pd.DataFrame({"tokens": [1000], "status": ["ok"]}).to_parquet(path)
    with pytest.raises(ConfigError, match=r"memory.parquet .* is missing column\(s\) \['sweep', 'method'"):
        memory_sweep(MemorySweepConfig(**TINY), path, progress=False, runner=FakeRunner())


def test_point_and_tables_missing_fields_name_them():
    with pytest.raises(ConfigError, match=r"missing key field\(s\) \['attn'"):
        Point({"sweep": "memory", "method": "rmt"}, "rmt", {}, 1)
    with pytest.raises(ConfigError, match=r"memory table input is missing column\(s\) \['sweep'"):
        memory_table(pd.DataFrame({"tokens": [1], "peak_mib": [1.0]}))
    with pytest.raises(ConfigError, match="no ok RMT forward row at 16000 tokens"):
        flatness(run_sweep([], "/nonexistent/never-written.parquet", Budget(), progress=False))
