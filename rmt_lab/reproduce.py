"""`rmt-lab reproduce`: every experiment behind the figures, in order, then the figures.

A plan is a list of steps; each step is one recipe call (`rmt_lab.recipes.run_step`, in a fresh process)
and the files it makes, at the paths of `rmt_lab.catalog`. A step
whose files all exist, newer than the checkpoint it reads, is skipped (make's rule): an interrupted
reproduction continues where it stopped (a training run cut off mid-way resumes from its last
checkpoint), a retrained model has its evaluations redone, and results that need no model (the
committed benchmarks under data/results/bench/) are reused. A model not kept with the results (a
sweep's checkpoints) is not retrained while every evaluation made from it is done and recorded, as make
leaves an intermediate file unmade (`not_needed`). `--force NAME` redoes steps.

Three plans:
  quick  the `quick` training config on the three tasks, their generalization matrices, the long
         evaluation of the memorize model to 2,048,000 tokens (and of the other two to 256,000),
         a trace and a memory probe, the FLOPs table, and the figures: about 20 minutes on 2 cores.
  base   the `base` config (pretrained MiniLM with adapters, 64-token segments) on the three tasks,
         generalization on 1..15 segments at 128 samples a cell, long evaluation of every task to
         2,048,000 tokens (64 samples a length below 512,000 tokens, 16 from there) and of memorize
         at 10,240,000 tokens (4 samples), the no-recurrence control on 1..7 segments, a memory-size
         sweep (memorize trained with 1, 2, 5 and 20 memory tokens besides 10, each evaluated at
         128,000 tokens), detect_memorize and reasoning carried on to longer stages (to 64 and 32
         segments) and evaluated again, evaluations in bf16 autocast, trace, probe, figures: many
         hours on 2 CPU cores; every step resumes where it stopped.
  paper  the report's setup (`paper` config on the pretrained MiniLM, 3000 steps per stage,
         256 samples per point, long evaluation to 2,043,904 tokens on every task); meant for a GPU.
The seconds each step took are written to <results>/reproduce-<plan>.json, one file a plan, so that one
plan's run does not replace the step times another plan's estimate of the time left reads.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rmt_lab.catalog import SWEEP_TASK, SWEEP_TOKENS, command_line, path, recipe_command, run_file
from rmt_lab.io import write_json
from rmt_lab.process import run_in_process
from rmt_lab.runtime import THREADS_FILE_ENV, write_thread_budget

TASKS = ("memorize", "detect_memorize", "reasoning")
MADE_FROM = "made_from.json"  # under the results folder: each step's input digests when it last succeeded
PLANS = {  # each plan in a line: the help of rmt-lab reproduce --<plan>
    "quick": "quick config on a CPU: about 20 minutes on 2 cores",
    "base": "base config (pretrained MiniLM, adapters) on a CPU: many hours on 2 cores, resumable",
    "paper": "the report's setup on the pretrained MiniLM; meant for a GPU",
}


def _long_eval_complete(**arguments) -> bool:
    from rmt_lab.recipes import long_eval_complete

    return long_eval_complete(**arguments)


# Recipes whose output file exists before the step is over: what tells a finished one.
COMPLETE: dict[str, Callable[..., bool]] = {"eval_long": _long_eval_complete}


@dataclass(frozen=True)
class Step:
    name: str  # unique within a plan, e.g. "train memorize"
    recipe: str  # the rmt_lab.recipes function the step calls, in a fresh process
    arguments: dict[str, Any]  # its keyword arguments (JSON values)
    outputs: list[Path]  # the step is done when all of these exist and are newer than its inputs
    inputs: list[Path] = field(default_factory=list)  # made by earlier steps (a model checkpoint)
    resume: dict[str, Any] = field(default_factory=dict)  # extra arguments when `resume_from` exists
    resume_from: Path | None = None  # left by an interrupted earlier attempt (a checkpoint folder)
    clean: Path | None = None  # removed before a forced rerun (a run folder that would refuse a fresh start)
    group: str = ""  # neighbouring steps of one group may run at the same time (`jobs`)

    def key(self, results: Path) -> str:
        """The step's name in a results folder's records: its first output, relative to the folder."""
        return os.path.relpath(self.outputs[0], results) if self.outputs else self.name

    def done(self, records: dict | None = None, results: Path | None = None) -> bool:
        return (bool(self.outputs) and all(p.exists() for p in self.outputs) and self.complete()
                and not self.stale(records, results))

    def complete(self) -> bool:
        """Whether the outputs hold all the step asks for, where a recipe's output can exist half made (a long
        evaluation stopped before its last length)."""
        check = COMPLETE.get(self.recipe)
        return check is None or check(**self.arguments)

    def stale(self, records: dict | None = None, results: Path | None = None) -> bool:
        """The outputs were made from other inputs than those here now.

        `records` (`made_from(results)`): each step's input digests when it last succeeded; an input whose
        content differs from its record makes the step stale. A step without a record falls back to file
        times (some output older than some input), which a fresh clone sets in checkout order: committed
        models need the record.
        """
        made = records.get(self.key(results)) if records is not None and results is not None else None
        if made is not None:
            return any(made.get(name) != value for name, value in self.input_digests(results).items())
        made_at = [p.stat().st_mtime for p in self.inputs if p.exists()]
        have = [p.stat().st_mtime for p in self.outputs if p.exists()]
        return bool(made_at and have) and min(have) < max(made_at)

    def input_digests(self, results: Path) -> dict[str, str]:
        """{input relative to `results`: sha256 of its content} of the inputs present (a folder: all its files)."""
        return {os.path.relpath(p, results): digest(p) for p in self.inputs if p.exists()}

    def command(self, resume: bool = False) -> str:
        """The rmt-lab command line that does what the step does."""
        return command_line(recipe_command(self.recipe), {**self.arguments, **(self.resume if resume else {})})


@dataclass(frozen=True)
class PlanSettings:
    config: str  # named training configuration
    stages: int  # the last curriculum stage (segments)
    gen_samples: int  # samples per point of the generalization matrix
    long_max_tokens: dict[str, int]  # per task: the last length of the long evaluation
    long_samples: int
    long_batch: int
    probe_samples: int
    bench_all: bool = False  # measured memory and speed sweeps too, besides the FLOPs table
    gen_max_segments: int | None = None  # generalization lengths 1..this (None: 2 x stages)
    eval_dtype: str = "float32"  # compute dtype of the evaluations (rmt_lab.train.evaluate.EVAL_DTYPES)
    long_compile: str = ""  # torch.compile mode of the long evaluations' backbone ("" = eager)
    ablation_samples: int = 0  # samples per point of the no-recurrence control on 1..stages segments; 0 = none
    memory_sweep: tuple[int, ...] = ()  # memory sizes trained on `sweep_task` besides the config's own
    sweep_task: str = SWEEP_TASK
    sweep_tokens: int = SWEEP_TOKENS  # the one long length each memory size is evaluated at (a length of the main runs)
    long_samples_from: tuple[int, int] | None = None  # (tokens, samples): fewer samples at this length and above
    # Per task, one length past the main long evaluation: (tokens, samples, batch size), in its own table.
    long_beyond: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    # Curricula carried on past the last stage from the final model (ExperimentConfig.init), per task: the
    # stages, each `continued_steps` steps of `continued_batch` samples at a peak lr of `continued_lr`: the
    # model has learned the task, and half the curriculum's batch at reasoning's lr of 1e-3 risks a drop like
    # the one to 0.26 validation accuracy that lr gave in its stage 7.
    continued: dict[str, tuple[int, ...]] = field(default_factory=dict)
    continued_steps: int = 100
    continued_batch: int = 16
    continued_lr: float = 3e-4
    # Per task of `continued`, the weight of a loss that holds memory still over the noise after the facts
    # (`optim.retention_loss`), trained on from its last stage at that length: `retention_steps` steps at a peak
    # lr of `retention_lr`, without dropout (which moves memory a thousand times the drift the loss measures).
    # A 64-segment detect_memorize model drifts 2e-4 a noise segment and loses 2 of 16 facts at 2,048,000
    # tokens; 60 such steps cut the drift to 3e-5 and lose none (README).
    retention: dict[str, float] = field(default_factory=dict)
    retention_steps: int = 60
    retention_lr: float = 1e-4
    # Reasoning with its memory taught a map by direction (`optim.slot_loss`), started from `slot_init` (a model
    # under the results folder that solves 1-segment reasoning, its parity slice included): parts in order, each
    # (name, curriculum stages, config overrides), each from the one before. The question's segment learns the
    # map's lookup on 2 segments; without the map it stays at chance there. No long evaluation follows yet: the
    # chain ends at 0.445 on 7 segments (README), short of the model the long evaluation is worth hours on.
    slot_init: str = ""
    slot_chain: tuple[tuple[str, tuple[int, ...], tuple[str, ...]], ...] = ()
    # Full maps the reasoning trace keeps ({} = every layer, float32). A 6-layer, 12-head model's maps of 8 samples
    # are 55 MB in float32: its last layer (where memory writes facts and the answer reads) in float16 is 4.5 MB.
    trace_maps: dict[str, Any] = field(default_factory=dict)


SETTINGS = {
    "quick": PlanSettings(
        config="quick", stages=7, gen_samples=64,
        long_max_tokens={"memorize": 2_048_000, "detect_memorize": 256_000, "reasoning": 256_000},
        long_samples=8, long_batch=8, probe_samples=256,
    ),
    "base": PlanSettings(
        config="base", stages=7, gen_samples=128, gen_max_segments=15,
        long_max_tokens={task: 2_048_000 for task in TASKS},
        long_samples=64, long_samples_from=(512_000, 16), long_batch=16, probe_samples=4096,
        eval_dtype="bfloat16", long_compile="default", ablation_samples=128,
        memory_sweep=(1, 2, 5, 20), trace_maps={"layers": [5], "map_dtype": "float16"},
        # 160,000 segments: about an hour for 4 samples on 2 CPU cores in bf16.
        long_beyond={"memorize": (10_240_000, 4, 2)},
        # Their stage-7 models do not hold a fact over hundreds of noise segments: longer stages. A 128-segment
        # stage after detect_memorize's 64 held no longer at 1-2M tokens (README), so the plan stops at 64.
        continued={"detect_memorize": (8, 16, 32, 64), "reasoning": (8, 16, 32)},
        retention={"detect_memorize": 100.0},
        slot_init="tuning/base-reasoning-phrasing/checkpoints/stage-1",
        slot_chain=(
            ("recall-match", (2,), ('task.subset="recall_match"', "curriculum.min_steps=600",
                                    "curriculum.max_steps=600", "optim.lr=0.0005")),
            ("recall", (2,), ('task.subset="recall"', "curriculum.min_steps=300", "curriculum.max_steps=300",
                              "optim.lr=0.0005")),
            # The map learned on 2 segments does not survive a noise segment: 300 steps straight on 7 segments
            # stayed at 0.25-0.29 validation, so the whole task climbs the lengths again.
            ("whole", (2, 4, 7), ("curriculum.min_steps=100", "curriculum.max_steps=150",
                                  "curriculum.advance_accuracy=0.95", "optim.lr=0.0003", "run.eval_every=50")),
        ),
    ),
    "paper": PlanSettings(
        config="paper", stages=7, gen_samples=256,
        long_max_tokens={task: 2_043_904 for task in TASKS},
        long_samples=64, long_batch=32, probe_samples=512, bench_all=True,
    ),
}


def default_jobs(name: str) -> int:
    """Steps side by side: the CPU count up to 3 for the quick and base plans (a 1-thread training does more
    work per thread than a 2-thread one), one for the paper plan (one accelerator)."""
    return 1 if name == "paper" else min(3, os.cpu_count() or 1)


def plan(name: str, results: str | Path = "data/results", figures: str | Path = "figures") -> list[Step]:
    """The steps of plan `name` ("quick", "base" or "paper").

    Args:
        results: results folder (steps whose files exist are skipped)
        figures: folder for the figures
    """
    if name not in SETTINGS:
        raise ValueError(f"unknown plan {name!r}; plans: {list(PLANS)}")
    s = SETTINGS[name]
    results = Path(results)
    steps: list[Step] = []

    def run_of(task: str) -> Path:
        return path("config", results, config=s.config, task=task).parent

    def final(task: str) -> Path:  # the last stage's checkpoint of a task's run
        return path("stage", results, config=s.config, task=task, stage=s.stages)

    evaluation = {"dtype": s.eval_dtype}

    def long_evaluation(run: Path, task: str) -> dict[str, Any]:  # the arguments of a run's long evaluation
        return {"run_dir": str(run), "max_tokens": s.long_max_tokens[task], "samples": s.long_samples,
                "batch_size": s.long_batch,
                "samples_from": list(s.long_samples_from) if s.long_samples_from else None,
                **({"compile": s.long_compile} if s.long_compile else {}), **evaluation}

    # Trainings may run side by side; reasoning, the slowest to converge, starts first.
    for task in ("reasoning", "memorize", "detect_memorize"):
        run = run_of(task)
        steps.append(Step(f"train {task}", "train", {"config": s.config, "task": task, "run_dir": str(run)},
                          [final(task)], resume={"resume": True},
                          # any checkpoint: LATEST, or in a clone only the stage-N folder kept with the results
                          resume_from=run / "checkpoints", clean=run / "checkpoints", group="train"))
    # So may the evaluations, which read finished models; the longest one goes first.
    for task in sorted(TASKS, key=lambda t: -s.long_max_tokens[t]):
        steps.append(Step(f"long evaluation {task}", "eval_long", long_evaluation(run_of(task), task),
                          [run_file("long_eval", run_of(task))], [final(task)], group="evaluate"))
    for task, (tokens, samples, batch) in s.long_beyond.items():
        table = run_file("long_eval_beyond", run_of(task))
        steps.append(Step(f"long evaluation {task} at {tokens:,} tokens", "eval_long",
                          {"run_dir": str(run_of(task)), "min_tokens": tokens, "max_tokens": tokens, "samples": samples,
                           "batch_size": batch, "out": str(table), **evaluation},
                          [table], [final(task)], group="evaluate"))
    for task in TASKS:
        steps.append(Step(f"generalization {task}", "eval_generalization",
                          {"run_dir": str(run_of(task)), "samples": s.gen_samples, "max_segments": s.gen_max_segments,
                           **evaluation},
                          [run_file("generalization", run_of(task))], [final(task)], group="evaluate"))
    for task in TASKS if s.ablation_samples else ():
        steps.append(Step(f"no-recurrence control {task}", "eval_ablation",
                          {"run_dir": str(run_of(task)), "max_segments": s.stages, "samples": s.ablation_samples,
                           **evaluation},
                          [run_file("no_recurrence", run_of(task))], [final(task)], group="evaluate"))
    for m in s.memory_sweep:  # each memory size trained and evaluated like the main run, at one long length
        run = path("sweep_run", results, config=s.config, task=s.sweep_task, memory=m)
        stage = run / "checkpoints" / f"stage-{s.stages}"
        steps.append(Step(f"train {s.sweep_task} with {m} memory tokens", "train",
                          {"config": s.config, "task": s.sweep_task, "run_dir": str(run),
                           "overrides": [f"rmt.num_mem_tokens={m}", f"name={run.name}"]},
                          [stage], resume={"resume": True}, resume_from=run / "checkpoints",
                          clean=run / "checkpoints", group="sweep"))
        steps.append(Step(f"long evaluation {s.sweep_task} with {m} memory tokens", "eval_long",
                          {"run_dir": str(run), "min_tokens": s.sweep_tokens, "max_tokens": s.sweep_tokens,
                           "samples": s.long_samples, "batch_size": s.long_batch, **evaluation},
                          [run_file("long_eval", run)], [stage], group="sweep evaluate"))

    def trained_on(name: str, task: str, run: Path, init: Path, stages: Sequence[int], steps_each: int, lr: float,
                   overrides: Sequence[str]) -> Step:
        """Training that starts from the model `init` and runs `steps_each` steps of `continued_batch` samples
        a stage at a peak lr of `lr`: a model that has learned the task, carried on."""
        return Step(name, "train",
                    {"config": s.config, "task": task, "run_dir": str(run),
                     "overrides": [f"init={init}", f"curriculum.stages={list(stages)}",
                                   f"curriculum.min_steps={steps_each}", f"curriculum.max_steps={steps_each}",
                                   f"optim.batch_size={s.continued_batch}", f"optim.lr={lr}",
                                   # a step of 16 samples through 32 segments holds 18 GB without it
                                   "run.gradient_checkpointing=true", *overrides]},
                    [run / "checkpoints" / f"stage-{stages[-1]}"], [init], resume={"resume": True},
                    resume_from=run / "checkpoints", clean=run / "checkpoints", group="continue")

    for task, stages in s.continued.items():
        run = path("continued_run", results, config=s.config, task=task)
        longer = trained_on(f"train {task} on to {stages[-1]} segments", task, run, final(task), stages,
                            s.continued_steps, s.continued_lr, ["run.eval_every=50", f"name={run.name}-continued"])
        steps += [longer, Step(f"long evaluation {task} trained on to {stages[-1]} segments", "eval_long",
                               long_evaluation(run, task), [run_file("long_eval", run)], longer.outputs,
                               group="continue")]
        if task in s.retention:
            run = path("retention_run", results, config=s.config, task=task)
            held = trained_on(f"train {task} to hold its memory over noise", task, run, longer.outputs[0],
                              stages[-1:], s.retention_steps, s.retention_lr,
                              [f"optim.retention_loss={s.retention[task]}", "dropout=0.0", "optim.warmup_steps=5",
                               "run.eval_every=30", "run.eval_samples=128", "run.mixed_precision=bf16",
                               # 30 s a step on 2 CPU cores: a resume point every few minutes
                               "run.checkpoint_every=5", f"name={run.name}"])
            steps += [held, Step(f"long evaluation {task} holding its memory over noise", "eval_long",
                                 long_evaluation(run, task), [run_file("long_eval", run)], held.outputs,
                                 group="continue")]
    init = results / s.slot_init
    for part, stages, overrides in s.slot_chain:
        run = path("slot_run", results, config=s.config, part=part)
        stage = run / "checkpoints" / f"stage-{stages[-1]}"
        steps.append(Step(f"train reasoning's memory map: {part}", "train",
                          {"config": s.config, "task": "reasoning", "run_dir": str(run),
                           "overrides": [f"init={init}", f"curriculum.stages={list(stages)}", *overrides,
                                         "optim.slot_loss=1.0", "run.mixed_precision=bf16", f"name={run.name}"]},
                          [stage], [init], resume={"resume": True}, resume_from=run / "checkpoints",
                          clean=run / "checkpoints", group="slots"))
        init = stage
    reasoning, trace = final("reasoning"), path("trace", results, config=s.config)
    steps.append(Step("trace reasoning", "trace",
                      {"out": str(trace.parent), "checkpoint": str(reasoning), "task": "reasoning", "segments": 4,
                       "samples": 8, "split": "test", "maps": "all", **s.trace_maps, "keep_memory": True,
                       "overwrite": True},
                      [trace], [reasoning], group="evaluate"))
    for task in ("detect_memorize", "reasoning"):
        probe = path("probe", results, config=s.config, task=task)
        steps.append(Step(f"probe {task}", "probe",
                          {"checkpoint": str(final(task)), "out": str(probe), "task": task, "segments": s.stages,
                           "samples": s.probe_samples},
                          [probe], [final(task)], group="evaluate"))
    bench = results / "bench"
    if s.bench_all:
        for kind in ("flops", "memory", "speed"):
            steps.append(Step(f"benchmark {kind}", f"bench_{kind}", {"out": str(bench)}, [path(kind, results)]))
    else:
        steps.append(Step("benchmark flops", "bench_flops", {"out": str(bench)}, [path("flops", results)]))
    steps.append(Step("figures", "figures", {"results": str(results), "out": str(figures)}, []))
    return steps


def reproduce(steps: Sequence[Step], force: Sequence[str] = (), results: str | Path = "data/results",
              jobs: int = 1, plan_name: str = "quick", run: Callable[[str, dict, int, Path | None], int] | None = None,
              echo: Callable[[str], None] = print, status: Callable[[str], None] | None = None,
              status_every: float = 30.0) -> int:
    """Run the steps not yet done (and those named in `force`, matched by prefix); stop at the first failure.

    Steps of the same `group` that are next to each other run `jobs` at a time, each in its own process
    on its share of the cores, its output going to <results>/logs/<step>.log (with jobs=1 every step
    runs alone on all threads and prints to the terminal). Small models gain from this: two 1-thread
    trainings do more work per second than one 2-thread training. When a group has no step left to
    start, a finishing step's cores go to the steps still running (`rmt_lab.runtime`). `status`
    receives one overall line (steps done, running, left; elapsed; an estimate from the step times of
    the last reproduction) every `status_every` seconds; on a terminal (the default) it is redrawn in
    place below the step lines at every change too. Returns 0, or the failing step's exit code. Step timings go to
    <results>/reproduce-<plan_name>.json (`times_path`).

    Args:
        force: redo these steps even if their files exist (a prefix: 'train', 'long evaluation memorize')
    """
    run = run or _run_process
    unknown = [f for f in force if not any(step.name.startswith(f) for step in steps)]
    if unknown:
        raise ValueError(f"--force {unknown}: no such step; steps: {[step.name for step in steps]}")
    if jobs < 1:
        raise ValueError(f"jobs={jobs} must be >= 1")
    results = Path(results)
    times = times_path(results, plan_name)
    # On a terminal the status line is redrawn in place at every change; elsewhere (a log) it is a line per tick.
    live = status is None and echo is print and sys.stdout.isatty()
    board = _Board(steps, _last_seconds(times), status or (_live_show if live else echo), live=live)
    echo = board.wrap(echo)
    log: list[dict] = []
    failures: list[int] = []  # once a step fails, no new step starts
    records = made_from(results)
    cores = os.cpu_count() or 1
    with board.ticking(status_every):
        for candidates in _groups(list(enumerate(steps, 1))):
            # Decided when the group starts, after the steps before it made the models it reads.
            group = []
            for i, step in candidates:
                forced = is_forced(step, force)
                if step.done(records, results) and not forced:
                    echo(f"[{i}/{len(steps)}] {step.name}: done already ({', '.join(str(p) for p in step.outputs)})")
                    log.append({"step": step.name, "status": "skipped", "seconds": 0.0})
                    board.finish(step.name)
                elif not forced and not_needed(step, steps, records, results, force):
                    echo(f"[{i}/{len(steps)}] {step.name}: not needed (every step reading "
                         f"{', '.join(str(p) for p in step.outputs)} is done)")
                    log.append({"step": step.name, "status": "not needed", "seconds": 0.0})
                    board.finish(step.name)
                else:
                    group.append((i, step, forced))
            if not group:
                continue
            width = min(jobs, len(group))
            lock = threading.Lock()
            # running step -> the file its process takes its thread count from, and the count last written there
            budgets: dict[str, tuple[Path, int]] = {}
            waiting = [len(group)]

            def share_out() -> None:
                """Once no step of the group waits to start, split the cores among the steps running (called
                under the lock whenever a step starts or ends: a step that starts after a sibling has already
                ended gets the freed cores too)."""
                if waiting[0]:
                    return
                for k, (name, (path, given)) in enumerate(sorted(budgets.items())):
                    share = max(1, cores // len(budgets) + (k < cores % len(budgets)))
                    if share != given:
                        echo(f"  {name}: now {share} thread(s)")
                        budgets[name] = (path, share)
                        write_thread_budget(path, share)

            def one(item):
                i, step, forced = item
                head = f"[{i}/{len(steps)}] {step.name}"
                with lock:
                    waiting[0] -= 1
                if failures:
                    return {"step": step.name, "status": "not run", "seconds": 0.0}, 0
                if forced or step.stale(records, results):  # start over: nothing old may be resumed or kept
                    for path in [*_left_by(step), *([step.clean] if forced and step.clean else [])]:
                        _remove(path)
                again = step.resume_from is not None and step.resume_from.exists() and not forced
                arguments = {**step.arguments, **(step.resume if again else {})}
                output = results / "logs" / (step.name.replace(" ", "_") + ".log") if width > 1 else None
                threads = max(1, cores // width)
                if output is not None:
                    output.parent.mkdir(parents=True, exist_ok=True)
                    with lock:
                        budgets[step.name] = (output.with_suffix(".threads"), threads)
                        write_thread_budget(budgets[step.name][0], threads)
                        share_out()
                where = f"  (log: {output}, {threads} thread{'s' * (threads > 1)})" if output else ""
                echo(f"{head}: {step.command(again)}{where}")
                board.start(step.name)
                t0 = time.perf_counter()
                code = run(step.recipe, arguments, threads, output)
                seconds = time.perf_counter() - t0
                board.finish(step.name)
                echo(f"{head}: {'finished' if code == 0 else f'FAILED (exit {code})'} in {seconds:.0f} s")
                with lock:
                    budgets.pop(step.name, None)
                    share_out()
                if code == 0 and step.inputs:
                    with lock:
                        records[step.key(results)] = step.input_digests(results)
                        write_json(results / MADE_FROM, records)
                if code:
                    failures.append(code)
                    if output is not None and output.exists():  # the end of what the failed step printed
                        echo("".join(output.read_text(errors="replace").splitlines(keepends=True)[-20:]))
                return {"step": step.name, "status": "ok" if code == 0 else f"exit {code}",
                        "seconds": round(seconds, 1), "threads": threads}, code

            with ThreadPoolExecutor(max_workers=width) as pool:
                outcomes = list(pool.map(one, group))
            log.extend(entry for entry, _ in outcomes)
            write_json(times, {"steps": log, "jobs": jobs})
            if failures:
                return failures[0]
    total = board.elapsed()
    write_json(times, {"steps": log, "jobs": jobs, "total_seconds": round(total, 1)})
    echo(f"reproduced in {total / 60:.1f} min; step times in {times}")
    return 0


class _Board:
    """The overall progress of a reproduction, as one line."""

    def __init__(self, steps: Sequence[Step], before: dict[str, float], show: Callable[[str], None], live: bool):
        self.names = [step.name for step in steps]
        self.before, self.show, self.live = before, show, live
        self.running: dict[str, float] = {}  # name -> start time
        self.finished: set[str] = set()
        self.t0 = time.perf_counter()
        self.lock = threading.Lock()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def start(self, name: str) -> None:
        with self.lock:
            self.running[name] = time.perf_counter()
        self.update()

    def finish(self, name: str) -> None:
        with self.lock:
            self.running.pop(name, None)
            self.finished.add(name)
        self.update()

    def line(self) -> str:
        with self.lock:
            now = time.perf_counter()
            left = [n for n in self.names if n not in self.finished and n not in self.running]
            text = (f"reproduce: {len(self.finished)}/{len(self.names)} done, {len(self.running)} running, "
                    f"{len(left)} to start; {self.elapsed() / 60:.1f} min elapsed")
            # Known only for steps that ran in the last reproduction; skipped steps took 0 s there.
            ahead = [n for n in [*self.running, *left] if self.before.get(n)]
            if ahead and len(ahead) == len(self.running) + len(left):
                rest = sum(max(self.before[n] - (now - self.running.get(n, now)), 0.0) for n in ahead)
                text += f", ~{rest / 60:.0f} min of step time left (last run's times)"
            return text

    def update(self, tick: bool = False) -> None:
        if self.live or tick:
            self.show(self.line())

    def wrap(self, echo: Callable[[str], None]) -> Callable[[str], None]:
        """`echo` for step lines, clearing the live line first on a terminal."""
        def locked(text: str) -> None:
            with self.lock:
                if self.live:
                    sys.stdout.write("\r\033[K")
                echo(text)
        return locked

    @contextlib.contextmanager
    def ticking(self, every: float):
        stop = threading.Event()

        def tick() -> None:
            while not stop.wait(every):
                self.update(tick=True)

        ticker = threading.Thread(target=tick, daemon=True)
        ticker.start()
        try:
            yield
        finally:
            stop.set()
            ticker.join()
            if self.live:
                sys.stdout.write("\n")


def _live_show(text: str) -> None:
    sys.stdout.write("\r\033[K" + text)
    sys.stdout.flush()


def times_path(results: str | Path, plan_name: str) -> Path:
    """Where a plan's step times are kept under the results folder."""
    return Path(results) / f"reproduce-{plan_name}.json"


