"""The README's Python example runs as written, and the CLI answers."""

import functools
import re
from pathlib import Path

import pytest

from rmt_lab import recipes
from rmt_lab.cli import main
from rmt_lab.train import TrainingDiverged

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["out"].n_segments == 20
    assert tuple(namespace["memory"].shape) == (1, 10, 384)


def test_info_lists_backbones(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch threads" in out and "gpt2-minilm, minilm, minilm-random, small-bert, tiny-bert, tiny-gpt2" in out


def test_demo_prints_throughput(capsys):
    assert main(["demo", "--tokens", "2000", "--backbone", "tiny-bert"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"5 segments in [\d.]+ s: [\d,]+ tokens/s", out)


def test_help_without_command(capsys):
    assert main([]) == 0
    assert "info" in capsys.readouterr().out


BAD_INPUT = [  # (arguments, the one line on stderr starts with, and holds)
    (["data", "preview", "--task", "sorting"], "rmt-lab data preview: error: ", "unknown task 'sorting'"),
    (["train", "--task", "sorting", "--run-dir", "{tmp}/r"], "rmt-lab train: error: ", "unknown task 'sorting'"),
    (["train", "--config", "huge", "--run-dir", "{tmp}/r"], "rmt-lab train: error: ", "unknown configuration 'huge'"),
    (["train", "--run-dir", "{tmp}/r", "--set", "optim.lr"], "rmt-lab train: error: ", "must look like key.subkey="),
    (["eval", "long", "--run-dir", "{tmp}/missing"], "rmt-lab eval long: error: ", "is not a run folder"),
    (["probe", "--checkpoint", "{tmp}/none", "--out", "{tmp}/p.parquet"], "rmt-lab probe: error: ", "is missing"),
    (["trace", "--backbone", "tiny-bert"], "rmt-lab trace: error: ", "--out is required"),
    (["figures", "--results", "{tmp}/nowhere"], "rmt-lab figures: error: ", "does not exist"),
]


@pytest.mark.parametrize(("argv", "prefix", "message"), BAD_INPUT, ids=[" ".join(argv[:2]) for argv, *_ in BAD_INPUT])
def test_bad_input_exits_2_with_one_line(argv, prefix, message, tmp_path, capsys):
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(prefix) and message in err and err.count("\n") == 1, err


def test_a_failed_run_exits_1_and_a_bug_keeps_its_traceback(monkeypatch, capsys):
    @functools.wraps(recipes.train)  # the parser reads the recipe's signature and docstring
    def diverges(**_):
        raise TrainingDiverged("loss is nan at step 3")

    monkeypatch.setattr(recipes, "train", diverges)
    assert main(["train"]) == 1
    assert capsys.readouterr().err == "rmt-lab train: error: loss is nan at step 3\n"

    @functools.wraps(recipes.stream)
    def library_bug(**_):  # a ValueError that rmt_lab did not raise: a bug, not bad input
        raise ValueError("operands could not be broadcast together")

    monkeypatch.setattr(recipes, "stream", library_bug)
    with pytest.raises(ValueError, match="broadcast"):
        main(["demo"])
