"""What a reasoning model's memory holds about two facts: linear probes on the memory after segment 0 of 2.

Usage: python data/results/tuning/memory_probe_directions.py CHECKPOINT OUT.parquet [SAMPLES]

Draws SAMPLES test samples (default 2,000) of the `recall` subset on 2 segments (both facts in segment 0,
the question in segment 1; the other task settings of the run folder holding CHECKPOINT), keeps the memory
after segment 0 (bf16 autocast), and trains one linear probe per target on half of the samples
(`rmt_lab.trace.probe.probe_memory`, 6 classes) to decode, on the other half:

- the centre (the place both facts name): a memory holding the set of stated places has it;
- the place of the first-stated fact other than the centre, and that of the second;
- the direction word of each fact as written, and the direction of the first fact's place from the centre
  (the word, reversed when the fact is stated from the centre);
- the place lying in the first of the two directions from the centre (in `DIRECTIONS` order): what a
  question needs, and what a memory of the places alone gets right half the time.

Writes one row per target: target, accuracy, n (test samples), n_train, checkpoint.
"""

import json
import re
import sys
from pathlib import Path

import pandas as pd
import torch

from rmt_lab.model import RecurrentWrapper
from rmt_lab.tasks import TaskConfig, TaskGenerator
from rmt_lab.tasks.registry import DIRECTIONS, PLACES
from rmt_lab.tasks.report import OPPOSITE
from rmt_lab.trace.probe import collect_memory_states, probe_memory
from rmt_lab.train.evaluate import compute_dtype

RELATION = re.compile(r"The (\w+) is (\w+) of the (\w+)\.")


def from_centre(stated: list[tuple[str, str, str]]) -> tuple[str, list[tuple[str, str]]]:
    """The centre of two facts (subject, word, object), the place both name (the first fact's object if
    none is shared, as wrongly decoded parts may be), and per fact its place other than the centre with
    that place's direction from the centre (the word, reversed when the centre is the subject)."""
    (s1, _, o1), (s2, _, o2) = stated
    common = {s1, o1} & {s2, o2}
    centre = common.pop() if common else o1
    return centre, [(s, w) if o == centre else (o, OPPOSITE[w]) for s, w, o in stated]


def targets(sample) -> dict[str, int]:
    stated = [RELATION.match(f.text).groups() for f in sample.facts]
    (_, d1, _), (_, d2, _) = stated
    centre, placed = from_centre(stated)
    places, directions = [p for p, _ in placed], [w for _, w in placed]
    first = min(range(2), key=lambda k: DIRECTIONS.index(directions[k]))
    return {
        "centre": PLACES.index(centre),
        "place of fact 1": PLACES.index(places[0]),
        "place of fact 2": PLACES.index(places[1]),
        "direction word of fact 1": DIRECTIONS.index(d1),
        "direction word of fact 2": DIRECTIONS.index(d2),
        "direction of fact 1's place from the centre": DIRECTIONS.index(directions[0]),
        "place in the first direction from the centre": PLACES.index(places[first]),
    }


def recall_memory(checkpoint: str, samples: int) -> tuple[list, torch.Tensor]:
    """Test samples 0..samples-1 of `recall` on 2 segments (the other task settings of the run folder holding
    `checkpoint`) and the memory after their segment 0, (samples, 1, M, d), computed in bf16 autocast."""
    run = Path(checkpoint).parent.parent
    settings = json.loads((run / "config.json").read_text())["task"]
    generator = TaskGenerator(TaskConfig(**{**settings, "task": "reasoning", "subset": "recall", "length": 2}))
    drawn = [generator.sample("test", i) for i in range(samples)]
    model = RecurrentWrapper.from_pretrained(checkpoint).eval().merge_adapters()
    with compute_dtype(torch.device("cpu"), "bfloat16"):
        return drawn, collect_memory_states(model, drawn, batch_size=64)["states"][:, :1]


def main(checkpoint: str, out: str, samples: int = 2000) -> None:
    drawn, memory = recall_memory(checkpoint, samples)
    labels = pd.DataFrame([targets(s) for s in drawn])
    rows = []
    for target in labels.columns:
        probe = probe_memory(memory, torch.tensor(labels[target].to_numpy()), n_classes=len(PLACES)).iloc[0]
        rows.append({"target": target, "accuracy": probe.accuracy, "n": probe.n, "n_train": probe.n_train})
    frame = pd.DataFrame(rows).assign(checkpoint=checkpoint)
    frame.to_parquet(out)
    print(frame[["target", "accuracy", "n"]].to_string(index=False))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *map(int, sys.argv[3:]))
