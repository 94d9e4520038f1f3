"""Whether a reasoning model's memory holds what a question for a place needs, read part by part.

Usage: python data/results/tuning/memory_probe_binding.py CHECKPOINT OUT.parquet [SAMPLES]

`memory_probe_directions.py` finds each fact's places and direction word in the memory after segment 0 of 2
(both facts of a `recall` sample in segment 0), but not, by a linear read, the place lying in a given
direction from the centre. That place is a selection: the fact whose direction from the centre is the asked
one, where a fact's direction from the centre is its word, reversed when the centre is its subject. So this
script decodes the parts of each fact ("The S is w of the O.": subject S, word w, object O) with one linear
probe each (`rmt_lab.trace.probe`, trained on half of SAMPLES, default 4,000), and composes them on the
other half: for a direction d drawn per sample among the two facts' directions from the centre, the place
named by the decoded parts. That accuracy is what a read of this memory could reach by taking the parts
one at a time; a memory keeping only the set of places reaches 0.5. Each part is also decoded from each
memory token alone, which tells whether the tokens divide the facts between them (what a read by
attention could select from) or each hold both.

Writes one row per target and memory token (token -1: all tokens side by side): target, token, accuracy,
n (test samples), n_train, checkpoint.
"""

import sys

import numpy as np
import pandas as pd
import torch
from memory_probe_directions import RELATION, from_centre, recall_memory

from rmt_lab.tasks.registry import DIRECTIONS, PLACES
from rmt_lab.trace.probe import _fit_predict

PARTS = ("subject", "word", "object")


def parts(sample) -> dict[str, str]:
    """{"subject of fact 1": "garden", "word of fact 1": "north", ...} as the facts are written."""
    return {f"{part} of fact {k + 1}": value for k, fact in enumerate(sample.facts)
            for part, value in zip(PARTS, RELATION.match(fact.text).groups())}


def placed(facts: dict[str, str]) -> list[tuple[str, str]]:
    """Per fact, (its place other than the centre, that place's direction from the centre), by the parts."""
    return from_centre([tuple(facts[f"{part} of fact {k}"] for part in PARTS) for k in (1, 2)])[1]


def answer(facts: dict[str, str], direction: str) -> str:
    """The place `direction` of the centre by the facts' parts; the first fact's place if none lies there."""
    places = placed(facts)
    return next((p for p, w in places if w == direction), places[0][0])


def main(checkpoint: str, out: str, samples: int = 4000) -> None:
    drawn, memory = recall_memory(checkpoint, samples)
    tokens = memory[:, 0]  # (samples, M, d)
    truth = pd.DataFrame([parts(s) for s in drawn])
    order = torch.randperm(samples, generator=torch.Generator().manual_seed(0))
    train, test = order[: samples // 2], order[samples // 2 :]
    decoded, rows = {}, []
    for target in truth.columns:
        names = PLACES if target.startswith(("subject", "object")) else DIRECTIONS
        labels = torch.tensor([names.index(v) for v in truth[target]])
        for token in range(-1, tokens.shape[1]):
            x = tokens.reshape(samples, -1) if token < 0 else tokens[:, token]
            predicted = _fit_predict(x[train], labels[train], x[test], len(names), l2=1e-3, steps=100)
            rows.append({"target": target, "token": token,
                         "accuracy": float((predicted == labels[test]).float().mean())})
            if token < 0:
                decoded[target] = [names[i] for i in predicted]
    rng = np.random.default_rng(0)
    right = []
    for j, i in enumerate(test.tolist()):
        true = truth.iloc[i].to_dict()
        direction = placed(true)[int(rng.integers(2))][1]
        right.append(answer({t: decoded[t][j] for t in truth.columns}, direction) == answer(true, direction))
    rows.append({"target": "place d of the centre, composed from the decoded parts", "token": -1,
                 "accuracy": float(np.mean(right))})
    frame = pd.DataFrame(rows).assign(n=len(test), n_train=len(train), checkpoint=checkpoint)
    frame.to_parquet(out)
    print(frame.pivot(index="target", columns="token", values="accuracy").round(3).to_string())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *map(int, sys.argv[3:]))
