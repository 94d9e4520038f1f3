"""The report's Figure 3 data: FLOPs versus input length, full attention against the RMT, OPT family.

Bulatov et al. 2023, Figure 3: FLOPs relative to one 512-token forward pass, for OPT models with
full attention and for an RMT with segment 512 on the same model, from 512 to 2,048,000 tokens.

Choices (stated here, repeated in the rows):
- RMT: 512 content tokens per segment plus 10 memory tokens (the report's memory size) read at the
  start and 10 written at the end, as OPT is a decoder: 532 positions per segment, 4000 segments at
  2,048,000 tokens. A last partial segment (e.g. at 32,000 tokens) is counted at its own length.
- Head "lm": both methods put vocab logits on every content token, so both do the same
  language-modelling work and the logits cancel out of the comparison; memory tokens get none.
- Full attention past OPT's 2048 positions extrapolates the formula to a model with longer position
  tables (as the report does); such rows carry extrapolated=True.
- Forward pass only (the report's choice); `mode="train"` gives 3x, relative to the same forward.
- FLOP columns are float64: counts past 2^63 (OPT-175B, full attention, 2M tokens: 2.05e19) do not
  fit int64. The analytic counts are exact integers before that conversion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import pandas as pd

from rmt_lab.bench.flops import (
    HEADS, MODES, TERMS, full_attention_flops, memory_positions, require_choice, require_positive, rmt_flops,
    segment_lengths, total,
)
from rmt_lab.bench.machine import machine_description
from rmt_lab.bench.measured import PassCounter
from rmt_lab.bench.shapes import OPT_MODELS, known_model_names, model_config, shape_from_config
from rmt_lab.config import ConfigError

# Log-spaced: powers of two up to 16384, then 32,000 x 2^k up to 2,048,000 (the report's panels
# split at 32,000 and end at 2,048,000 = 4000 segments of 512).
FIGURE3_LENGTHS: tuple[int, ...] = (
    512, 1024, 2048, 4096, 8192, 16384, 32_000, 64_000, 128_000, 256_000, 512_000, 1_024_000, 2_048_000,
)
KEY_COLUMNS = ["model", "method", "tokens", "segment_len", "num_mem", "batch", "head", "mode"]
# Two models at two lengths: what `rmt-lab bench all --quick` counts, in well under a second.
QUICK = {"models": ("opt-125m", "opt-1.3b"), "lengths": (512, 32_000), "ratio_tokens": 32_000}


@dataclass(frozen=True)
class FlopsSweepConfig:
    models: tuple[str, ...] = OPT_MODELS  # all nine public OPT sizes (the report plots five of them)
    lengths: tuple[int, ...] = FIGURE3_LENGTHS  # input lengths in tokens, each at least one segment
    segment_len: int = 512  # the report's RMT segment (content tokens)
    num_mem: int = 10  # the report's memory size
    batch: int = 1  # FLOPs scale linearly with it; relative FLOPs do not depend on it
    head: Literal["none", "lm", "cls"] = "lm"  # logits on every content token in both methods
    mode: Literal["forward", "train"] = "forward"  # the report counts the forward pass
    reference_tokens: int = 512  # relative_flops = flops / one full-attention forward over this many tokens
    ratio_tokens: int = 2_048_000  # the length of the full / RMT ratio table
    measure: bool = False  # also count every point with FlopCounterMode on meta models (about a minute)

    def __post_init__(self) -> None:
        unknown = [m for m in self.models if m not in known_model_names()]
        if unknown:
            raise ConfigError(f"unknown model(s) {unknown} in the sweep; known models: {known_model_names()}")
        if not self.models or not self.lengths:
            raise ConfigError("FlopsSweepConfig needs at least one model and one length")
        for name in ("segment_len", "num_mem", "batch", "reference_tokens", "ratio_tokens"):
            require_positive(f"FlopsSweepConfig.{name}", getattr(self, name))
        for tokens in self.lengths:
            require_positive("FlopsSweepConfig.lengths item", tokens)
        short = [t for t in self.lengths if t < self.segment_len]
        if short:
            raise ConfigError(f"length(s) {short} are shorter than one segment of {self.segment_len} tokens")
        if self.ratio_tokens not in self.lengths:
            raise ConfigError(f"ratio_tokens={self.ratio_tokens} is not among the lengths {list(self.lengths)}")
        require_choice("FlopsSweepConfig.head", self.head, HEADS)
        require_choice("FlopsSweepConfig.mode", self.mode, MODES)


def _previous_measurements(previous: pd.DataFrame | None) -> dict[tuple, float]:
    if previous is None or "measured_flops" not in previous:
        return {}
    done = previous.dropna(subset=["measured_flops"])
    return {tuple(row[KEY_COLUMNS]): row["measured_flops"] for _, row in done.iterrows()}


def flops_sweep(config: FlopsSweepConfig = FlopsSweepConfig(), *, previous: pd.DataFrame | None = None,
                progress: bool = False) -> pd.DataFrame:
    """One tidy row per (model, method in {full, rmt}, tokens): FLOPs, their breakdown, relative FLOPs.

    `measured_flops` holds FlopCounterMode's count of the point on meta-device models, taken when
    `config.measure` is set; measurements already in `previous` (an earlier output of this function)
    are carried over rather than repeated, so a sweep resumes. NaN where not measured.
    """
    known = _previous_measurements(previous)
    rows = []
    jobs = [(name, tokens) for name in config.models for tokens in config.lengths]
    if progress:
        from tqdm.auto import tqdm

        jobs = tqdm(jobs, desc="flops", unit="point")
    counter, counter_model = None, None  # one model's meta models at a time
    common = dict(segment_len=config.segment_len, num_mem=config.num_mem, batch=config.batch,
                  head=config.head, mode=config.mode)
    for name, tokens in jobs:
        hf_config = model_config(name)
        shape = shape_from_config(hf_config)
        reference = total(full_attention_flops(shape, config.reference_tokens, config.batch, head=config.head))
        methods = {
            "full": full_attention_flops(shape, tokens, config.batch, head=config.head, mode=config.mode,
                                         extrapolate=True),
            "rmt": rmt_flops(shape, tokens, config.segment_len, config.num_mem, config.batch, head=config.head,
                             mode=config.mode),
        }
        for method, breakdown in methods.items():
            row = dict(model=name, method=method, tokens=tokens, **common)
            rmt = method == "rmt"
            row["segments"] = len(segment_lengths(tokens, config.segment_len)) if rmt else 1
            row["positions_per_pass"] = config.segment_len + memory_positions(shape, config.num_mem) if rmt else tokens
            row["extrapolated"] = not rmt and tokens > shape.max_positions
            row["flops"] = float(total(breakdown))
            row["relative_flops"] = total(breakdown) / reference
            row.update({f"flops/{term}": float(breakdown[term]) for term in TERMS})
            key = tuple(row[c] for c in KEY_COLUMNS)
            if config.measure and key not in known:
                if counter_model != name:
                    counter, counter_model = PassCounter(hf_config, batch=config.batch, mode=config.mode), name
                counted = (counter.rmt(tokens, config.segment_len, config.num_mem, config.head) if rmt
                           else counter.full_attention(tokens, config.head))
                known[key] = float(counted["total"])
            row["measured_flops"] = known.get(key, math.nan)  # NaN: not measured (yet)
            rows.append(row)
    frame = pd.DataFrame(rows)
    for column, value in machine_description().items():
        frame[column] = value
    return frame


def flops_ratio_table(frame: pd.DataFrame, tokens: int = 2_048_000) -> pd.DataFrame:
    """Per model: full-attention FLOPs, RMT FLOPs and their ratio at `tokens` (Figure 3's headline)."""
    at = frame[frame["tokens"] == tokens]
    if at.empty:
        raise ConfigError(f"no rows at {tokens} tokens; lengths present: {sorted(frame['tokens'].unique())}")
    wide = at.pivot(index="model", columns="method", values="flops")
    order = [m for m in frame["model"].unique() if m in wide.index]  # keep the sweep's (size) order
    wide = wide.loc[order]
    table = pd.DataFrame({
        "model": order,
        "tokens": tokens,
        "full_flops": wide["full"].to_numpy(),
        "rmt_flops": wide["rmt"].to_numpy(),
    })
    table["full_over_rmt"] = table["full_flops"] / table["rmt_flops"]
    machine = at.drop_duplicates("model").set_index("model").loc[order]
    for column in machine_description():
        table[column] = machine[column].to_numpy()
    return table


def flops_report(frame: pd.DataFrame, ratio: pd.DataFrame) -> str:
    """What `rmt-lab bench flops` prints of a sweep (`flops_sweep`) and its ratio table (`flops_ratio_table`)."""
    first = frame.iloc[0]
    lines = [f"{first['mode']} FLOPs, full attention / RMT (segment {first['segment_len']}, {first['num_mem']} memory "
             f"tokens, head {first['head']}) at {ratio['tokens'].iloc[0]:,} tokens:"]
    shown = ratio[["model", "full_flops", "rmt_flops", "full_over_rmt"]]
    lines.append(shown.to_string(index=False, formatters={
        "full_flops": "{:.3e}".format, "rmt_flops": "{:.3e}".format, "full_over_rmt": "{:,.1f}".format,
    }))
    if frame["measured_flops"].notna().all():
        worst = (frame["measured_flops"] / frame["flops"] - 1).abs().max()
        lines.append(f"measured (FlopCounterMode, meta device) vs analytic: largest relative difference {worst:.2e}")
    return "\n".join(lines)
