"""A seeded in-RAM `rmt_lab.trace.Trace` of any size, built through the Trace API (no model run), for the
explorer's tests and its browser benchmark (a MiniLM-scale segment: 522 positions, 12 heads)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from rmt_lab.trace.names import hook_name
from rmt_lab.trace.store import SUMMARIES_FILE, WRITTEN_FILE, Trace


def synthetic_trace(n_positions: int = 522, n_mem: int = 10, layers: int = 2, heads: int = 12,
                    map_segments: tuple[int, ...] = (0, 1), n_segments: int = 4, batch: int = 1,
                    seed: int = 0) -> Trace:
    """Layout per segment: [CLS] [mem 0..n_mem-1] [SEP] tok... [SEP]; sample b has a fact at content offsets 3, 4
    of segment b % n_segments. Rows are softmaxes of seeded logits sharpened so each row has a few strong keys
    (like real heads), so quantization is tested on peaked and on flat weights."""
    rng = np.random.default_rng(seed)
    prefix = 1 + n_mem + 1
    content = n_positions - prefix - 1
    facts = [[(b % n_segments) * content + 3, (b % n_segments) * content + 4] for b in range(batch)]
    index = {"format_version": 1, "n_segments": n_segments, "batch": batch, "facts": facts, "prefix_len": prefix,
             "num_mem_tokens": n_mem, "layout": "encoder", "config": {}, "tensors": {}, "segments": {},
             "model": {"backbone": "synthetic", "n_layers": layers, "n_heads": heads, "num_mem_tokens": n_mem}}
    tensors = {}
    for s in map_segments:
        labels = ["[CLS]", *(f"[mem {i}]" for i in range(n_mem)), "[SEP]",
                  *(f"s{s}t{i}" for i in range(content)), "[SEP]"]
        index["segments"][str(s)] = {
            "layers": list(range(layers)), "heads": list(range(heads)), "n_positions": n_positions,
            "lengths": [content] * batch, "starts": [s * content] * batch,
            "has_fact": [any(s * content <= p < (s + 1) * content for p in facts[b]) for b in range(batch)],
            "labels": [labels] * batch,
        }
        for layer in range(layers):
            logits = rng.standard_normal((batch, heads, n_positions, n_positions)).astype(np.float32) * 3.0
            maps = torch.softmax(torch.from_numpy(logits), dim=-1)
            name = hook_name(s, layer)
            tensors[name] = maps
            index["tensors"][name] = {"file": None, "shape": list(maps.shape), "dtype": "float32"}
    # summaries of every segment (maps kept or not), vectorized so a 4,096-segment timeline builds in a moment:
    # memory reads, writes and writes precisely in a segment with a fact and retains elsewhere
    metrics = ["read_content", "write_content", "retain", "write_precision"]
    seg, b, layer, head, k = (v.ravel() for v in np.meshgrid(np.arange(n_segments), np.arange(batch),
                                                             np.arange(layers), np.arange(heads),
                                                             np.arange(len(metrics)), indexing="ij"))
    fact = (seg == b % n_segments)
    high = np.where(k == 2, ~fact, fact)
    rows = {"segment": seg, "sample": b, "layer": layer, "head": head, "slot": np.full(seg.size, -1),
            "metric": np.asarray(metrics)[k], "value": np.where(high, rng.uniform(0.5, 0.9, seg.size),
                                                                 rng.uniform(0.0, 0.4, seg.size)),
            "has_fact": fact}
    summaries = pd.DataFrame(rows)
    summaries["metric"] = summaries["metric"].astype("category")
    return Trace(index, tensors=tensors, tables={SUMMARIES_FILE: summaries, WRITTEN_FILE: pd.DataFrame()})
