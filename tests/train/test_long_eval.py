"""Long evaluation: intervals stored, resumable at batch grain, split over processes like training."""

import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import torch
import pytest

from rmt_lab.bench.machine import cpu_model
from rmt_lab.cli import main
from rmt_lab.train.evaluate import long_accuracy, long_evaluation, parts_dir, samples_path, stage_checkpoints
from rmt_lab.tasks import TaskConfig
from tests.train.test_cli import TINY


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = tmp_path_factory.mktemp("long") / "run"
    assert main(["train", "--config", "quick", "--task", "memorize", "--run-dir", str(run), "--set", *TINY]) == 0
    return run


def _task(n_segments):
    return TaskConfig(task="memorize", segment_size=32, length=n_segments, unit="segments")


def test_rows_carry_counts_and_wilson_intervals(run, tmp_path, capfd):
    out = tmp_path / "long.parquet"
    table = long_evaluation(stage_checkpoints(run)[2], _task(2), [2, 3], out, n_samples=5, batch_size=2)
    progress = [line for line in capfd.readouterr().err.splitlines() if "in this process done" in line]
    assert len(progress) == 6 and progress[2].startswith("memorize, 2 segments: batch 3 of 3 in this process done, ")
    assert table["n_samples"].tolist() == [5, 5]
    assert (table["n_correct"] == (table["accuracy"] * 5).round()).all()
    assert ((table["ci_low"] <= table["accuracy"]) & (table["accuracy"] <= table["ci_high"])).all()
    assert (table["ci_high"] - table["ci_low"] > 0.3).all()  # 5 samples prove little, and the interval says so
    assert table["hardware"].tolist() == [cpu_model()] * 2  # speed and peak memory name the CPU they ran on
    samples = pd.read_parquet(samples_path(out))
    assert sorted(samples[samples["n_segments"] == 3]["index"]) == [0, 1, 2, 3, 4]
    assert not parts_dir(out, 2).exists()


def test_an_interrupted_length_runs_only_its_missing_samples(run, tmp_path):
    checkpoint = stage_checkpoints(run)[2]
    whole = long_evaluation(checkpoint, _task(3), [3], tmp_path / "whole.parquet", n_samples=6, batch_size=2)
    cut = tmp_path / "cut.parquet"
    long_accuracy(checkpoint, _task(3), [0, 1, 2], 2, parts_dir(cut, 3))  # two batches finished, then killed
    resumed = long_evaluation(checkpoint, _task(3), [3], cut, n_samples=6, batch_size=2)
    a, b = pd.read_parquet(samples_path(tmp_path / "whole.parquet")), pd.read_parquet(samples_path(cut))
    assert sorted(b["index"]) == list(range(6)) and b["batch_size"].tolist().count(1) == 2  # [0,1] [2] then [3,4] [5]
    assert a.sort_values("index")["predicted"].tolist() == b.sort_values("index")["predicted"].tolist()
    assert resumed["accuracy"].tolist() == whole["accuracy"].tolist()
    more = long_evaluation(checkpoint, _task(3), [3], cut, n_samples=8, batch_size=4)  # more samples: only 6, 7 run
    assert more["n_samples"].tolist() == [8]
    assert len(pd.read_parquet(samples_path(cut))) == 8


