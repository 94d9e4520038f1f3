"""Evaluation: accuracy, the generalization matrix (report Figure 5), and long streaming evaluation
to millions of tokens with peak memory per length (report Figure 1).
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from rmt_lab.bench.machine import device_name
from rmt_lab.process import peak_rss_mib, run_in_process
from rmt_lab.io import write_parquet
from rmt_lab.model import RecurrentWrapper, Segment
from rmt_lab.runtime import follow_thread_budget
from rmt_lab.stats import wilson_interval
from rmt_lab.tasks import TaskConfig, TaskGenerator, collate, iter_batch_segments


# Compute dtypes of evaluation: bfloat16 runs the backbone under autocast (matmuls in bf16: 2.1-2.4x the
# fp32 speed on a Xeon with AMX); weights, layer norms and so the memory carried between segments stay fp32.
EVAL_DTYPES = {"float32": None, "bfloat16": torch.bfloat16}


def compute_dtype(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    """The context that evaluates in `dtype` (a key of EVAL_DTYPES) on `device`."""
    if dtype not in EVAL_DTYPES:
        raise ValueError(f"unknown evaluation dtype {dtype!r}; allowed: {list(EVAL_DTYPES)}")
    low = EVAL_DTYPES[dtype]
    return torch.autocast(device.type, dtype=low) if low is not None else contextlib.nullcontext()


def accuracy(
    model: RecurrentWrapper,
    task: TaskConfig,
    split: str,
    n_samples: int,
    batch_size: int = 64,
    accelerator=None,
    dtype: str = "float32",
    carry_memory: bool = True,
) -> float:
    """Share of `n_samples` samples of `split` whose answer the model classifies right.

    Under several processes each takes samples rank::world and the counts are summed.
    `carry_memory=False`: every segment starts from the initial memory (the no-recurrence ablation).
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
            follow_thread_budget()
            items = []
            for i in mine[start : start + batch_size]:
                s = gen.sample(split, i)
                items.append({"input_ids": s.tokens(), "label": s.label, "answer": s.answer, "index": i})
            batch = collate(items)
            with compute_dtype(device, dtype):
                out = model(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                            carry_memory=carry_memory)
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
    out: str | Path | None = None,
    dtype: str = "float32",
    stages: Iterable[int] | None = None,
    carry_memory: bool = True,
) -> pd.DataFrame:
    """Every stage checkpoint (trained on N segments) evaluated on M segments for M in `eval_segments`.

    Default M = 1 .. 2 x the largest N (the report used 1..15 for stages 1..7); `stages`: only these
    checkpoints. `carry_memory=False` evaluates without recurrence (each segment sees the initial memory).
    Returns a tidy table: task, trained_segments, eval_segments, accuracy, n_correct, n_samples and the
    95% Wilson interval (ci_low, ci_high). With `out`, each cell is written there as it is measured and
    cells already there with `n_samples` samples are kept: an interrupted matrix resumes cell by cell,
    and a stage measured earlier needs its weights no more.
    """
    config = json.loads((Path(run_dir) / "config.json").read_text())
    checkpoints = stage_checkpoints(run_dir)
    lengths = list(eval_segments) if eval_segments else list(range(1, 2 * max(checkpoints) + 1))
    if stages is not None:
        unknown = sorted(set(stages) - set(checkpoints))
        if unknown:
            raise ValueError(f"no stage checkpoints {unknown} in {run_dir}; available: {sorted(checkpoints)}")
        checkpoints = {n: folder for n, folder in checkpoints.items() if n in set(stages)}
    task = TaskConfig.from_dict(config["task"])
    rows = []
    if out is not None and Path(out).exists():
        rows = [r for r in pd.read_parquet(out).to_dict("records") if r["n_samples"] == n_samples]
    done = {(r["trained_segments"], r["eval_segments"]) for r in rows}
    bar = tqdm(total=len(checkpoints) * len(lengths), initial=len(done), desc=f"generalization {task.task}")
    for trained, folder in checkpoints.items():
        todo = [m for m in lengths if (trained, m) not in done]
        if not todo:
            continue
        model = RecurrentWrapper.from_pretrained(folder).merge_adapters()
        for m in todo:
            t = task.at_segments(m)
            acc = accuracy(model, t, split, n_samples, batch_size, dtype=dtype, carry_memory=carry_memory)
            low, high = wilson_interval(acc, n_samples)
            rows.append({"task": task.task, "trained_segments": trained, "eval_segments": m, "accuracy": acc,
                         "n_correct": round(acc * n_samples), "n_samples": n_samples, "ci_low": float(low),
                         "ci_high": float(high), "split": split, "dtype": dtype, "carry_memory": carry_memory})
            if out is not None:
                write_parquet(out, pd.DataFrame(rows))
            bar.update()
    bar.close()
    # Rows of stages whose weights are no longer here stay: a clone keeps the table, not every stage's weights.
    frame = pd.DataFrame(rows)
    return frame[frame["eval_segments"].isin(lengths)].sort_values(["trained_segments", "eval_segments"]).reset_index(
        drop=True)


