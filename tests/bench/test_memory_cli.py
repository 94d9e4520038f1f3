"""`rmt-lab bench memory|speed|all`: real runs with tiny settings, and clear errors for bad input."""

import pandas as pd

import rmt_lab.bench.sweep as sweep
from rmt_lab.cli import main
from tests.bench.fakes import FakeRunner


def test_bench_memory_runs_fresh_processes(tmp_path, capsys):
    argv = ["bench", "memory", "--quick", "--methods", "rmt", "full-eager", "--modes", "forward",
            "--lengths", "1000", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "rmt forward" in out and "full-eager forward" in out and "Largest length within the budget" in out
    frame = pd.read_parquet(tmp_path / "memory.parquet")
    assert list(frame["status"]) == ["ok", "ok"], frame[["status", "reason"]]
    rmt = frame[frame["method"] == "rmt"].iloc[0]
    assert rmt["n_segments"] == 3 and rmt["backbone"] == "tiny-bert"
    # Sane: a torch process holds a few hundred MiB; the work ran after the baseline was taken.
    assert 100 < rmt["baseline_rss_mib"] <= rmt["peak_rss_mib"] < 4096
    assert rmt["seconds"] > 0 and rmt["tokens_per_s"] > 0 and rmt["wall_s"] > rmt["seconds"]
    assert rmt["segment_s_p10"] <= rmt["segment_s_median"] <= rmt["segment_s_p90"]


def test_bench_all_quick_writes_every_table(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sweep, "run_point", FakeRunner())  # the wiring, not the processes (tested above)
    assert main(["bench", "all", "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "full attention / RMT" in out and "Peak memory" in out and "RMT forward, 1,996 tokens per sample" in out
    for name in ("flops", "flops_ratio", "memory", "speed"):
        assert (tmp_path / f"{name}.parquet").exists()
    assert set(pd.read_parquet(tmp_path / "memory.parquet")["backbone"]) == {"tiny-bert"}


def test_bench_speed_quick_prints_the_ratios(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sweep, "run_point", FakeRunner())
    assert main(["bench", "speed", "--quick", "--batches", "1", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "fraction of peak (paired per segment)" in out and "75.0%" in out
    assert "RMT segment / bare backbone, paired" in out and "1.040x" in out
    assert "RMT training step" in out and "checkpointing: time x" in out and "1.250x" in out


def test_bench_memory_bad_input_exits_2(tmp_path, capsys):
    assert main(["bench", "memory", "--lengths", "100", "--out", str(tmp_path)]) == 2
    assert "shorter than one segment of 499 tokens" in capsys.readouterr().err
    assert main(["bench", "speed", "--backbone", "bert-xl", "--out", str(tmp_path)]) == 2
    assert "available backbones: ['gpt2-minilm', 'minilm', 'minilm-random', 'small-bert', 'tiny-bert', 'tiny-gpt2']" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
