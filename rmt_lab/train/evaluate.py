"""Evaluation: accuracy, the generalization matrix (report Figure 5), and long streaming evaluation
to millions of tokens with peak memory per length (report Figure 1).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from rmt_lab.bench.machine import peak_rss_mib
from rmt_lab.model import RecurrentWrapper
from rmt_lab.tasks import TaskConfig, TaskGenerator, collate, iter_batch_segments


def accuracy(
    model: RecurrentWrapper,
    task: TaskConfig,
    split: str,
    n_samples: int,
    batch_size: int = 64,
    accelerator=None,
) -> float:
    """Share of `n_samples` samples of `split` whose answer the model classifies right.

    Under several processes each takes samples rank::world and the counts are summed.
    """
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    device = next(model.parameters()).device
    gen = TaskGenerator(task)
    mine = list(range(rank, n_samples, world))
    correct = 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(mine), batch_size):
            items = []
            for i in mine[start : start + batch_size]:
                s = gen.sample(split, i)
                items.append({"input_ids": s.tokens(), "label": s.label, "answer": s.answer, "index": i})
            batch = collate(items)
            out = model(batch["input_ids"].to(device), batch["attention_mask"].to(device))
            correct += int((out.logits.argmax(-1).cpu() == batch["labels"]).sum())
    model.train(was_training)
    counts = torch.tensor([correct, len(mine)], device=device)
    if accelerator is not None and world > 1:
        counts = accelerator.reduce(counts, reduction="sum")
    return float(counts[0]) / max(float(counts[1]), 1.0)


def stage_checkpoints(run_dir: str | Path) -> dict[int, Path]:
    """{segments trained on: folder} of a run's curriculum stages."""
    root = Path(run_dir) / "checkpoints"
    found = {int(p.name.split("-", 1)[1]): p for p in root.glob("stage-*") if p.is_dir()}
    if not found:
        raise FileNotFoundError(f"{root} holds no stage-N checkpoints: train first (rmt-lab train)")
    return dict(sorted(found.items()))


def generalization_matrix(
    run_dir: str | Path,
    eval_segments: Iterable[int] | None = None,
    n_samples: int = 256,
    batch_size: int = 64,
    split: str = "test",
) -> pd.DataFrame:
    """Every stage checkpoint (trained on N segments) evaluated on M segments for M in `eval_segments`.

    Default M = 1 .. 2 x the largest N (the report used 1..15 for stages 1..7).
    Returns a tidy table: task, trained_segments, eval_segments, accuracy, n_samples.
    """
    config = json.loads((Path(run_dir) / "config.json").read_text())
    checkpoints = stage_checkpoints(run_dir)
    lengths = list(eval_segments) if eval_segments else list(range(1, 2 * max(checkpoints) + 1))
    task = TaskConfig.from_dict(config["task"])
    rows = []
    bar = tqdm(total=len(checkpoints) * len(lengths), desc=f"generalization {task.task}")
    for trained, folder in checkpoints.items():
        model = RecurrentWrapper.from_pretrained(folder)
        for m in lengths:
            t = TaskConfig(**{**task.to_dict(), "length": m, "unit": "segments"})
            acc = accuracy(model, t, split, n_samples, batch_size)
            rows.append({"task": task.task, "trained_segments": trained, "eval_segments": m,
                         "accuracy": acc, "n_samples": n_samples, "split": split})
            bar.update()
    bar.close()
    return pd.DataFrame(rows)


def long_accuracy(
    checkpoint: str | Path, task: TaskConfig, n_samples: int, batch_size: int, split: str = "test", compile: str = ""
) -> dict:
    """Streaming evaluation of one length in this process: accuracy, time and peak memory.

    `compile`: a torch.compile mode for the backbone (`RecurrentWrapper.compile_backbone`, weights
    frozen; "" = eager). Compilation happens on the first batch and is counted in `seconds`.
    """
    model = RecurrentWrapper.from_pretrained(checkpoint).eval()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    if compile:
        model.compile_backbone(compile, freeze=True)
    gen = TaskGenerator(task)
    correct, seconds = 0, 0.0
    with torch.inference_mode():
        for start in range(0, n_samples, batch_size):
            samples = [gen.sample(split, i) for i in range(start, min(start + batch_size, n_samples))]
            t0 = time.perf_counter()
            out = model.stream((seg.to(device) for seg in iter_batch_segments(samples)), n_segments=task.n_segments)
            seconds += time.perf_counter() - t0
            labels = torch.tensor([s.label for s in samples])
            correct += int((out.logits.argmax(-1).cpu() == labels).sum())
    return {
        "task": task.task, "tokens": task.n_tokens, "n_segments": task.n_segments, "accuracy": correct / n_samples,
        "n_samples": n_samples, "seconds": seconds, "tokens_per_s": task.n_tokens * n_samples / seconds,
        "peak_mib": _peak_mib(device), "device": str(device), "compile": compile, "memory_source":
        "cuda max_memory_allocated" if device.type == "cuda" else "peak RSS (fresh process)",
    }


def _peak_mib(device: torch.device) -> float:
    """This process's peak memory: CUDA allocations on a GPU, peak resident set (ru_maxrss, KiB) on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mib()


def long_evaluation(
    checkpoint: str | Path,
    task: TaskConfig,
    lengths: Iterable[int],
    n_samples: int = 16,
    batch_size: int = 16,
    split: str = "test",
    previous: pd.DataFrame | None = None,
    compile: str = "",
) -> pd.DataFrame:
    """Accuracy and peak memory at each length (in segments), each in a fresh process; resumable."""
    rows = [] if previous is None else previous.to_dict("records")
    done = {r["n_segments"] for r in rows}
    todo = [n for n in lengths if n not in done]
    for n in tqdm(todo, desc=f"long evaluation {task.task}"):
        t = TaskConfig(**{**task.to_dict(), "length": n, "unit": "segments"})
        args = [sys.executable, "-m", "rmt_lab.train.evaluate", "--checkpoint", str(checkpoint),
                "--task-config", json.dumps(t.to_dict()), "--samples", str(n_samples),
                "--batch-size", str(batch_size), "--split", split, "--compile", compile]
        result = subprocess.run(args, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"long evaluation at {n} segments failed:\n{result.stderr[-2000:]}")
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    return pd.DataFrame(rows).sort_values("n_segments").reset_index(drop=True)


def _main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="one long-evaluation point (used by long_evaluation)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--task-config", required=True)
    p.add_argument("--samples", type=int, required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--compile", default="")
    a = p.parse_args(argv)
    task = TaskConfig.from_dict(json.loads(a.task_config))
    print(json.dumps(long_accuracy(a.checkpoint, task, a.samples, a.batch_size, a.split, a.compile)))


if __name__ == "__main__":
    _main()
