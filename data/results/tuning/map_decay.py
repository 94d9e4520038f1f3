"""How long a slot-taught reasoning model's memory keeps its map by direction over noise.

Usage: python data/results/tuning/map_decay.py CHECKPOINT OUT.parquet SEGMENTS [SAMPLES]

Streams SAMPLES (default 64) test samples of the whole `reasoning` task with SEGMENTS segments through a model
trained with `optim.slot_loss` (bf16 autocast), keeps the memory after every segment and reads it with the
model's slot heads. Writes one row per (sample, segment) whose memory should carry both facts on: segments
since the first such segment, how many of the memory tokens name their place right, and whether the sample's
final answer is right. Prints the share of tokens right by distance from the facts.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from rmt_lab.model import RecurrentWrapper
from rmt_lab.tasks import TaskConfig, TaskGenerator, iter_batch_segments
from rmt_lab.train.evaluate import compute_dtype

BATCH = 16


def main(checkpoint: str, out: str, segments: int, samples: int = 64) -> None:
    run = Path(checkpoint).parent.parent
    settings = json.loads((run / "config.json").read_text())["task"]
    task = TaskConfig(**{**settings, "task": "reasoning", "subset": None, "length": segments})
    model = RecurrentWrapper.from_pretrained(checkpoint).eval()
    if not model.config.slot_classes:
        raise SystemExit(f"{checkpoint} has no slot heads: train it with optim.slot_loss")
    gen = TaskGenerator(task)
    rows = []
    with torch.inference_mode(), compute_dtype(torch.device("cpu"), "bfloat16"):
        for start in range(0, samples, BATCH):
            batch = [gen.sample("test", i) for i in range(start, min(samples, start + BATCH))]
            result = model.stream(iter_batch_segments(batch), n_segments=segments, keep=("memory",))
            right = (result.logits.argmax(-1) == torch.tensor([s.label for s in batch])).tolist()
            targets = torch.tensor([gen.spec.slot_targets(tuple(f.text for f in s.facts)) for s in batch])
            for n, kept in enumerate(result.segments):
                named = torch.stack([logits.argmax(-1) for logits in model.slot_logits(kept["memory"])], 1)
                tokens_right = (named == targets).sum(1).tolist()
                for b, s in enumerate(batch):
                    if n in s.carried_segments:
                        rows.append({"index": s.index, "segment": n, "since_facts": n - min(s.carried_segments),
                                     "tokens_right": tokens_right[b], "tokens": targets.shape[1],
                                     "answer_right": right[b]})
            print(f"{start + len(batch)} of {samples} samples", flush=True)
    frame = pd.DataFrame(rows).assign(checkpoint=checkpoint, n_segments=segments, dtype="bfloat16")
    frame.to_parquet(out)
    edges = [0, 1, 4, 16, 64, 256, 1024, 4096, 16384]
    frame["distance"] = pd.cut(frame["since_facts"], [e - 0.5 for e in edges] + [np.inf],
                               labels=[f">={e}" for e in edges])
    frame["all_right"] = frame["tokens_right"] == frame["tokens"]
    table = frame.groupby("distance", observed=True).agg(
        rows=("tokens_right", "size"), tokens_right=("tokens_right", "sum"), tokens=("tokens", "sum"),
        all_right=("all_right", "mean"))
    table["share"] = table["tokens_right"] / table["tokens"]
    print(table[["rows", "share", "all_right"]])
    answers = frame.drop_duplicates("index")["answer_right"]
    print(f"answers right: {int(answers.sum())} of {len(answers)}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *map(int, sys.argv[3:]))