@pytest.mark.slow
def test_two_processes_give_the_accuracies_of_one(run, tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this Python")
    args = ["eval", "long", "--run-dir", str(run), "--min-tokens", "64", "--max-tokens", "128", "--samples", "7",
            "--batch-size", "2"]
    assert main([*args, "--out", str(tmp_path / "one.parquet")]) == 0
    result = subprocess.run([torchrun, "--nproc_per_node", "2", "-m", "rmt_lab", *args, "--out",
                             str(tmp_path / "two.parquet")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    one, two = pd.read_parquet(tmp_path / "one.parquet"), pd.read_parquet(tmp_path / "two.parquet")
    assert two["processes"].tolist() == [2, 2] and one["processes"].tolist() == [1, 1]
    assert one["accuracy"].tolist() == two["accuracy"].tolist()
    a, b = (pd.read_parquet(samples_path(tmp_path / f"{n}.parquet")).sort_values(["n_segments", "index"])
            for n in ("one", "two"))
    assert a["predicted"].tolist() == b["predicted"].tolist()


def test_generalization_resumes_cell_by_cell(run, tmp_path, monkeypatch):
    from rmt_lab.train import evaluate

    out = tmp_path / "gen.parquet"
    whole = evaluate.generalization_matrix(run, [1, 2, 3], n_samples=4, out=out)
    assert len(whole) == 6 and ((whole["ci_low"] <= whole["accuracy"]) & (whole["accuracy"] <= whole["ci_high"])).all()
    pd.read_parquet(out).iloc[:4].to_parquet(out)  # killed after four cells
    calls = []
    real = evaluate.accuracy
    monkeypatch.setattr(evaluate, "accuracy", lambda *a, **k: calls.append(a[1].length) or real(*a, **k))
    resumed = evaluate.generalization_matrix(run, [1, 2, 3], n_samples=4, out=out)
    assert calls == [2, 3]  # stage 2's cells at 2 and 3 segments
    assert resumed.equals(whole)


def test_fewer_samples_at_the_longest_lengths(run, tmp_path):
    out = tmp_path / "tiers.parquet"
    assert main(["eval", "long", "--run-dir", str(run), "--min-tokens", "64", "--max-tokens", "256", "--samples", "3",
                 "--samples-from", "256", "2", "--batch-size", "2", "--out", str(out)]) == 0
    table = pd.read_parquet(out)
    assert table["tokens"].tolist() == [64, 128, 256] and table["n_samples"].tolist() == [3, 3, 2]
    assert table["trained_segments"].tolist() == [2, 2, 2]
    assert (table["retention_loss"] == 0.0).all()  # the run's optim.retention_loss: none


def test_each_row_names_the_retention_loss_its_model_was_trained_with(run, tmp_path):
    held = tmp_path / "held"
    shutil.copytree(run, held)
    config = json.loads((held / "config.json").read_text())
    config["optim"]["retention_loss"] = 100.0
    (held / "config.json").write_text(json.dumps(config))
    assert main(["eval", "long", "--run-dir", str(held), "--min-tokens", "64", "--max-tokens", "64", "--samples", "1",
                 "--batch-size", "1"]) == 0
    assert pd.read_parquet(held / "long_eval.parquet")["retention_loss"].tolist() == [100.0]


def test_samples_that_predate_the_hardware_column_still_summarize(run, tmp_path):
    out = tmp_path / "old.parquet"
    long_evaluation(stage_checkpoints(run)[2], _task(2), [2], out, n_samples=2, batch_size=2)
    old = pd.read_parquet(samples_path(out)).drop(columns="hardware")
    old.to_parquet(samples_path(out))
    more = long_evaluation(stage_checkpoints(run)[2], _task(2), [2], out, n_samples=4, batch_size=2)
    assert more["n_samples"].tolist() == [4] and more["hardware"].tolist() == [cpu_model()]
    old.to_parquet(samples_path(out))
    assert long_evaluation(stage_checkpoints(run)[2], _task(2), [2], out, n_samples=2)["hardware"].tolist() == [""]


def test_bfloat16_evaluation_is_recorded_as_such(run, tmp_path):
    out = tmp_path / "bf16.parquet"
    table = long_evaluation(stage_checkpoints(run)[2], _task(2), [2], out, n_samples=4, batch_size=4,
                            dtype="bfloat16")
    assert table["dtype"].tolist() == ["bfloat16"] and table["n_samples"].tolist() == [4]
    with pytest.raises(ValueError, match="allowed: \\['float32', 'bfloat16'\\]"):
        from rmt_lab.train.evaluate import compute_dtype

        compute_dtype(torch.device("cpu"), "int8")


def test_no_recurrence_ablation_feeds_every_segment_the_initial_memory(run, tmp_path, capsys, monkeypatch):
    from rmt_lab.model import RecurrentWrapper

    seen = []
    real = RecurrentWrapper.forward
    monkeypatch.setattr(RecurrentWrapper, "forward", lambda self, *a, **k: seen.append(k["carry_memory"])
                        or real(self, *a, **k))
    out = tmp_path / "ablation.parquet"
    assert main(["eval", "ablation", "--run-dir", str(run), "--max-segments", "3", "--samples", "4",
                 "--out", str(out)]) == 0
    table = pd.read_parquet(out)
    assert table["eval_segments"].tolist() == [1, 2, 3] and not table["carry_memory"].any()
    assert table["trained_segments"].tolist() == [2, 2, 2] and seen and not any(seen)
    assert "without recurrence" in capsys.readouterr().out


def test_fact_positions_are_those_of_the_evaluated_samples():
    from rmt_lab.tasks import TaskGenerator
    from rmt_lab.train.evaluate import with_fact_positions

    task = TaskConfig(task="reasoning", segment_size=32, length=1, unit="segments")
    outcomes = pd.DataFrame({"n_segments": [6, 6, 9], "index": [3, 0, 5], "correct": [True, False, True]})
    placed = with_fact_positions(outcomes, task)
    assert placed[["n_segments", "index", "correct"]].equals(outcomes)  # rows and order kept
    for row in placed.itertuples():
        facts = TaskGenerator(task.at_segments(row.n_segments)).sample("test", row.index).facts
        segments = [f.segments[0] for f in facts]
        assert (row.first_fact_segment, row.last_fact_segment) == (min(segments), max(segments))
        assert row.fact_gap == row.n_segments - 1 - max(segments) >= 0
