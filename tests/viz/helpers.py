"""Small tables and a small trace of the shapes rmt_lab's results have, for the figure and widget tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

TASKS = ("memorize", "detect_memorize", "reasoning")


def flops_table() -> pd.DataFrame:
    rows = []
    for model, scale in (("opt-125m", 1.0), ("opt-1.3b", 0.7), ("opt-175b", 0.4)):
        for tokens in (512, 2048, 8192, 32_000, 128_000, 2_048_000):
            full = (tokens / 512) * (1 + scale * tokens / 4096)
            rows.append(dict(model=model, method="full", tokens=tokens, segment_len=512, mode="forward",
                             relative_flops=full, extrapolated=tokens > 2048))
            rows.append(dict(model=model, method="rmt", tokens=tokens, segment_len=512, mode="forward",
                             relative_flops=1.03 * tokens / 512, extrapolated=False))
    return pd.DataFrame(rows)


def generalization_table(tasks=TASKS, trained=range(1, 4), evaluated=range(1, 6)) -> pd.DataFrame:
    rows = [dict(task=t, trained_segments=n, eval_segments=m, accuracy=1.0 if m <= n else 1 / 6 + 0.1 * n,
                 n_samples=32, split="test") for t in tasks for n in trained for m in evaluated]
    return pd.DataFrame(rows)


def long_eval_table(tasks=TASKS) -> pd.DataFrame:
    rows = []
    for i, t in enumerate(tasks):
        for n in (64, 256, 1024, 4096):
            rows.append(dict(task=t, tokens=n * 499, n_segments=n, accuracy=0.9 - 0.1 * i, n_samples=16,
                             seconds=1.0, tokens_per_s=1000.0, peak_mib=560.0 + i, device="cpu",
                             memory_source="peak RSS (fresh process)", trained_segments=7))
    return pd.DataFrame(rows)


def memory_table() -> pd.DataFrame:
    rows = []
    for mode in ("forward", "train"):
        for tokens in (1000, 2000, 4000, 8000):
            rows.append(dict(method="rmt", attn="sdpa", mode=mode, bptt_depth=-1, tokens=tokens, status="ok",
                             peak_mib=560.0, tokens_per_s=600.0, memory_metric="peak_rss", backbone="minilm",
                             device="cpu"))
            status = "ok" if tokens < 4000 else ("oom" if tokens == 4000 else "skipped")
            rows.append(dict(method="full", attn="eager", mode=mode, bptt_depth=-1, tokens=tokens, status=status,
                             peak_mib=600.0 * tokens / 1000 if status == "ok" else np.nan,
                             tokens_per_s=300.0 if status == "ok" else np.nan, memory_metric="peak_rss",
                             backbone="minilm", device="cpu"))
    return pd.DataFrame(rows)


def metrics_table() -> pd.DataFrame:
    rows = []
    step = 0
    for stage in (1, 2, 3):
        for k in range(1, 11):
            step += 1
            rows.append(dict(kind="train", stage=stage, n_segments=stage, step=k, global_step=step,
                             loss=2.0 / (k + stage), accuracy=np.nan))
            if k % 5 == 0:
                rows.append(dict(kind="val", stage=stage, n_segments=stage, step=k, global_step=step, loss=np.nan,
                                 accuracy=min(1.0, 0.3 * k / 5 + 0.2 * stage)))
    return pd.DataFrame(rows)


def probe_table() -> pd.DataFrame:
    rows = []
    for segment in range(4):
        for distance in range(-1, 3):
            rows.append(dict(segment=segment, distance=distance, accuracy=0.2 if distance < 0 else 0.9 - 0.1 * distance,
                             n=8, chance=1 / 6, n_train=16))
    return pd.DataFrame(rows)


class FakeTrace:
    """A 4-segment, 2-sample encoder trace with the reading interface of rmt_lab.trace.Trace.

    Layout per segment: [CLS] [mem 0..3] [SEP] t0..t7 [SEP] (14 positions); 2 layers, 2 heads.
    Sample 0 has facts at segments 0 and 2 (the report's Figure 6 sample), sample 1 at segment 1 only.
    Memory rows attend to the fact tokens where there are facts, to their own previous state
    elsewhere (a diagonal), and [CLS] reads the memory in the last segment; layer 1 does it, layer 0 is uniform.
    """

    M, N, LAYERS, HEADS, SEGMENTS, BATCH = 4, 8, 2, 2, 4, 2
    PREFIX = 1 + 4 + 1
    FACTS = [[1, 2, 17, 18], [11]]  # content positions (segment = position // 8)

    def __init__(self, segments=None):
        self.index = {"facts": self.FACTS, "prefix_len": self.PREFIX, "num_mem_tokens": self.M, "layout": "encoder",
                      "model": {"n_layers": self.LAYERS, "n_heads": self.HEADS, "num_mem_tokens": self.M,
                                "backbone": "fake"}}
        self.n_segments, self.batch = self.SEGMENTS, self.BATCH
        self.map_segments = list(range(self.SEGMENTS)) if segments is None else list(segments)
        self._summaries = self._make_summaries()

    def has_fact(self, segment, sample):
        return any(segment * self.N <= p < (segment + 1) * self.N for p in self.FACTS[sample])

    def segment_info(self, segment):
        if segment not in self.map_segments:
            raise KeyError(f"segment {segment} kept no full maps; kept segments: {self.map_segments}")
        return {"layers": list(range(self.LAYERS)), "heads": list(range(self.HEADS)), "n_positions": self.L,
                "lengths": [self.N] * self.BATCH, "starts": [segment * self.N] * self.BATCH,
                "has_fact": [self.has_fact(segment, b) for b in range(self.BATCH)],
                "labels": [self.labels(segment, b) for b in range(self.BATCH)]}

    @property
    def L(self):
        return self.PREFIX + self.N + 1

    def labels(self, segment, sample=0):
        return ["[CLS]"] + [f"[mem {i}]" for i in range(self.M)] + ["[SEP]"] + [
            f"w{segment}_{i}" for i in range(self.N)] + ["[SEP]"]

    def pattern(self, segment, layer):
        L = self.L
        maps = np.full((self.BATCH, self.HEADS, L, L), 1.0 / L, dtype=np.float32)
        if layer == 1:
            for b in range(self.BATCH):
                facts = [self.PREFIX + p - segment * self.N for p in self.FACTS[b] if segment * self.N <= p < (segment + 1) * self.N]
                for i in range(self.M):
                    row = np.full(L, 0.02 / L, dtype=np.float32)
                    if facts:
                        row[facts] += 0.98 / len(facts)
                    else:
                        row[1 + i] += 0.98
                    maps[b, :, 1 + i] = row
                if segment == self.SEGMENTS - 1:
                    row = np.full(L, 0.1 / L, dtype=np.float32)
                    row[1 : 1 + self.M] += 0.9 / self.M
                    maps[b, :, 0] = row
        return maps

    def memory_states(self):
        rng = np.random.default_rng(0)
        states = np.cumsum(rng.normal(size=(self.SEGMENTS, self.BATCH, self.M, 6)), axis=0)
        return states.astype(np.float32)

    def _make_summaries(self):
        rows = []
        for s in range(self.SEGMENTS):
            for b in range(self.BATCH):
                fact = self.has_fact(s, b)
                for layer in range(self.LAYERS):
                    for h in range(self.HEADS):
                        strong = layer == 1
                        values = {
                            "read_content": 0.1, "read_answer": 0.9 if strong and s == self.SEGMENTS - 1 else 0.1,
                            "retain": 0.9 if strong and not fact else 0.1, "write_content": 0.9 if strong and fact else 0.2,
                            "write_span": 0.85 if strong and fact else 0.05, "write_fact": 0.9 if strong and fact else 0.0,
                            "retain_diag": 0.9 if strong and not fact else 0.05,
                        }
                        values["write_precision"] = values["write_span"] / values["write_content"]
                        for metric, value in values.items():
                            rows.append(dict(segment=s, sample=b, layer=layer, head=h, slot=-1, metric=metric,
                                             value=value, has_fact=fact))
                for slot in range(self.M):
                    for metric, value in (("mem_norm", 5.0 + s), ("mem_delta_l2", 2.0 if fact else 0.3),
                                          ("mem_delta_cos", 0.5 if fact else 0.98)):
                        rows.append(dict(segment=s, sample=b, layer=-1, head=-1, slot=slot, metric=metric,
                                         value=value + 0.1 * slot, has_fact=fact))
                for metric, value in (("mem_norm", 5.0 + s), ("mem_delta_l2", 2.0 if fact else 0.3),
                                      ("mem_delta_cos", 0.5 if fact else 0.98), ("mem_eff_rank", 2.5)):
                    rows.append(dict(segment=s, sample=b, layer=-1, head=-1, slot=-1, metric=metric, value=value,
                                     has_fact=fact))
        frame = pd.DataFrame(rows)
        frame["metric"] = frame["metric"].astype("category")
        return frame

    @property
    def summaries(self):
        return self._summaries

    @property
    def written(self):
        rows = []
        for s in range(self.SEGMENTS):
            for b in range(self.BATCH):
                for layer in range(self.LAYERS):
                    for slot in range(self.M):
                        for rank in range(2):
                            offset = rank + slot
                            rows.append(dict(segment=s, sample=b, layer=layer, slot=slot, rank=rank, offset=offset,
                                             position=s * self.N + offset, token_id=1000 + offset,
                                             mass=0.5 / (rank + 1), is_fact=self.has_fact(s, b) and rank == 0))
        return pd.DataFrame(rows)
