"""The curriculum trainer: an explicit loop of setup / train / save_checkpoint / cleanup.

Stages follow the report: train on `stages[0]` segments, then `stages[1]`, ... each stage starting
from the previous stage's weights with a fresh AdamW and a linear warmup/decay schedule. A stage
ends after `max_steps`, or earlier (after `min_steps`) once validation accuracy reaches
`advance_accuracy` or stops improving for `patience` evaluations.

Accelerate supplies devices, mixed precision and processes: under `torchrun` or `accelerate launch`
every process takes its share (rows rank::world) of the same global batch, so the loss curve is that
of one process on the whole batch. Batches are a pure function of (stage, step): sample indices
step*B .. step*B+B-1 of the task's train split, which makes resumed runs identical to uninterrupted ones.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed

from rmt_lab.io import write_json, write_parquet
from rmt_lab.runtime import follow_thread_budget
from rmt_lab.model import RecurrentWrapper
from rmt_lab.tasks import NoiseStream, TaskGenerator, collate
from rmt_lab.train.checkpoint import (
    CheckpointError, latest_checkpoint, load_checkpoint, load_weights, save_checkpoint, stage_name, step_name,
)
from rmt_lab.train.config import ExperimentConfig

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.parquet"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class Callback:
    """Hooks into the loop; every method is optional."""

    def on_stage_start(self, trainer: Trainer, n_segments: int) -> None: ...
    def on_log(self, trainer: Trainer, row: dict) -> None: ...
    def on_eval(self, trainer: Trainer, row: dict) -> None: ...
    def on_stage_end(self, trainer: Trainer, n_segments: int) -> None: ...
    def on_end(self, trainer: Trainer) -> None: ...


class ProgressBar(Callback):
    """A tqdm bar per stage (notebook-friendly via tqdm.auto) with loss, accuracy (and the slot heads', when
    taught; memory's change per noise segment, when penalized), stage and tokens/s."""

    def __init__(self) -> None:
        self.bar = None

    def on_stage_start(self, trainer: Trainer, n_segments: int) -> None:
        from tqdm.auto import tqdm

        if trainer.accelerator.is_main_process:
            stage = trainer.state["stage"]
            self.bar = tqdm(
                total=trainer.config.curriculum.max_steps, initial=trainer.state["step"],
                desc=f"stage {stage + 1}/{len(trainer.stages)} ({n_segments} seg)", leave=True,
            )

    def on_log(self, trainer: Trainer, row: dict) -> None:
        if self.bar is not None:
            self.bar.n = row["step"]
            extra = {} if math.isnan(row["slot_accuracy"]) else {"slot_acc": f"{row['slot_accuracy']:.2f}"}
            if not math.isnan(row["memory_change"]):
                extra["mem_change"] = f"{row['memory_change']:.1e}"
            self.bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['accuracy']:.2f}", **extra,
                                 tok_s=f"{row['tokens_per_s']:.0f}", refresh=False)
            self.bar.refresh()

    def on_eval(self, trainer: Trainer, row: dict) -> None:
        if self.bar is not None:
            self.bar.set_postfix(val_acc=f"{row['accuracy']:.3f}", refresh=True)

    def on_stage_end(self, trainer: Trainer, n_segments: int) -> None:
        self.on_end(trainer)

    def on_end(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# What a training step reports to its log window. A checkpoint's window holds them by name, or, in older
# checkpoints, as a list in this order that may stop short of the later fields.
STEP_STATS = ("loss", "accuracy", "tokens", "seconds", "slot_loss", "slot_accuracy", "memory_change")


def step_stats(entry: dict | list) -> dict[str, float]:
    """A log-window entry as a dict of every STEP_STATS field, NaN for those an older checkpoint lacks. A step
    whose batch had no memory for the slot heads (slot accuracy NaN) has no slot loss either: its term is a
    0 that would pull the window's mean down."""
    named = entry if isinstance(entry, dict) else dict(zip(STEP_STATS, entry, strict=False))
    stats = {name: named.get(name, math.nan) for name in STEP_STATS}
    if math.isnan(stats["slot_accuracy"]):
        stats["slot_loss"] = math.nan
    return stats


def lr_at(step: int, config: ExperimentConfig) -> float:
    """Linear warmup over warmup_steps, then linear decay to 0 at max_steps (or constant)."""
    o, total = config.optim, config.curriculum.max_steps
    if o.warmup_steps and step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    if not o.decay:
        return o.lr
    return o.lr * max(0.0, (total - step) / max(1, total - o.warmup_steps))


class Trainer:
    """Runs one experiment's curriculum into `run_dir`."""

    def __init__(
        self,
        config: ExperimentConfig,
        run_dir: str | Path,
        callbacks: list[Callback] | None = None,
        resume: bool = False,
    ):
        self.config = config
        self.run_dir = Path(run_dir)
        self.callbacks = [ProgressBar()] if callbacks is None else list(callbacks)
        self.resume = resume
        self.stages = config.curriculum.stages
        self.rows: list[dict] = []
        self.state: dict[str, Any] = {}

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        c = self.config
        ddp = DistributedDataParallelKwargs(find_unused_parameters=c.rmt.bptt_depth != -1)
        # Without CUDA, accelerate forms a multi-process (gloo) group from torchrun's variables only when cpu=True.
        self.accelerator = Accelerator(
            mixed_precision=c.run.mixed_precision, kwargs_handlers=[ddp], cpu=not torch.cuda.is_available()
        )
        set_seed(c.run.seed)
        self._check_run_dir()
        # A model folder is tokenized like its tasks; a ready backbone always uses rmt_lab's own tokenizer.
        tokenizer = None if c.backbone_is_ready else c.task.tokenizer
        model = RecurrentWrapper.from_backbone(c.backbone, c.rmt, dropout=c.dropout, tokenizer=tokenizer)
        model.checkpoint_segments = c.run.gradient_checkpointing
        self.model = model.to(self.accelerator.device)
        self.state = {"stage": 0, "step": 0, "global_step": 0, "best": -1.0, "bad_evals": 0, "wall": 0.0, "done": [],
                      "window": []}
        self._new_stage_optimizer()
        latest = latest_checkpoint(self.checkpoint_root) if self.resume else None
        if latest is not None:
            self.state = load_checkpoint(latest, self.model, self.optimizer)
            self._load_metrics(upto=self.state["global_step"])
        elif c.init is not None:
            load_weights(Path(c.init).expanduser(), self.model)
        self.ddp_model, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)

    @property
    def checkpoint_root(self) -> Path:
        return self.run_dir / "checkpoints"

    def _check_run_dir(self) -> None:
        path = self.run_dir / CONFIG_FILE
        if path.exists():
            import json

            # Through the dataclass, so that settings added since the run began read as their defaults.
            diff = self.config.experiment_difference(ExperimentConfig.from_dict(json.loads(path.read_text())))
            if diff is not None:
                raise CheckpointError(f"{self.run_dir} holds a run of another config ({diff}); use a new run folder")
            if not self.resume and latest_checkpoint(self.checkpoint_root) is not None:
                raise CheckpointError(f"{self.run_dir} already holds a run: pass resume=True (--resume) or a new folder")
        if self.accelerator.is_main_process:
            write_json(path, self.config.to_dict())

    def _new_stage_optimizer(self) -> None:
        c = self.config.optim
        gate = self.model.cell.memory_gate
        gated = {id(p) for p in gate.parameters()} if gate is not None else set()
        # a frozen backbone keeps no moments
        trained = [p for p in self.model.parameters() if p.requires_grad and id(p) not in gated]
        groups = [{"params": trained, "lr_scale": 1.0}]
        if gate is not None:
            groups.append({"params": list(gate.parameters()), "lr_scale": c.gate_lr_scale,
                           "lr": c.lr * c.gate_lr_scale})
        self.optimizer = torch.optim.AdamW(groups, lr=c.lr, weight_decay=c.weight_decay)

    def _load_metrics(self, upto: int) -> None:
        path = self.run_dir / METRICS_FILE
        if path.exists():
            frame = pd.read_parquet(path)
            self.rows = frame[frame["global_step"] <= upto].to_dict("records")

    def generator(self, n_segments: int) -> TaskGenerator:
        return TaskGenerator(self.config.task_at(n_segments))

    # ------------------------------------------------------------------ training
    def train(self) -> pd.DataFrame:
        if not self.state:
            self.setup()
        acc = self.accelerator
        while self.state["stage"] < len(self.stages):
            n_seg = self.stages[self.state["stage"]]
            gen = self.generator(n_seg)
            for cb in self.callbacks:
                cb.on_stage_start(self, n_seg)
            while True:
                started = time.perf_counter()
                stats = self._train_step(gen)
                self.state["step"] += 1
                self.state["global_step"] += 1
                # steps since the last metric row; in the state so that a resumed run logs the same rows
                self.state["window"].append(stats)
                step = self.state["step"]
                if step % self.config.run.log_every == 0:
                    self._log_train(self.state["window"], n_seg)
                    self.state["window"] = []
                stage_over = step >= self.config.curriculum.max_steps
                if step % self.config.run.eval_every == 0 or stage_over:
                    stage_over = self._evaluate_and_decide(n_seg) or stage_over
                self.state["wall"] += time.perf_counter() - started  # training + evaluation, not checkpoints
                if stage_over:
                    self._end_stage(n_seg)
                    break
                if step % self.config.run.checkpoint_every == 0:
                    self.save_checkpoint()
        for cb in self.callbacks:
            cb.on_end(self)
        acc.wait_for_everyone()
        return self.metrics()

    def _train_step(self, gen: TaskGenerator) -> dict[str, float]:
        """One optimizer step; returns its entry of the log window (STEP_STATS)."""
        acc, c = self.accelerator, self.config
        follow_thread_budget()
        start = time.perf_counter()
        lr = lr_at(self.state["step"], c)
        for group in self.optimizer.param_groups:  # a group restored from a checkpoint without the key: scale 1
            group["lr"] = lr * group.get("lr_scale", 1.0)
        batch = self._batch(gen, "train", self.state["step"] * c.optim.batch_size, c.optim.batch_size)
        memory = self._noise_memory(gen, len(batch["labels"]))
        self.ddp_model.train()
        slots, retention = c.optim.slot_loss > 0, c.optim.retention_loss > 0
        with acc.autocast():
            out = self.ddp_model(batch["input_ids"], batch["attention_mask"], labels=batch["labels"], memory=memory,
                                 keep=("memory",) if slots or retention else None)
        smoothing = c.optim.label_smoothing
        loss = F.cross_entropy(out.logits, batch["labels"], label_smoothing=smoothing) if smoothing else out.loss
        nan = torch.tensor(math.nan, device=acc.device)
        slot_term, slot_accuracy, change, measured = nan, math.nan, nan, False
        if slots:
            slot_term, slot_accuracy = self._slot_loss(out.segments, batch["slot_targets"], batch["carried"])
            loss = loss + c.optim.slot_loss * slot_term
        if retention:
            change, measured = self._memory_change(out.segments, batch["carried"])
            loss = loss + c.optim.retention_loss * change
        if not torch.isfinite(loss.detach()).all():
            self._diverged(float(loss.detach()))
        acc.backward(loss)
        if c.optim.clip_value:
            acc.clip_grad_value_(self.model.parameters(), c.optim.clip_value)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        correct = (out.logits.argmax(-1) == batch["labels"]).float().mean()
        # Each process's slot and retention terms are their share of the global mean times the process count,
        # so the mean over processes is the global one.
        stats = acc.reduce(torch.stack([loss.detach().float(), correct, slot_term.detach().float(),
                                        change.detach().float()]), reduction="mean")
        tokens = int(batch["attention_mask"].sum()) * acc.num_processes
        return {"loss": float(stats[0]), "accuracy": float(stats[1]), "tokens": tokens,
                "seconds": time.perf_counter() - start, "slot_loss": float(stats[2]), "slot_accuracy": slot_accuracy,
                "memory_change": float(stats[3]) if measured else math.nan}

    def _slot_loss(self, segments: list[dict], targets: torch.Tensor, carried: torch.Tensor
                   ) -> tuple[torch.Tensor, float]:
        """Mean cross-entropy of the slot heads over every (segment, sample) whose memory carries all the facts
        on (`carried`: (n_segments, batch) bool) and every slot, 0 for a batch with none; and the share of those
        heads' answers that are right over the global batch (NaN for none), which the loss alone hides: a head
        that always names the commonest class has a low loss and reads nothing.

        The sum starts from every head parameter times 0: each then receives a gradient even in a batch whose
        memory never carries all the facts, as several processes' gradient reduction waits for all of them."""
        acc = self.accelerator
        total, count = sum(p.sum() for p in self.model.slot_heads.parameters()) * 0.0, 0
        right = torch.zeros((), device=acc.device)  # summed on the device: no host sync per head
        for carrying, kept in zip(carried, segments):
            if carrying.any():
                for k, logits in enumerate(self.model.slot_logits(kept["memory"][carrying])):
                    total = total + F.cross_entropy(logits.float(), targets[carrying, k], reduction="sum")
                    right = right + (logits.argmax(-1) == targets[carrying, k]).sum()
                count += int(carrying.sum()) * targets.shape[1]
        # The mean is over the whole global batch: each process divides by every process's count, times the
        # process count that the gradient average divides by, so several processes follow one process's loss.
        right, count = acc.reduce(torch.stack([right.float(), torch.tensor(float(count), device=acc.device)]),
                                  reduction="sum")
        accuracy = float(right / count) if count > 0 else math.nan
        return total * acc.num_processes / count.clamp(min=1), accuracy

    def _memory_change(self, segments: list[dict], carried: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """Mean over the noise segments after the facts of |memory after n - memory after n - 1|^2 /
        |memory after n - 1|^2, over the global batch as `_slot_loss` takes it, and whether the global batch had
        such a segment (0 if not). `carried`: (n_segments, batch) bool, from the last fact's segment on. The
        first segment after it is left out: there the write still settles (a trained detect_memorize model's
        memory moves by 0.056 there, 2e-4 a segment later on), and holding it still would fight the write. The
        earlier memory is the target, detached: the segment's update should leave it as it is.

        Without such a segment the term is every memory times 0, still in the graph, so that several processes'
        gradient reduction waits for none of them."""
        acc = self.accelerator
        total, count = sum(s["memory"].sum() for s in segments) * 0.0, 0
        for n in range(2, len(segments)):
            pair = carried[n - 2] & carried[n - 1] & carried[n]
            if pair.any():
                before = segments[n - 1]["memory"][pair].detach().float()
                after = segments[n]["memory"][pair].float()
                ratio = (after - before).pow(2).sum((1, 2)) / before.pow(2).sum((1, 2)).clamp(min=1e-12)
                total = total + ratio.sum()
                count += int(pair.sum())
        count = acc.reduce(torch.tensor(float(count), device=acc.device), reduction="sum")
        return total * acc.num_processes / count.clamp(min=1), bool(count > 0)

    def _noise_memory(self, gen: TaskGenerator, batch_size: int) -> torch.Tensor | None:
        """The memory this step's batch starts from: None (fresh) without a noise prefix, else the memory left by
        0..noise_prefix segments of training noise run in evaluation mode without gradient. One noise run a step,
        its memory shared by the batch's samples: a forward at batch 1 per noise segment makes prefixes of
        hundreds of segments affordable, and the steps between them vary it. The count depends on the seed and
        the step only (every process runs as many segments), the tokens on the process as well, so a resumed run
        draws the same prefixes."""
        most = self.config.curriculum.noise_prefix
        if not most:
            return None
        seed, step = self.config.run.seed, self.state["global_step"]
        n = int(np.random.default_rng([seed, step]).integers(0, most + 1))
        if n == 0:
            return None
        size = gen.config.segment_size
        noise = NoiseStream(gen.noise, "train", np.random.default_rng([seed, step, self.accelerator.process_index]))
        tokens = torch.from_numpy(np.concatenate(list(noise.read(n * size))).astype(np.int64))
        segments = tokens.view(n, 1, size).to(self.accelerator.device)
        self.model.eval()
        with torch.no_grad(), self.accelerator.autocast():
            memory = self.model.stream(segments, check=False).memory
        return memory.expand(batch_size, -1, -1).contiguous()

    def _batch(self, gen: TaskGenerator, split: str, first: int, size: int) -> dict:
        """Rows rank::world of the global batch [first, first + size) of `split`."""
        acc = self.accelerator
        indices = range(first + acc.process_index, first + size, acc.num_processes)
        items, samples = [], []
        for i in indices:
            s = gen.sample(split, i)
            samples.append(s)
            items.append({"input_ids": s.tokens(), "label": s.label, "answer": s.answer, "index": i})
        batch = collate(items)
        optim = self.config.optim
        if optim.slot_loss > 0:  # what each memory token should name
            batch["slot_targets"] = torch.tensor([gen.spec.slot_targets(tuple(f.text for f in s.facts))
                                                  for s in samples])  # (batch, slots)
        if optim.slot_loss > 0 or optim.retention_loss > 0:  # the segments whose memory holds every fact
            batch["carried"] = torch.tensor([[n in s.carried_segments for s in samples]
                                             for n in range(gen.n_segments)])  # (n_segments, batch)
        return {k: v.to(acc.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def _log_train(self, window: list, n_seg: int) -> None:
        window = [step_stats(w) for w in window]
        loss = sum(w["loss"] for w in window) / len(window)
        accuracy = sum(w["accuracy"] for w in window) / len(window)
        tokens_per_s = sum(w["tokens"] for w in window) / max(sum(w["seconds"] for w in window), 1e-9)
        extra = {}
        for name in ("slot_loss", "slot_accuracy", "memory_change"):  # NaN in steps without them: mean of the rest
            values = [w[name] for w in window if not math.isnan(w[name])]
            if values:
                extra[name] = sum(values) / len(values)
        row = self._row("train", n_seg, loss=loss, accuracy=accuracy, tokens_per_s=tokens_per_s, **extra)
        for cb in self.callbacks:
            cb.on_log(self, row)

    def _row(self, kind: str, n_seg: int, **values: float) -> dict:
        row = {
            "kind": kind,
            "stage": self.state["stage"] + 1,
            "n_segments": n_seg,
            "step": self.state["step"],
            "global_step": self.state["global_step"],
            "loss": math.nan,
            "accuracy": math.nan,
            "lr": lr_at(max(self.state["step"] - 1, 0), self.config),
            "tokens_per_s": math.nan,
            "slot_loss": math.nan,  # the slot heads' cross-entropy and accuracy (train rows with optim.slot_loss)
            "slot_accuracy": math.nan,
            "memory_change": math.nan,  # relative squared change of memory per noise segment after the facts
            "wall_time": self.state["wall"],
            "processes": self.accelerator.num_processes,
            "mixed_precision": self.config.run.mixed_precision,
            **values,
        }
        self.rows.append(row)
        return row

    def evaluate(self, n_segments: int, split: str = "validation", n_samples: int | None = None) -> float:
        """Accuracy on `n_samples` of `split` at `n_segments`, sharded over processes."""
        from rmt_lab.train.evaluate import accuracy

        n = n_samples or self.config.run.eval_samples
        return accuracy(
            self.model, self.config.task_at(n_segments), split, n, self.config.run.eval_batch_size, self.accelerator
        )

    def _evaluate_and_decide(self, n_seg: int) -> bool:
        value = self.evaluate(n_seg)
        row = self._row("val", n_seg, accuracy=value)
        for cb in self.callbacks:
            cb.on_eval(self, row)
        cur = self.config.curriculum
        if value > self.state["best"]:
            self.state["best"], self.state["bad_evals"] = value, 0
        else:
            self.state["bad_evals"] += 1
        if self.state["step"] < cur.min_steps:
            return False
        return value >= cur.advance_accuracy or bool(cur.patience and self.state["bad_evals"] >= cur.patience)

    def _end_stage(self, n_seg: int) -> None:
        self.state["done"].append({"n_segments": n_seg, "steps": self.state["step"], "best": self.state["best"]})
        self.state.update(stage=self.state["stage"] + 1, step=0, best=-1.0, bad_evals=0, window=[])
        self._new_stage_optimizer()
        self.optimizer = self.accelerator.prepare(self.optimizer)
        # The stage's weights with the next stage's fresh optimizer: both what evaluations load and a resume point.
        self.save_checkpoint(stage_name(n_seg))
        for cb in self.callbacks:
            cb.on_stage_end(self, n_seg)

    def stage_dir(self, n_segments: int) -> Path:
        return self.checkpoint_root / stage_name(n_segments)

    def _diverged(self, value: float) -> None:
        self.write_metrics()
        latest = latest_checkpoint(self.checkpoint_root)
        raise TrainingDiverged(
            f"loss is {value} at stage {self.state['stage'] + 1}, step {self.state['step']}: stopping. "
            f"Last good checkpoint: {latest or 'none yet'} (resume from it with a lower lr or clip value)"
        )

    # ------------------------------------------------------------------ saving
    def save_checkpoint(self, name: str | None = None) -> None:
        """A resumable checkpoint named `name` (default: after the global step)."""
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            name = name or step_name(self.state["global_step"])
            save_checkpoint(self.checkpoint_root, name, self.model, self.optimizer, self.state)
            self.write_metrics()
            self.write_summary()

    def metrics(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    def write_metrics(self) -> None:
        if self.rows:
            write_parquet(self.run_dir / METRICS_FILE, self.metrics())

    def write_summary(self) -> None:
        c = self.config
        lines = [
            f"# Run {c.name}", "",
            f"Task `{c.task.task}`, backbone `{c.backbone}`, {c.rmt.num_mem_tokens} memory tokens, "
            f"{c.rmt.segment_size} content tokens per segment, curriculum {list(self.stages)}.", "",
            "| stage | segments | steps | best validation accuracy |", "|---|---|---|---|",
        ]
        for i, done in enumerate(self.state["done"], 1):
            lines.append(f"| {i} | {done['n_segments']} | {done['steps']} | {done['best']:.3f} |")
        lines += ["", f"Training wall time: {self.state['wall']:.0f} s. Files: `config.json`, `metrics.parquet`, "
                  "`checkpoints/stage-N/` (weights after each stage, a resume point), `checkpoints/LATEST` (latest resume "
                  "point)."]
        from rmt_lab.io import atomic_path

        with atomic_path(self.run_dir / "README.md") as tmp:
            tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def cleanup(self) -> None:
        self.accelerator.wait_for_everyone()
        self.accelerator.free_memory()


def run_experiment(config: ExperimentConfig, run_dir: str | Path, resume: bool = False,
                   callbacks: list[Callback] | None = None) -> pd.DataFrame:
    """setup, train, cleanup: the whole curriculum into `run_dir`; returns the metrics table."""
    trainer = Trainer(config, run_dir, callbacks=callbacks, resume=resume)
    trainer.setup()
    try:
        return trainer.train()
    finally:
        trainer.cleanup()