def long_accuracy(
    checkpoint: str | Path,
    task: TaskConfig,
    indices: list[int],
    batch_size: int,
    parts: str | Path,
    split: str = "test",
    compile: str = "",
    device: str | None = None,
    dtype: str = "float32",
) -> None:
    """Streaming evaluation of samples `indices` at one length, in this process.

    Each batch's per-sample outcomes go to their own parquet file in `parts` as soon as the batch is
    done (so a run killed mid-length loses only the batch in flight), with the seconds it took and
    this process's peak memory so far, and a line to stderr says so: at millions of tokens a batch
    runs for an hour, longer than anyone watches a bar that moves once per length. `compile`: a
    torch.compile mode for the backbone (`RecurrentWrapper.compile_backbone`, weights frozen; "" =
    eager), counted in the first batch's time.
    """
    model = RecurrentWrapper.from_pretrained(checkpoint).eval().merge_adapters()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device)
    if compile:
        model.compile_backbone(compile, freeze=True)
    gen = TaskGenerator(task)
    with torch.inference_mode():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            samples = [gen.sample(split, i) for i in chunk]
            t0 = time.perf_counter()
            with compute_dtype(device, dtype):
                out = model.stream(_followed(seg.to(device) for seg in iter_batch_segments(samples)),
                                   n_segments=task.n_segments)
            predicted = out.logits.argmax(-1).cpu().tolist()
            seconds = time.perf_counter() - t0
            frame = pd.DataFrame({
                "index": chunk, "label": [s.label for s in samples], "predicted": predicted,
                "seconds": seconds / len(chunk),  # each sample's share of its batch
                "batch_size": len(chunk), "peak_mib": _peak_mib(device), "device": str(device),
                "hardware": device_name(device), "compile": compile, "dtype": dtype,
            })
            frame["correct"] = frame["label"] == frame["predicted"]
            write_parquet(Path(parts) / f"b{chunk[0]:07d}.parquet", frame)
            print(f"{task.task}, {task.n_segments:,} segments: batch {start // batch_size + 1} of "
                  f"{math.ceil(len(indices) / batch_size)} in this process done, {int(frame['correct'].sum())} of "
                  f"{len(chunk)} right, {seconds:,.0f} s", file=sys.stderr, flush=True)


def _followed(segments: Iterator[Segment]) -> Iterator[Segment]:
    """`segments`, taking up a changed thread budget between them (a batch at 2M tokens runs for an hour)."""
    for seg in segments:
        follow_thread_budget()
        yield seg


