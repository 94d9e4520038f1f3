"""Write a split of a task to parquet (atomically), with its resolved config next to it as JSON."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from rmt_lab.io import write_json, write_parquet
from rmt_lab.tasks.sample import TaskGenerator


def split_frame(generator: TaskGenerator, split: str, n: int, start: int = 0) -> pd.DataFrame:
    """One row per sample: its tokens (int32 list), answer, label and ground-truth positions."""
    rows = []
    for index in range(start, start + n):
        s = generator.sample(split, index)
        rows.append(
            {
                "task": s.task,
                "split": s.split,
                "index": s.index,
                "input_ids": s.tokens().numpy().astype("int32"),
                "n_tokens": s.n_tokens,
                "segment_size": s.segment_size,
                "label": s.label,
                "answer": s.answer,
                "question": s.question.text,
                "question_start": s.question.start,
                "facts": [f.text for f in s.facts],
                "fact_starts": [f.start for f in s.facts],
                "fact_stops": [f.stop for f in s.facts],
                "fact_segments": [f.segments[0] for f in s.facts],  # segment of each fact's first token
            }
        )
    return pd.DataFrame(rows)


def export_split(generator: TaskGenerator, split: str, n: int, out: str | os.PathLike, start: int = 0) -> Path:
    """Write samples start..start+n-1 of `split` to `out` (parquet) and `out` with suffix .json
    (resolved config, noise source and fingerprint). Returns the parquet path."""
    out = Path(out)
    write_parquet(out, split_frame(generator, split, n, start))
    write_json(
        out.with_suffix(".json"),
        {
            "config": generator.config.to_dict(),
            "split": split,
            "start": start,
            "n": n,
            "noise_source": generator.noise.source,
            "noise_fingerprint": generator.noise.fingerprint,
        },
    )
    return out
