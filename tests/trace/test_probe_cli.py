"""`rmt-lab probe`: linear probes on a saved model's memory states, one row per segment and distance."""

import pandas as pd
import pytest

from rmt_lab.cli import main
from rmt_lab.model import RecurrentWrapper, RMTConfig


def test_probe_writes_accuracy_by_distance(tmp_path, capsys):
    model = RecurrentWrapper.from_backbone("tiny-bert", RMTConfig(num_mem_tokens=2, segment_size=24, num_classes=6))
    model.save_pretrained(tmp_path / "model")
    out = tmp_path / "probe.parquet"
    argv = ["probe", "--checkpoint", str(tmp_path / "model"), "--segments", "3", "--samples", "24", "--out", str(out)]
    assert main(argv) == 0
    frame = pd.read_parquet(out)
    assert set(frame["segment"]) == {0, 1, 2} and frame["accuracy"].between(0, 1).all()
    assert (frame["n"].groupby(frame["segment"]).sum() == 12).all()  # half of 24 samples test each probe
    assert "accuracy by distance from the fact segment" in capsys.readouterr().out


def test_probe_bad_input(tmp_path, capsys):
    assert main(["probe", "--checkpoint", str(tmp_path / "none"), "--out", str(tmp_path / "p.parquet")]) == 2
    assert "rmt-lab probe: error" in capsys.readouterr().err
    model = RecurrentWrapper.from_backbone("tiny-bert", RMTConfig(num_mem_tokens=2, segment_size=24, num_classes=6))
    model.save_pretrained(tmp_path / "model")
    assert main(["probe", "--checkpoint", str(tmp_path / "model"), "--task", "recall", "--samples", "8",
                 "--out", str(tmp_path / "p.parquet")]) == 2
    assert "recall" in capsys.readouterr().err


def test_probe_of_reasoning_reads_each_part_of_each_fact_from_its_own_segment(tmp_path, capsys):
    model = RecurrentWrapper.from_backbone("tiny-bert", RMTConfig(num_mem_tokens=2, segment_size=24, num_classes=6))
    model.save_pretrained(tmp_path / "model")
    out = tmp_path / "probe.parquet"
    assert main(["probe", "--checkpoint", str(tmp_path / "model"), "--task", "reasoning", "--segments", "3",
                 "--samples", "24", "--out", str(out)]) == 0
    frame = pd.read_parquet(out)
    targets = ["answer"] + [f"fact {k} {part}" for k in (1, 2) for part in ("subject", "direction", "object")]
    assert list(frame["target"].unique()) == targets
    assert (frame.groupby(["target", "segment"])["n"].sum() == 12).all()
    chance = frame.groupby("target")["chance"].first()
    assert chance["fact 1 direction"] == chance["fact 2 direction"] == 0.25
    assert chance.drop(["fact 1 direction", "fact 2 direction"]).tolist() == pytest.approx([1 / 6] * 5)
    printed = capsys.readouterr().out
    assert all(t in printed for t in targets)
