"""rmt_lab.tasks is data: it never imports the model, training, tracing, benchmarks, figures or CLI."""

import ast
from pathlib import Path

import rmt_lab.tasks

FORBIDDEN = ("rmt_lab.model", "rmt_lab.train", "rmt_lab.trace", "rmt_lab.bench", "rmt_lab.viz", "rmt_lab.cli")


def test_tasks_import_nothing_downstream():
    folder = Path(rmt_lab.tasks.__file__).parent
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith(FORBIDDEN), f"{path.name} imports {name}"
