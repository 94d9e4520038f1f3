"""`rmt-lab bench flops`: prints the ratio table, writes both parquet files, rejects bad sweeps."""

import pandas as pd

from rmt_lab.cli import main


def test_bench_flops_writes_parquet(tmp_path, capsys):
    argv = ["bench", "flops", "--models", "opt-125m", "opt-175b", "--lengths", "512", "32000", "2048000",
            "--out", str(tmp_path)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "opt-175b" in printed and "27.4" in printed
    frame = pd.read_parquet(tmp_path / "flops.parquet")
    ratio = pd.read_parquet(tmp_path / "flops_ratio.parquet")
    assert len(frame) == 2 * 3 * 2 and list(ratio["model"]) == ["opt-125m", "opt-175b"]
    assert {"torch", "transformers"} <= set(frame.columns) & set(ratio.columns)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_bench_flops_unknown_model(tmp_path, capsys):
    assert main(["bench", "flops", "--models", "opt-7b", "--out", str(tmp_path)]) == 2
    assert "known models: ['opt-125m'" in capsys.readouterr().err
    assert not (tmp_path / "flops.parquet").exists()
