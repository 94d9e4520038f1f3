"""`rmt-lab train` and `rmt-lab eval` on tiny settings."""

import pandas as pd

from rmt_lab.cli import main

TINY = [
    "backbone=tiny-bert", "curriculum.stages=[1,2]", "curriculum.max_steps=2", "curriculum.min_steps=0",
    "optim.batch_size=4", "run.eval_every=2", "run.eval_samples=4", "run.log_every=1", "run.checkpoint_every=2",
]


def test_train_then_evaluate(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--config", "quick", "--task", "memorize", "--run-dir", str(run), "--set", *TINY]) == 0
    assert "2 segments:" in capsys.readouterr().out
    # a folder that holds a run is bad input (2) without --resume, not a failed run
    assert main(["train", "--config", "quick", "--task", "memorize", "--run-dir", str(run), "--set", *TINY]) == 2
    assert capsys.readouterr().err.startswith(f"rmt-lab train: error: {run} already holds a run")
    assert main(["eval", "generalization", "--run-dir", str(run), "--samples", "4"]) == 0
    table = pd.read_parquet(run / "generalization.parquet")
    assert table.shape[0] == 2 * 4
    assert main(["eval", "long", "--run-dir", str(run), "--min-tokens", "64", "--max-tokens", "100",
                 "--samples", "2", "--batch-size", "2"]) == 0
    long = pd.read_parquet(run / "long_eval.parquet")
    assert long["tokens"].tolist() == [64, 128]  # 100 tokens round up to 4 segments of 32
    assert (long["peak_mib"] > 0).all() and long["accuracy"].between(0, 1).all()
    # rerunning keeps measured points and adds only new ones
    assert main(["eval", "long", "--run-dir", str(run), "--min-tokens", "64", "--max-tokens", "256",
                 "--samples", "2", "--batch-size", "2"]) == 0
    assert pd.read_parquet(run / "long_eval.parquet")["tokens"].tolist() == [64, 128, 256]


def test_train_rejects_bad_input(tmp_path, capsys):
    assert main(["train", "--task", "sorting", "--run-dir", str(tmp_path / "r")]) == 2
    assert "unknown task 'sorting'" in capsys.readouterr().err
    assert main(["train", "--run-dir", str(tmp_path / "r"), "--set", "curriculum.stages=[2,1]"]) == 2
    assert "strictly increasing" in capsys.readouterr().err
    assert main(["eval", "generalization", "--run-dir", str(tmp_path / "missing")]) == 2
    assert "not a run folder" in capsys.readouterr().err
