"""Memory probing (beyond the report): how long does the answer survive in memory?

A linear probe (multinomial logistic regression) is trained, for each segment, on the memory state
after that segment to decode the answer. Accuracy well above chance after the fact segment, and how
it decays with distance from the fact, says where and for how long the information is held. Where a
task's facts have parts (reasoning: each fact's subject place, direction word and object place), each part
of each fact is probed too, by distance from that fact's own segment (`probe_targets`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor


ANSWER = "answer"  # the probe target every task has: its answer, from the last fact's segment on


def collect_memory_states(model, samples: Sequence, batch_size: int = 16) -> dict:
    """Memory after every segment for task samples (objects with segments(), facts, label, n_segments).

    Returns states (N, S, M, d) float32, labels (N,), fact_segment (N,): the segment of each sample's
    last fact token (where the memory must have stored everything it needs), and targets
    (`memory_targets`).
    """
    if not samples:
        raise ValueError("collect_memory_states needs at least one sample")
    states = []
    with torch.no_grad():
        for i in range(0, len(samples), batch_size):
            chunk = samples[i : i + batch_size]
            segments = (torch.stack(seg) for seg in zip(*(s.segments() for s in chunk)))
            out = model.stream(segments, n_segments=chunk[0].n_segments, keep=("memory",))
            states.append(torch.stack([r["memory"].float() for r in out.segments], 1))  # (b, S, M, d)
    targets = memory_targets(samples)
    return {
        "states": torch.cat(states),
        "labels": targets[ANSWER]["labels"],
        "fact_segment": targets[ANSWER]["fact_segment"],
        "targets": targets,
    }


def memory_targets(samples: Sequence) -> dict[str, dict]:
    """What a probe decodes from the memory of task samples, each from its own fact's segment on: name ->
    labels (N,), fact_segment (N,), n_classes. "answer" comes from the last fact; a task whose facts have
    parts (`TaskSpec.fact_parts`) adds "fact <k> <part>" for its k-th fact in text order."""
    from rmt_lab.tasks import NUM_CLASSES, get_task

    columns: dict[str, dict[str, list]] = {}

    def add(name: str, label: int, segment: int, n_classes: int) -> None:
        target = columns.setdefault(name, {"labels": [], "fact_segment": [], "n_classes": n_classes})
        target["labels"].append(label)
        target["fact_segment"].append(segment)

    for s in samples:
        add(ANSWER, s.label, max(seg for span in s.facts for seg in span.segments), NUM_CLASSES)
        in_text = sorted(s.facts, key=lambda span: span.start)
        for k, (span, parts) in enumerate(zip(in_text, get_task(s.task).fact_parts(tuple(f.text for f in in_text))), 1):
            for part, (label, n_classes) in parts.items():
                add(f"fact {k} {part}", label, span.segments[-1], n_classes)
    if any(len(t["labels"]) != len(samples) for t in columns.values()):
        raise ValueError("the samples' facts do not all have the same parts: probe one task at a time")
    return {name: {"labels": torch.tensor(t["labels"]), "fact_segment": torch.tensor(t["fact_segment"]),
                   "n_classes": t["n_classes"]} for name, t in columns.items()}


def _fit_predict(x_train: Tensor, y_train: Tensor, x_test: Tensor, n_classes: int, l2: float, steps: int) -> Tensor:
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    linear = torch.nn.Linear(x_train.shape[1], n_classes)
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    opt = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(x_train), y_train) + l2 * linear.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return linear(x_test).argmax(-1)


def probe_memory(states: Tensor, labels: Tensor, fact_segment: Tensor | None = None, n_classes: int | None = None,
                 train_fraction: float = 0.5, l2: float = 1e-3, steps: int = 100, seed: int = 0) -> pd.DataFrame:
    """Per segment, train a linear probe on memory states (N, S, M, d) to decode `labels` (N,).

    Returns one row per (segment, distance) over held-out samples: segment, distance (segment minus the
    sample's fact segment; the segment itself without `fact_segment`), accuracy, n (test samples),
    chance (1 / n_classes), n_train.
    """
    states = torch.as_tensor(states).float()
    labels = torch.as_tensor(labels).long()
    if states.dim() != 4 or states.shape[0] != labels.shape[0]:
        raise ValueError(f"states must be (N, segments, M, d) with N = len(labels); got {tuple(states.shape)} and "
                         f"{tuple(labels.shape)} labels")
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction={train_fraction} must be in (0, 1)")
    n, n_seg = states.shape[:2]
    n_classes = int(n_classes or int(labels.max()) + 1)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_train = int(round(n * train_fraction))
    if n_train < 2 or n - n_train < 1:
        raise ValueError(f"{n} samples are too few to train and test a probe")
    train, test = order[:n_train], order[n_train:]
    fact = torch.as_tensor(fact_segment).long() if fact_segment is not None else None
    rows = []
    for s in range(n_seg):
        x = states[:, s].reshape(n, -1)
        correct = (_fit_predict(x[train], labels[train], x[test], n_classes, l2, steps) == labels[test]).numpy()
        distance = (s - fact[test]).numpy() if fact is not None else np.full(len(test), s)
        for d in np.unique(distance):
            hit = correct[distance == d]
            rows.append({"segment": s, "distance": int(d), "accuracy": float(hit.mean()), "n": int(hit.size),
                         "chance": 1.0 / n_classes, "n_train": n_train})
    return pd.DataFrame(rows)


def probe_targets(states: Tensor, targets: dict[str, dict], **kwargs) -> pd.DataFrame:
    """`probe_memory` for each of `targets` (`memory_targets`), in one table with a `target` column;
    `kwargs` go to `probe_memory`."""
    return pd.concat([probe_memory(states, t["labels"], t["fact_segment"], n_classes=t["n_classes"], **kwargs)
                      .assign(target=name) for name, t in targets.items()], ignore_index=True)