def _last_seconds(path: Path) -> dict[str, float]:
    """Each step's seconds in the last reproduction logged at `path` (steps it ran; skipped ones are 0)."""
    try:
        return {s["step"]: float(s["seconds"]) for s in json.loads(path.read_text())["steps"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def digest(path: Path) -> str:
    """sha256 of a file, or of a folder's files (relative names and contents, in name order)."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode() + b"\0")
        with open(f, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def is_forced(step: Step, force: Sequence[str]) -> bool:
    """Whether `--force` names the step: by a prefix of its name ('train', 'long evaluation memorize')."""
    return any(step.name.startswith(f) for f in force)


def not_needed(step: Step, steps: Sequence[Step], records: dict, results: Path, force: Sequence[str] = ()) -> bool:
    """make's rule for intermediate files: a step whose outputs are all gone need not run while every step
    that reads them is done, has a record of what it was made from, and is not forced. A model not kept with
    the results (a sweep's checkpoints, 5 MB each) is then not retrained for evaluations already made from
    it; a reader without a record (results copied in, never adopted) still has its model remade."""
    if not step.outputs or any(p.exists() for p in step.outputs):
        return False
    readers = [s for s in steps if any(p in s.inputs for p in step.outputs)]
    return bool(readers) and all(
        r.key(results) in records and r.done(records, results) and not is_forced(r, force) for r in readers)


def made_from(results: Path) -> dict[str, dict[str, str]]:
    """{step: {input: digest}} recorded under `results` when each step last succeeded."""
    path = results / MADE_FROM
    return json.loads(path.read_text()) if path.exists() else {}


def adopt(steps: Sequence[Step], results: str | Path) -> list[Step]:
    """Record, for each step that reads inputs, whose outputs all exist and that has no record, its inputs here
    now as what the outputs were made from: for results made by running a step's command by hand. An input
    that is gone (a model not kept) is left out of the record: the outputs stand until it is remade, which
    makes them stale. Returns the steps recorded."""
    results = Path(results)
    records = made_from(results)
    adopted = [s for s in steps if s.inputs and s.outputs and all(p.exists() for p in s.outputs)
               and s.key(results) not in records]
    for step in adopted:
        records[step.key(results)] = step.input_digests(results)
    if adopted:
        write_json(results / MADE_FROM, records)
    return adopted


def step_lines(steps: Sequence[Step], results: str | Path) -> list[str]:
    """A line per step: its number, name, whether it is done in `results`, and the command that runs it."""
    results = Path(results)
    records = made_from(results)
    def state(step: Step) -> str:
        if step.done(records, results):
            return "done"
        return "not needed" if not_needed(step, steps, records, results) else "to do"

    return [f"[{i}/{len(steps)}] {step.name} ({state(step)}): {step.command()}" for i, step in enumerate(steps, 1)]


def recompute(results: str | Path = "data/results", figures: str | Path = "figures") -> int:
    """Every experiment of the quick plan behind the figures run again, whatever is in `results` (the figures
    step itself left to the caller). Returns 0, or the failing step's exit code."""
    steps = [step for step in plan("quick", results, figures) if step.name != "figures"]
    return reproduce(steps, force=[step.name for step in steps], results=results, jobs=default_jobs("quick"),
                     plan_name="quick")


def _groups(numbered: list) -> list[list]:
    """(index, step) pairs cut into runs: neighbouring steps of one group together, others alone. A step that
    reads what a step of the run before it makes (an evaluation of the model a training there ends with)
    opens a new run, so that it starts once that step is over."""
    out: list[list] = []
    for item in numbered:
        step = item[1]
        if out and step.group and out[-1][0][1].group == step.group and not _reads(step, [s for _, s in out[-1]]):
            out[-1].append(item)
        else:
            out.append([item])
    return out


def _reads(step: Step, others: Sequence[Step]) -> bool:
    """Whether `step` reads an output of one of `others` (the output itself or a file inside it)."""
    made = [path for other in others for path in other.outputs]
    return any(path == out or out in path.parents for path in step.inputs for out in made)


def _run_process(recipe: str, arguments: dict, threads: int, output: Path | None) -> int:
    """`recipes.<recipe>(**arguments)` in a fresh process on `threads` threads, its output to `output`
    (None: this terminal); returns 0, or 1 when it failed."""
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if output is not None:
        env[THREADS_FILE_ENV] = str(output.with_suffix(".threads"))  # see reproduce(): cores freed later
    result = run_in_process("rmt_lab.recipes:run_step", {"recipe": recipe, "arguments": arguments}, log=output,
                            inherit_output=output is None, env=env)
    return 0 if result["status"] == "ok" else 1


def _left_by(step: Step) -> list[Path]:
    """Everything an earlier run of `step` leaves: its outputs and, for a long evaluation, its per-sample table
    and the batches of a length in progress, which a new run would take as done (samples already there are
    not run again) and so report another model's answers."""
    if step.recipe != "eval_long":
        return list(step.outputs)
    from rmt_lab.train.evaluate import parts_dir, samples_path

    return [*step.outputs, *(p for out in step.outputs for p in (samples_path(out), parts_dir(out, 0).parent))]


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
