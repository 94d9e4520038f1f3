"""What a reasoning model's wrong answers name, and where the asked fact sat.

Usage: python data/results/tuning/reasoning_errors.py CHECKPOINT OUT.parquet [SEGMENTS] [SAMPLES]

Streams SAMPLES test samples of the whole `reasoning` task with SEGMENTS segments (defaults 7 and 1024;
the other task settings of the run folder holding CHECKPOINT) through the model in bf16 autocast and
writes one row per sample: label, prediction, the segment of each fact and of the fact the question asks
about, what a wrong answer names ("the other fact's place", "the asked place" or "a place not stated"),
and the two features that decide whether naming the right fact is enough: whether the facts' directions
are opposite (north and south of the same centre: one axis, two signs) and whether the question asks for
the centre.
"""

import json
import sys
from pathlib import Path

import pandas as pd
import torch

from rmt_lab.model import RecurrentWrapper
from rmt_lab.tasks import TaskConfig, TaskGenerator, iter_batch_segments
from rmt_lab.tasks.registry import PLACES
from rmt_lab.train.evaluate import compute_dtype


def places_in(text: str) -> list[str]:
    return [p for p in PLACES if p in text]


def main(checkpoint: str, out: str, segments: int = 7, samples: int = 1024) -> None:
    run = Path(checkpoint).parent.parent
    settings = json.loads((run / "config.json").read_text())["task"]
    task = TaskConfig(**{**settings, "task": "reasoning", "subset": None, "length": segments})
    model = RecurrentWrapper.from_pretrained(checkpoint).eval().merge_adapters()
    gen = TaskGenerator(task)
    rows = []
    with torch.inference_mode(), compute_dtype(torch.device("cpu"), "bfloat16"):
        for start in range(0, samples, 64):
            batch = [gen.sample("test", i) for i in range(start, min(samples, start + 64))]
            predicted = model.stream(iter_batch_segments(batch), n_segments=segments).logits.argmax(-1).tolist()
            for s, p in zip(batch, predicted):
                asked_place = places_in(s.question.text)[0]
                # the question is about the fact naming both the place it asks about and the answer
                asked = next(k for k, f in enumerate(s.facts) if asked_place in f.text and s.answer in f.text)
                first, second = (set(places_in(f.text)) for f in s.facts)
                stated, centre = first | second, (first & second).pop()  # the centre is in both facts
                wrong = PLACES[p]
                rows.append({
                    "index": s.index, "label": s.label, "predicted": p, "correct": p == s.label,
                    "fact_segments": [f.segments[0] for f in s.facts], "asked_fact": asked,
                    "asked_fact_segment": s.facts[asked].segments[0],
                    "other_fact_segment": s.facts[1 - asked].segments[0],
                    "opposite_directions": "opposite" in s.kinds, "asks_centre": "asks_place" not in s.kinds,
                    "asked_fact_flipped": not s.facts[asked].text.endswith(f"the {centre}."),
                    "wrong_answer": None if p == s.label else
                    "the asked place" if wrong == asked_place else
                    "the other fact's place" if wrong in stated else "a place not stated",
                })
    frame = pd.DataFrame(rows).assign(checkpoint=checkpoint, n_segments=segments, dtype="bfloat16")
    frame.to_parquet(out)
    print(f"{frame['correct'].sum()} of {len(frame)} right; wrong answers: "
          f"{frame['wrong_answer'].value_counts().to_dict()}")
    print(frame.groupby(["opposite_directions", "asks_centre"])["correct"].agg(["mean", "count"]))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *map(int, sys.argv[3:]))