def _peak_mib(device: torch.device) -> float:
    """This process's peak memory: CUDA allocations on a GPU, peak resident set (ru_maxrss, KiB) on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mib()


def samples_path(out: str | Path) -> Path:
    """The per-sample outcomes kept next to a long-evaluation table `out` (one row per length)."""
    out = Path(out)
    return out.with_name(f"{out.stem}_samples.parquet")


def parts_dir(out: str | Path, n_segments: int) -> Path:
    """Where the batches of a length in progress wait, to be merged once every sample is done."""
    out = Path(out)
    return out.with_name(f"{out.stem}_parts") / f"n{n_segments}"


def long_evaluation(
    checkpoint: str | Path,
    task: TaskConfig,
    lengths: Iterable[int],
    out: str | Path,
    n_samples: int | dict[int, int] = 16,
    batch_size: int = 16,
    split: str = "test",
    compile: str = "",
    trained_segments: int | None = None,
    retention_loss: float = 0.0,
    accelerator=None,
    dtype: str = "float32",
) -> pd.DataFrame:
    """Accuracy with its 95% Wilson interval, speed and peak memory at each length (in segments).

    `n_samples`: per length, or {n_segments: samples}. Writes `samples_path(out)` (a row per sample:
    index, label, prediction) as lengths finish, and `out` (a row per length, rows of other lengths
    kept) once all are done, so `out` existing means the evaluation finished. Each length runs in a fresh
    process, so its peak memory is its own. Resumable at batch grain: a length's finished batches wait
    in `parts_dir(out, n)` until all its samples are done, and samples already in the table are not run
    again (raising `n_samples` runs only the new ones). Under several processes (`torchrun`,
    `accelerate launch`), each takes samples rank::world of those left, as in training, and the main
    process merges the batches: the same accuracies as one process. `trained_segments` (the curriculum
    stage of `checkpoint`) and `retention_loss` (the weight of the loss that held its memory still over
    noise in training, `OptimConfig.retention_loss`) tell models apart and are recorded in each row.
    `dtype`: a key of EVAL_DTYPES.
    """
    from accelerate import PartialState

    # Without CUDA, accelerate forms a multi-process (gloo) group from torchrun's variables only when cpu=True.
    state = accelerator.state if accelerator is not None else PartialState(cpu=not torch.cuda.is_available())
    out = Path(out)
    lengths = list(lengths)
    count = n_samples if isinstance(n_samples, dict) else dict.fromkeys(lengths, n_samples)
    for n in tqdm(lengths, desc=f"long evaluation {task.task}", disable=not state.is_main_process):
        t = task.at_segments(n)
        parts = parts_dir(out, n)
        done = set(_sample_rows(out, n)["index"]) | set(_part_rows(parts)["index"])
        mine = [i for i in range(count[n]) if i not in done][state.process_index :: state.num_processes]
        if mine:
            device = f"cuda:{state.local_process_index}" if torch.cuda.is_available() else "cpu"
            result = run_in_process("rmt_lab.train.evaluate:_long_accuracy_part", {
                "checkpoint": str(checkpoint), "task": t.to_dict(), "indices": mine, "batch_size": batch_size,
                "parts": str(parts), "split": split, "compile": compile, "device": device, "dtype": dtype},
                inherit_output=True)
            if result["status"] != "ok":
                raise RuntimeError(f"long evaluation at {n} segments failed: {result['reason']}")
        state.wait_for_everyone()
        if state.is_main_process:
            _merge(out, t, parts, state.num_processes)
        state.wait_for_everyone()
    rows = [{**_summary_row(out, task.at_segments(n), trained_segments), "retention_loss": retention_loss}
            for n in lengths]
    frame = pd.DataFrame(rows)
    if state.is_main_process:
        table = pd.read_parquet(out) if out.exists() else pd.DataFrame({"n_segments": []})
        table = pd.concat([table[~table["n_segments"].isin(lengths)], frame], ignore_index=True)
        write_parquet(out, table.sort_values("n_segments").reset_index(drop=True))
    state.wait_for_everyone()
    return frame


def _sample_rows(out: Path, n_segments: int) -> pd.DataFrame:
    path = samples_path(out)
    rows = pd.read_parquet(path) if path.exists() else pd.DataFrame({"n_segments": [], "index": []})
    return rows[rows["n_segments"] == n_segments]


def _part_rows(parts: Path) -> pd.DataFrame:
    files = sorted(parts.glob("b*.parquet")) if parts.is_dir() else []
    return pd.concat([pd.read_parquet(f) for f in files]) if files else pd.DataFrame({"index": []})


def _merge(out: Path, task: TaskConfig, parts: Path, processes: int) -> None:
    """Move a length's finished batches into the per-sample table, then drop them."""
    new = _part_rows(parts)
    new = new[~new["index"].isin(_sample_rows(out, task.n_segments)["index"])]  # merged before an interruption
    if len(new):
        new = new.assign(task=task.task, tokens=task.n_tokens, n_segments=task.n_segments, processes=processes)
        path = samples_path(out)
        old = pd.read_parquet(path) if path.exists() else None
        write_parquet(path, pd.concat([old, new], ignore_index=True) if old is not None else new)
    if parts.is_dir():
        shutil.rmtree(parts)


