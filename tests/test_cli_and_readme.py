"""The README's Python example runs as written, and the CLI answers."""

import re
from pathlib import Path

from rmt_lab.cli import main

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
