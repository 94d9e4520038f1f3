"""How much a model's memory moves across each noise segment after its facts, in evaluation mode.

Usage: python data/results/tuning/memory_drift.py OUT.parquet CHECKPOINT [CHECKPOINT ...]

Streams the first 6 test samples of 64 segments of each checkpoint's task (its run's config.json, two folders
up) in bf16 autocast, keeps the memory after every segment and writes a row per (model, sample, segment) for
the segments from the second after the last fact's to the one before the question's: the relative squared
change |memory after n - memory after n - 1|^2 / |memory after n - 1|^2, what `optim.retention_loss`
penalizes in training. Prints each model's median and mean.
"""

import json
import sys
from pathlib import Path

import pandas as pd
import torch

from rmt_lab.io import write_parquet
from rmt_lab.model import RecurrentWrapper
from rmt_lab.tasks import TaskConfig, TaskGenerator

SAMPLES, SEGMENTS = 6, 64


def drift(checkpoint: Path) -> pd.DataFrame:
    model = RecurrentWrapper.from_pretrained(checkpoint)
    config = json.loads((checkpoint.parent.parent / "config.json").read_text())
    generator = TaskGenerator(TaskConfig.from_dict(config["task"]).at_segments(SEGMENTS))
    rows = []
    for index in range(SAMPLES):
        sample = generator.sample("test", index)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(torch.as_tensor(sample.tokens()).unsqueeze(0), keep=["memory"])
        memory = [segment["memory"].float() for segment in out.segments]
        for n in range(sample.carried_segments.start + 2, sample.carried_segments.stop):
            change = (memory[n] - memory[n - 1]).pow(2).sum() / memory[n - 1].pow(2).sum()
            rows.append({"model": str(checkpoint), "task": config["task"]["task"], "sample": index, "segment": n,
                         "relative_change": float(change)})
    return pd.DataFrame(rows)


def main(out: str, *checkpoints: str) -> None:
    table = pd.concat([drift(Path(c)) for c in checkpoints], ignore_index=True)
    write_parquet(Path(out), table)
    print(table.groupby("model", sort=False)["relative_change"].agg(["size", "median", "mean"]).to_string())


if __name__ == "__main__":
    main(*sys.argv[1:])
