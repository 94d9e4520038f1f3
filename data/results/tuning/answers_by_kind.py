"""Where a reasoning model's long-evaluation answers go right: by question kind and by where the last fact sits.

Usage: python data/results/tuning/answers_by_kind.py RUN_DIR [MIN_SEGMENTS] [LATE_SEGMENTS]

Reads RUN_DIR/long_eval_samples.parquet (a row per test sample and length) at lengths of at least
MIN_SEGMENTS segments (default 1), regenerates each sample's facts from its index (no tokens are drawn) and
prints the right answers among questions whose answer is the centre place or another place, and among
samples whose last fact sits in the final LATE_SEGMENTS (default 32) segments or earlier.
"""

import json
import sys
from pathlib import Path

import pandas as pd

from rmt_lab.tasks import TaskConfig, TaskGenerator
from rmt_lab.train.evaluate import samples_path, with_fact_positions


def main(run_dir: str, min_segments: int = 1, late: int = 32) -> None:
    run = Path(run_dir)
    task = TaskConfig.from_dict(json.loads((run / "config.json").read_text())["task"])
    samples = pd.read_parquet(samples_path(run / "long_eval.parquet"))
    samples = with_fact_positions(samples[samples["n_segments"] >= min_segments], task)
    samples["asks_place"] = [
        "asks_place" in TaskGenerator(task.at_segments(int(n))).sample("test", int(i)).kinds
        for n, i in zip(samples["n_segments"], samples["index"])
    ]
    samples["late_fact"] = samples["fact_gap"] < late
    for column in ("asks_place", "late_fact"):
        print(samples.groupby(column)["correct"].agg(right="sum", samples="count", share="mean"), "\n")


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:]))