def _summary_row(out: Path, task: TaskConfig, trained_segments: int | None) -> dict:
    """One length's row of the long-evaluation table, from its per-sample outcomes."""
    rows = _sample_rows(out, task.n_segments)
    k, n = int(rows["correct"].sum()), len(rows)
    low, high = wilson_interval(k / n, n)
    seconds = float(rows["seconds"].sum())
    device = str(rows["device"].iloc[-1])
    return {
        "task": task.task, "tokens": task.n_tokens, "n_segments": task.n_segments, "accuracy": k / n,
        "n_correct": k, "n_samples": n, "ci_low": float(low), "ci_high": float(high), "seconds": seconds,
        "tokens_per_s": task.n_tokens * n / seconds,  # per process
        "peak_mib": float(rows["peak_mib"].max()), "device": device,
        # the CPU's model or the GPU's name; "" for samples of runs that did not record it
        "hardware": ",".join(sorted(rows["hardware"].dropna().unique())) if "hardware" in rows else "",
        "compile": str(rows["compile"].iloc[-1]),
        "dtype": ",".join(sorted(rows["dtype"].unique())),  # one, unless a resumed length changed it
        "processes": int(rows["processes"].max()), "trained_segments": trained_segments,
        "memory_source": "cuda max_memory_allocated" if device.startswith("cuda") else "peak RSS (fresh process)",
    }


def with_fact_positions(samples: pd.DataFrame, task: TaskConfig, split: str = "test") -> pd.DataFrame:
    """Per-sample long-evaluation outcomes (`samples_path`) with where each sample's facts sit, to tell
    forgetting (a fact written early and lost) from failing to write (a fact arriving late, after
    thousands of noise segments, and never stored).

    Adds `first_fact_segment` and `last_fact_segment` (0-based) and `fact_gap` (segments from the last
    fact's segment to the last segment). Positions are regenerated from `task` (each length's config)
    and the sample indices, which fix every sample: only the layout is drawn, no tokens.
    """
    rows = []
    for n, group in samples.groupby("n_segments"):
        gen = TaskGenerator(task.at_segments(int(n)))
        for i in group["index"]:
            segments = [f.segments[0] for f in gen.sample(split, int(i)).facts]
            rows.append({"n_segments": n, "index": i, "first_fact_segment": min(segments),
                         "last_fact_segment": max(segments)})
    placed = samples.merge(pd.DataFrame(rows), on=["n_segments", "index"], how="left", validate="one_to_one")
    placed["fact_gap"] = placed["n_segments"] - 1 - placed["last_fact_segment"]
    return placed


def _long_accuracy_part(checkpoint: str, task: dict, indices: list[int], batch_size: int, parts: str, split: str,
                        compile: str, device: str, dtype: str) -> None:
    """`long_accuracy` with JSON arguments: what `long_evaluation` runs in a fresh process per length."""
    long_accuracy(checkpoint, TaskConfig.from_dict(task), indices, batch_size, parts, split, compile, device, dtype)


# ------------------------------------------------------------------- what `rmt-lab eval` prints of each table
def generalization_report(frame: pd.DataFrame) -> str:
    """Accuracy of a generalization matrix, trained segments (rows) by evaluated segments (columns)."""
    return frame.pivot(index="trained_segments", columns="eval_segments", values="accuracy").round(2).to_string()


def ablation_report(frame: pd.DataFrame) -> str:
    """The no-recurrence control: accuracy and its 95% interval at each length."""
    lines = [f"stage-{frame['trained_segments'].iloc[0]} model without recurrence (accuracy, 95% interval):"]
    lines += [f"  {row.eval_segments:>3} segments: {row.accuracy:.3f} [{row.ci_low:.3f}, {row.ci_high:.3f}]"
              for row in frame.itertuples()]
    return "\n".join(lines)


def long_report(frame: pd.DataFrame) -> str:
    """The long-evaluation table: accuracy with its interval, peak memory and speed at each length."""
    return frame[["tokens", "n_segments", "accuracy", "n_samples", "ci_low", "ci_high", "peak_mib",
                  "tokens_per_s"]].to_string(index=False)
