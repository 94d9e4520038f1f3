"""Every experiment as one function: what `rmt-lab` runs and what a notebook calls, with the same defaults.

The CLI parses options into these arguments and prints what comes back; it takes each option's default
and type from the signatures here (`defaults(recipe)`) and its help from the recipe's docstring, under
"Args:" (`argument_help(recipe)`), so a notebook calling `eval_long(run_dir)` gets exactly what
`rmt-lab eval long --run-dir RUN` does; `rmt-lab reproduce` runs each step as `run_step` in a fresh
process. Recipes raise on bad input (ValueError and its subclasses, FileNotFoundError) with a message
naming the value and what is allowed; they never print.

    from rmt_lab import recipes
    metrics = recipes.train("quick", "memorize", "runs/quick-memorize").metrics
    table = recipes.eval_generalization("runs/quick-memorize", samples=64)
"""

from __future__ import annotations

import inspect
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from rmt_lab.catalog import run_file
from rmt_lab.io import write_parquet
from rmt_lab.trace.config import TraceConfig

_TRACE = TraceConfig()  # the trace recipe's defaults are the config's


def defaults(recipe: Callable) -> dict:
    """{argument: default} of a recipe: the CLI shows and uses these."""
    return {name: p.default for name, p in inspect.signature(recipe).parameters.items()
            if p.default is not inspect.Parameter.empty}


def argument_help(recipe: Callable) -> dict[str, str]:
    """{argument: its text} from the "Args:" section of a recipe's docstring, where each argument starts a
    line `name: text` and longer texts go on over more deeply indented lines: the CLI shows these as help."""
    _, _, section = (inspect.getdoc(recipe) or "").partition("\nArgs:\n")
    helps: dict[str, str] = {}
    name = ""
    for line in section.splitlines():
        if not line.startswith("    "):  # a blank or unindented line ends the section
            break
        if line.startswith("     "):
            helps[name] += " " + line.strip()
        else:
            name, _, text = line.strip().partition(": ")
            helps[name] = text
    return helps


# ------------------------------------------------------------------------------------------ training
@dataclass
class TrainResult:
    run_dir: Path
    metrics: pd.DataFrame  # every metric row of the run (rmt_lab.train.Trainer.metrics)

    def stage_accuracy(self) -> pd.Series:
        """Validation accuracy at the end of each stage, by segments."""
        val = self.metrics[self.metrics["kind"] == "val"]
        return val.groupby("n_segments")["accuracy"].last()

    def report(self) -> str:
        lines = [f"run folder {self.run_dir}; validation accuracy at the end of each stage:"]
        lines += [f"  {n:>3} segments: {acc:.3f}" for n, acc in self.stage_accuracy().items()]
        return "\n".join(lines)


def experiment_config(config: str = "quick", task: str = "memorize", overrides: Sequence[str] = ()):
    """The named configuration `config` for `task` with `key.subkey=value` overrides (values parsed as JSON
    when they parse), e.g. ("curriculum.max_steps=200", "optim.lr=3e-4")."""
    from rmt_lab.train import ExperimentConfig, preset

    return ExperimentConfig.from_dict(_apply_overrides(preset(config, task).to_dict(), overrides))


def train(config: str = "quick", task: str = "memorize", run_dir: str | Path | None = None, resume: bool = False,
          overrides: Sequence[str] = ()) -> TrainResult:
    """Train an RMT with the curriculum of a named configuration (see `experiment_config`).

    Args:
        config: named configuration: quick (CPU, minutes), base (the pretrained MiniLM with adapters: hours)
            or paper (GPU)
        task: memorize, detect_memorize or reasoning
        run_dir: run folder (default runs/<config>-<task>)
        resume: continue from the run folder's last checkpoint
        overrides: override config fields, e.g. curriculum.max_steps=200 optim.lr=3e-4
    """
    from rmt_lab.train import run_experiment

    experiment = experiment_config(config, task, overrides)
    run_dir = Path(run_dir or f"runs/{experiment.name}")
    return TrainResult(run_dir, run_experiment(experiment, run_dir, resume=resume))


def _apply_overrides(data: dict, pairs: Sequence[str]) -> dict:
    from rmt_lab.config import ConfigError

    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise ConfigError(f"override {pair!r} must look like key.subkey=value")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"override {key!r}: {part!r} is not a config section; sections: "
                                  f"{sorted(k for k, v in node.items() if isinstance(v, dict))}")
            node = node[part]
        if leaf not in node:
            raise ConfigError(f"override {key!r}: unknown key {leaf!r}; allowed keys: {sorted(node)}")
        node[leaf] = value
    return data


# ---------------------------------------------------------------------------------------- evaluation
def _run_folder(run_dir: str | Path) -> Path:
    run = Path(run_dir)
    if not (run / "config.json").is_file():
        raise FileNotFoundError(f"{run} is not a run folder (no config.json); make one with rmt-lab train")
    return run


def _run_config(run: Path) -> dict:
    """The experiment configuration a run folder was trained with (its config.json, as JSON)."""
    return json.loads((run / "config.json").read_text())


def eval_generalization(run_dir: str | Path, max_segments: int | None = None, samples: int = 256,
                        dtype: str = "float32", out: str | Path | None = None) -> pd.DataFrame:
    """Every stage's model of the run in `run_dir` on 1..M segments, with 95% Wilson intervals (report
    Figure 5), computed in `dtype`. Written to `out` cell by cell, so an interrupted evaluation resumes.

    Args:
        run_dir: run folder made by rmt-lab train (--run-dir passes through torchrun; --run does not)
        max_segments: M (default 2 x the largest trained length)
        samples: test samples per point
        dtype: compute dtype: bfloat16 = autocast (weights and memory fp32; fast on CPUs with AMX and on GPUs)
        out: parquet path (default <run>/generalization.parquet)
    """
    from rmt_lab.train import generalization_matrix

    run = _run_folder(run_dir)
    out = Path(out or run_file("generalization", run))
    lengths = range(1, max_segments + 1) if max_segments else None
    frame = generalization_matrix(run, lengths, n_samples=samples, out=out, dtype=dtype)
    write_parquet(out, frame)
    return frame


def eval_ablation(run_dir: str | Path, max_segments: int = 7, samples: int = 128, dtype: str = "float32",
                  out: str | Path | None = None) -> pd.DataFrame:
    """The last stage's model of the run in `run_dir` with every segment reading the initial memory: the
    control that shows the task needs recurrence (near chance beyond 1 segment). `run_dir` and `dtype` mean
    what they do in `eval_generalization`.

    Args:
        max_segments: lengths 1..this
        samples: test samples per point
        out: parquet path (default <run>/no_recurrence.parquet)
    """
    from rmt_lab.train import generalization_matrix, stage_checkpoints

    run = _run_folder(run_dir)
    out = Path(out or run_file("no_recurrence", run))
    frame = generalization_matrix(run, range(1, max_segments + 1), n_samples=samples, out=out, dtype=dtype,
                                  stages=[max(stage_checkpoints(run))], carry_memory=False)
    write_parquet(out, frame)
    return frame


def long_lengths(min_tokens: int, max_tokens: int, segment_size: int) -> list[int]:
    """Segment counts from `min_tokens` doubling up to `max_tokens` (always included)."""
    if not 0 < min_tokens <= max_tokens:
        raise ValueError(f"lengths need 0 < min_tokens <= max_tokens; got {min_tokens:,} and {max_tokens:,}")
    tokens, lengths = min_tokens, []
    while tokens < max_tokens:
        lengths.append(math.ceil(tokens / segment_size))
        tokens *= 2
    lengths.append(math.ceil(max_tokens / segment_size))
    return lengths


def eval_long(run_dir: str | Path, stage: int | None = None, min_tokens: int = 16_000, max_tokens: int = 2_048_000,
              samples: int = 16, samples_from: tuple[int, int] | None = None, batch_size: int = 16,
              compile: str = "", dtype: str = "float32", out: str | Path | None = None) -> pd.DataFrame:
    """A stage's model of the run in `run_dir` streamed at lengths from `min_tokens` doubling to `max_tokens`
    (report Figure 1), `batch_size` samples at a time. Resumable batch by batch; under torchrun each process
    takes its share of the samples (`rmt_lab.train.long_evaluation`). `run_dir` and `dtype` mean what they do
    in `eval_generalization`.

    Args:
        stage: segments of the stage checkpoint to use (default: the largest)
        min_tokens: first length; lengths double up to the max
        max_tokens: last length in tokens (e.g. 10000000)
        samples: test samples per length
        samples_from: N samples per length from TOKENS tokens on (fewer where a sample costs the most)
        compile: torch.compile the backbone with this mode, weights frozen (default: eager)
        out: parquet path (default <run>/long_eval.parquet); existing points are kept
    """
    from rmt_lab.train import long_evaluation, stage_checkpoints

    run = _run_folder(run_dir)
    checkpoints = stage_checkpoints(run)
    stage = stage or max(checkpoints)
    if stage not in checkpoints:
        raise ValueError(f"no stage-{stage} checkpoint in {run}; available stages: {sorted(checkpoints)}")
    task, counts = _long_counts(run, min_tokens, max_tokens, samples, samples_from)
    retention = _run_config(run)["optim"].get("retention_loss", 0.0)
    return long_evaluation(checkpoints[stage], task, list(counts), Path(out or run_file("long_eval", run)), counts,
                           batch_size, compile=compile, trained_segments=stage, retention_loss=retention, dtype=dtype)


def _long_counts(run: Path, min_tokens: int, max_tokens: int, samples: int,
                 samples_from: tuple[int, int] | None) -> tuple[object, dict[int, int]]:
    """The run's task and {segments: samples} of each length a long evaluation with these arguments runs."""
    from rmt_lab.tasks import TaskConfig

    task = TaskConfig.from_dict(_run_config(run)["task"])
    tokens_from, samples_from_there = samples_from or (math.inf, samples)
    return task, {n: samples if n * task.segment_size < tokens_from else samples_from_there
                  for n in long_lengths(min_tokens, max_tokens, task.segment_size)}


def long_eval_complete(run_dir: str | Path, min_tokens: int = 16_000, max_tokens: int = 2_048_000, samples: int = 16,
                       samples_from: tuple[int, int] | None = None, out: str | Path | None = None, **_) -> bool:
    """Whether the long-evaluation table holds every length that `eval_long` with these arguments runs, each
    with its samples (a table of shorter lengths or fewer samples is a start, not the result)."""
    run = Path(run_dir)
    table_path = Path(out or run_file("long_eval", run))
    if not (run / "config.json").is_file() or not table_path.is_file():
        return False
    _, counts = _long_counts(run, min_tokens, max_tokens, samples, samples_from)
    table = pd.read_parquet(table_path)
    have = dict(zip(table["n_segments"].astype(int), table["n_samples"].astype(int)))
    return all(have.get(n, 0) >= k for n, k in counts.items())


# ------------------------------------------------------------------------------------------ task data
def task_generator(task: str = "memorize", segments: int | None = None, tokens: int | None = None,
                   segment_size: int = 499, placement: str = "segment", seed: int = 0, noise: str = "pydoc"):
    """The sample generator (rmt_lab.tasks.TaskGenerator) of a synthetic task whose samples are 1 segment long
    unless `segments` or `tokens`; the arguments mean what they do in `trace`."""
    from rmt_lab.tasks import TaskConfig, TaskGenerator

    return TaskGenerator(TaskConfig.of_length(segments, tokens, task=task, segment_size=segment_size,
                                              placement=placement, seed=seed, noise=noise))


def preview_data(index: int = 0, split: str = "train", color: bool = False, **task) -> str:
    """Sample `index` of a `split` of the task `task_generator(**task)` as text: its segments, its facts
    highlighted (ANSI colours if `color`) and its ground truth (rmt_lab.tasks.format_sample).

    Args:
        index: which sample of the split
    """
    from rmt_lab.tasks import format_sample

    generator = task_generator(**task)
    return format_sample(generator.sample(split, index), generator.tokenizer, color=color)


def export_data(out: str | Path, n: int, split: str = "train", **task) -> Path:
    """Samples 0..n-1 of a `split` of the task `task_generator(**task)` written to the parquet file `out`
    (atomic), with the task's config beside it as JSON (rmt_lab.tasks.export_split); returns the path.

    Args:
        n: number of samples
        out: parquet path, e.g. data/memorize_train.parquet
    """
    from rmt_lab.tasks import export_split

    return export_split(task_generator(**task), split, n, out)


# ------------------------------------------------------------------------------------ traces, probes
@dataclass
class TraceResult:
    trace: object  # rmt_lab.trace.Trace
    samples: list  # the task samples traced
    correct: int  # samples answered right
    seconds: float
    backbone: str

    @property
    def tokens_per_s(self) -> float:
        return sum(s.n_tokens for s in self.samples) / self.seconds

    @property
    def fact_segments(self) -> list[int]:
        """The segments that hold a fact in some traced sample."""
        return sorted({seg for s in self.samples for span in s.facts for seg in span.segments})

    def profile(self) -> pd.DataFrame:
        """Read, write and retain per segment and whether it holds a fact, means over samples, layers, heads."""
        from rmt_lab.trace import fact_alignment

        frame = fact_alignment(self.trace.summaries).groupby(["segment", "has_fact"]).mean(numeric_only=True)
        return frame.drop(columns=["sample"]).reset_index()

    def report(self) -> str:
        """What was traced, how fast, and the profile (its first and last 6 segments when longer than 12)."""
        first, profile = self.samples[0], self.profile()
        if len(profile) > 12:
            profile = profile.iloc[list(range(6)) + list(range(len(profile) - 6, len(profile)))]
        return "\n".join([
            f"traced {len(self.samples)} {first.task} sample(s) of {first.n_tokens:,} tokens "
            f"({self.trace.n_segments:,} segments) through {self.backbone!r} in {self.seconds:.1f} s "
            f"({self.tokens_per_s:,.0f} tokens/s); answered {self.correct}/{len(self.samples)}",
            f"full maps kept for segments {self.trace.map_segments}; facts in segments {self.fact_segments}",
            "per segment, mean over samples, layers and heads:",
            profile.to_string(index=False, float_format="{:.3f}".format),
        ])


def trace(out: str | Path, checkpoint: str | Path | None = None, backbone: str = "minilm", num_mem: int = 10,
          task: str = "memorize", segments: int | None = None, tokens: int | None = None, segment_size: int = 499,
          placement: str = "segment", seed: int = 0, noise: str = "pydoc", split: str = "train", samples: int = 1,
          maps: str = "facts,last", layers: Sequence[int] | None = None, heads: Sequence[int] | None = None,
          top_k: int = _TRACE.top_k, keep_memory: bool = False, budget_mib: float = _TRACE.budget_mib,
          map_dtype: str = _TRACE.map_dtype, overwrite: bool = False) -> TraceResult:
    """Record task samples (4 segments long unless `segments` or `tokens`) through an RMT into the trace
    folder `out`: per-segment summaries, full maps of the segments `maps` selects, the tokens written per
    memory slot and, if asked, the memory states (rmt_lab.trace.TraceConfig). A checkpoint brings its
    segment size; `overwrite` replaces a trace already in `out`.

    Args:
        backbone: ready backbone for an untrained RMT
        checkpoint: an RMT saved with save_pretrained (overrides --backbone)
        num_mem: memory tokens of an untrained RMT
        task: memorize, detect_memorize or reasoning
        segments: length in segments
        tokens: length in content tokens
        segment_size: content tokens per segment (report: 499)
        placement: segment (report) or sentence (BABILong)
        noise: 'pydoc' or a local UTF-8 file/folder or saved dataset
        split: train, validation or test
        samples: samples traced together as one batch
        maps: segments with full maps: none, all, or e.g. '0,2-4,every:10,facts,last'
        layers: layers with full maps (default all)
        heads: heads with full maps (default all)
        top_k: tokens written per memory slot to list
        keep_memory: store every segment's memory state
        budget_mib: trace data held in RAM at most
        map_dtype: float32 or float16
        out: trace folder to write
        overwrite: replace a trace already in --out
    """
    import torch

    from rmt_lab.config import from_dict
    from rmt_lab.model import RecurrentWrapper, RMTConfig
    from rmt_lab.tasks import NUM_CLASSES, TaskConfig, TaskGenerator
    from rmt_lab.trace import record

    config = from_dict(TraceConfig, {"segments": maps, "layers": None if layers is None else list(layers),
                                     "heads": None if heads is None else list(heads), "keep_memory": keep_memory,
                                     "top_k": top_k, "budget_mib": budget_mib, "map_dtype": map_dtype})
    if checkpoint:
        model = RecurrentWrapper.from_pretrained(checkpoint)
    else:
        model = RecurrentWrapper.from_backbone(backbone, RMTConfig(num_mem_tokens=num_mem, segment_size=segment_size,
                                                                   num_classes=NUM_CLASSES))
    model.eval()
    task_config = TaskConfig.of_length(segments, tokens, default_segments=4, task=task,
                                       segment_size=model.config.segment_size, placement=placement, seed=seed,
                                       noise=noise)
    generator = TaskGenerator(task_config)
    chosen = [generator.sample(split, i) for i in range(samples)]
    start = time.perf_counter()
    output, recorded = record(model, chosen, config, out=out, overwrite=overwrite)
    seconds = time.perf_counter() - start
    correct = int((output.logits.argmax(-1) == torch.tensor([s.label for s in chosen])).sum())
    return TraceResult(recorded, chosen, correct, seconds, model.cell.backbone_name)


def probe(checkpoint: str | Path, out: str | Path, task: str = "detect_memorize", segments: int = 7,
          samples: int = 256, split: str = "test", seed: int = 0) -> pd.DataFrame:
    """Linear probes on the memory state after every segment: how well the answer decodes at each distance
    from the fact segment, and for reasoning each part of each fact from that fact's segment
    (`rmt_lab.trace.probe_targets`: one row per target, segment and distance).

    Args:
        checkpoint: an RMT saved with save_pretrained (a stage checkpoint)
        task: memorize, detect_memorize or reasoning
        segments: segments per sample
        samples: samples; half train the probes, half test them
        split: train, validation or test
        out: parquet file to write (e.g. <trace folder>/probe.parquet)
    """
    from rmt_lab.model import RecurrentWrapper
    from rmt_lab.tasks import TaskConfig, TaskGenerator
    from rmt_lab.trace import collect_memory_states, probe_targets

    model = RecurrentWrapper.from_pretrained(checkpoint).eval()
    config = TaskConfig(task=task, segment_size=model.config.segment_size, length=segments, unit="segments",
                        seed=seed)
    generator = TaskGenerator(config)
    collected = collect_memory_states(model, [generator.sample(split, i) for i in range(samples)])
    frame = probe_targets(collected["states"], collected["targets"])
    frame["task"], frame["checkpoint"] = task, str(checkpoint)
    write_parquet(out, frame)
    return frame


def probe_by_distance(frame: pd.DataFrame) -> pd.DataFrame:
    """A probe table's accuracy by distance from the fact segment (rows), pooled over segments, a column per
    target (tables without one: the answer)."""
    from rmt_lab.trace.probe import ANSWER

    frame = frame if "target" in frame else frame.assign(target=ANSWER)
    pooled = frame.assign(hits=frame["accuracy"] * frame["n"]).groupby(["distance", "target"], sort=False)[
        ["hits", "n"]].sum()
    return (pooled["hits"] / pooled["n"]).unstack("target")


# --------------------------------------------------------------------------------------- benchmarks
def bench_flops(out: str | Path = "data/results/bench", quick: bool = False,
                **settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Forward (or training) FLOPs versus length, full attention against RMT (report Figure 3), and their
    ratio at one length; `settings`: fields of rmt_lab.bench.flops_sweep.FlopsSweepConfig over its defaults
    (or its `quick` preset). Points already in <out>/flops.parquet are reused.

    Args:
        models: known model names (default: the OPT family)
        lengths: input lengths in tokens
        segment_len: RMT content tokens per segment
        num_mem: RMT memory tokens
        head: what sits on top of the stack
        mode: forward pass, or forward + backward
        ratio_tokens: length of the full / RMT ratio table
        measure: also count every point with FlopCounterMode (meta device)
        out: folder for flops.parquet and flops_ratio.parquet
    """
    from rmt_lab.bench.flops_sweep import QUICK, FlopsSweepConfig, flops_ratio_table, flops_sweep
    from rmt_lab.config import from_dict

    config = from_dict(FlopsSweepConfig, {**(QUICK if quick else {}), **settings})
    out = Path(out)
    previous = pd.read_parquet(out / "flops.parquet") if (out / "flops.parquet").exists() else None
    frame = flops_sweep(config, previous=previous, progress=config.measure)
    ratio = flops_ratio_table(frame, config.ratio_tokens)
    write_parquet(out / "flops.parquet", frame)
    write_parquet(out / "flops_ratio.parquet", ratio)
    return frame, ratio


def bench_memory(out: str | Path = "data/results/bench", quick: bool = False, remeasure: bool = False,
                 progress: bool = True, grace_s: float | None = None, min_tokens_per_s: float | None = None,
                 rss_limit_gib: float | None = None, **settings) -> pd.DataFrame:
    """Measured peak memory and time versus length, RMT against full attention, each point in a fresh
    process under a time and memory budget (rmt_lab.process.Budget; the limits given replace its
    defaults); `settings`: fields of rmt_lab.bench.memory.MemorySweepConfig over its defaults (or its
    `quick` preset). Resumes from <out>/memory.parquet.

    Args:
        lengths: forward lengths, tokens per sample
        train_lengths: training-step lengths
        methods: default: all
        modes: default: forward and train
        bptt_depths: RMT training: -1 = full BPTT (default -1 2)
        batch: samples per batch (default 1)
        backbone: ready backbone (see `rmt-lab info`); default minilm, tiny-bert with --quick
        num_mem: RMT memory tokens (default 10)
        segment_size: RMT content tokens per segment (default 499: 512 positions)
        device: auto (cuda if available), cpu or cuda
        dtype: default float32; bfloat16 on GPU
        quick: tiny settings (tiny-bert, short lengths): seconds per point
        out: folder of the parquet results
        remeasure: run every point again instead of resuming
        grace_s: seconds every point may take whatever its length (default 120)
        min_tokens_per_s: pace after the grace; time limit = grace + tokens / pace (default 500)
        rss_limit_gib: resident memory limit of a point's process, GiB (default 12)
    """
    from rmt_lab.bench.memory import QUICK, MemorySweepConfig, memory_sweep
    from rmt_lab.config import from_dict

    budget = _budget(grace_s, min_tokens_per_s, rss_limit_gib)
    config = from_dict(MemorySweepConfig, {**(QUICK if quick else {}), **settings, **budget})
    return memory_sweep(config, Path(out) / "memory.parquet", progress=progress, remeasure=remeasure)


def bench_speed(out: str | Path = "data/results/bench", quick: bool = False, remeasure: bool = False,
                progress: bool = True, grace_s: float | None = None, min_tokens_per_s: float | None = None,
                rss_limit_gib: float | None = None, **settings) -> pd.DataFrame:
    """RMT forward (eager, compiled) and training-step speed against the matmul peak, the bare backbone and
    a naive loop; `settings`: fields of rmt_lab.bench.speed.SpeedSweepConfig over its defaults (or its
    `quick` preset). Resumes from <out>/speed.parquet unless `remeasure`. The arguments and settings that
    `bench_memory` takes too mean the same here.

    Args:
        batches: batch sizes (default 1 8)
        segments: full segments per sample (default 16)
        methods: default: all
        matmul_n: size of the matmul peak's square matrices (default 2048)
        matmul_repeats: matmul peak: median of this many (default 10)
        compile: torch.compile mode of rmt-compiled (default: default)
        train_batch: training step: one batch size in place of the default 8 and 32
        train_segments: training step: segments per sample (default 4)
        train_dropout: training step: the backbone's hidden and attention dropout, in train mode, for the RMT
            and the paired plain loop alike (default 0: off; the trainer presets train with 0.1)
    """
    from rmt_lab.bench.speed import QUICK, SpeedSweepConfig, speed_sweep
    from rmt_lab.config import from_dict

    budget = _budget(grace_s, min_tokens_per_s, rss_limit_gib)
    config = from_dict(SpeedSweepConfig, {**(QUICK if quick else {}), **settings, **budget})
    return speed_sweep(config, Path(out) / "speed.parquet", progress=progress, remeasure=remeasure)


def _budget(grace_s: float | None, min_tokens_per_s: float | None, rss_limit_gib: float | None) -> dict:
    """The `budget` setting of a measured sweep: the limits given over Budget's defaults, in place of any
    `budget` in the settings; {} when none is given."""
    budget = {"grace_s": grace_s, "min_tokens_per_s": min_tokens_per_s,
              "rss_limit_mib": None if rss_limit_gib is None else rss_limit_gib * 1024}
    budget = {k: v for k, v in budget.items() if v is not None}
    return {"budget": budget} if budget else {}


def stream(tokens: int = 100_000, backbone: str = "minilm", device: str = "auto", dtype: str = "float32",
           compile: str = "") -> dict:
    """Random tokens streamed through an RMT (10 new memory tokens, 499 content tokens a segment, batch 1)
    in a fresh process: seconds, tokens/s, peak memory, memory shape
    (rmt_lab.bench.inference.measure_in_subprocess).

    Args:
        tokens: input length in tokens (default 100000)
        backbone: ready backbone (see `rmt-lab info`)
        device: auto (cuda if available), cpu or cuda
        compile: torch.compile the backbone with this mode (default: eager)
    """
    from rmt_lab.bench.inference import measure_in_subprocess

    return measure_in_subprocess(tokens, backbone, device=device, dtype=dtype, compile=compile)


def stream_lengths(tokens: Sequence[int] = (16_000, 1_000_000)) -> Iterator[dict]:
    """`stream` with its defaults at each length in `tokens`, each measured as the iterator reaches it, so a
    caller can show each length when it is ready (a million tokens take minutes).

    Args:
        tokens: input lengths for --bench, each measured in a fresh process (default: 16000 1000000)
    """
    return (stream(n) for n in tokens)


def trace_overhead(backbones: Sequence[str] = ("minilm", "small-bert"), threads: Sequence[int] = (1, 2),
                   segments: int = 40, repeats: int = 7, pairs: int = 30, tokens: int = 1_000_000,
                   long_backbone: str = "minilm") -> dict[str, Iterator[dict]]:
    """The recorder's cost against recording off, per backbone and torch thread count (rmt_lab.trace.bench):
    "wall" (plain and traced runs alternating), "segment" (segments paired inside one recording) and
    "own_time" (the recorder's own time over the model's); and "long", one row: a `tokens`-long
    detect_memorize trace on `long_backbone` in a fresh process, its time and peak memory. Each table is an
    iterator of rows measured as they are read, so a caller can show each row when it is ready;
    `pd.DataFrame(rows)` measures a whole table.

    Args:
        threads: torch threads to measure with
        segments: segments per timed run
        repeats: alternating untraced/traced runs
        pairs: paired segments for the per-segment cost
        tokens: length of the long trace (0: skip)
        long_backbone: backbone of the long trace
    """
    from rmt_lab.trace.bench import million_in_subprocess, overhead_ratio, own_time_share, segment_overhead

    grid = [(backbone, n) for n in threads for backbone in backbones]
    return {
        "wall": ({"backbone": b, **overhead_ratio(b, n_segments=segments, repeats=repeats, threads=n)}
                 for b, n in grid),
        "segment": ({"backbone": b, **segment_overhead(b, n_pairs=pairs, threads=n)} for b, n in grid),
        "own_time": ({"backbone": b, **own_time_share(b, n_segments=segments, threads=n)} for b, n in grid),
        "long": (million_in_subprocess(n_tokens=tokens, backbone=long_backbone) for _ in range(1 if tokens else 0)),
    }


# --------------------------------------------------------------------------------------------- figures
def figures(results: str | Path = "data/results", out: str | Path = "figures", only: Sequence[str] | None = None,
            config: str | None = None, formats: Sequence[str] = ("png", "svg")) -> list:
    """Draw every figure that has its inputs (rmt_lab.viz.render_figures) as `formats`; returns the report
    of what was drawn and what each missing figure lacks. A `results` folder that does not exist is an error.

    Args:
        results: results folder the figures are drawn from
        out: folder for the PNG and SVG files
        only: draw only these figures (see --list)
        config: draw the run and trace figures of this configuration only (default: each one with results,
            into OUT/<config>/)
    """
    from rmt_lab.viz import render_figures

    return render_figures(results_folder(results), out, only=list(only) if only else None, formats=tuple(formats),
                          config=config)


def results_folder(results: str | Path) -> Path:
    """The folder `results`, which must exist: figures drawn from a mistyped folder would all be "missing"."""
    if not Path(results).is_dir():
        raise FileNotFoundError(f"results folder {results} does not exist; make results with "
                                "rmt-lab reproduce --quick (or the train/eval/bench/trace commands)")
    return Path(results)


# ------------------------------------------------------------------------------ one recipe, one process
def _summary(result: object) -> str:
    """What a step's log shows of its recipe's result."""
    if isinstance(result, (TrainResult, TraceResult)):
        return result.report()
    if isinstance(result, pd.DataFrame):
        return result.to_string(max_rows=60, max_cols=14)
    if isinstance(result, tuple):
        return "\n\n".join(_summary(r) for r in result)
    if isinstance(result, list) and result and hasattr(result[0], "files"):
        from rmt_lab.viz import format_report

        return format_report(result)
    return repr(result)


def run_step(recipe: str, arguments: dict) -> None:
    """`<recipe>(**arguments)`, its result summarised on stdout: one step of `rmt-lab reproduce`, which calls
    this in a fresh process (rmt_lab.process). A figures step that drew nothing, or failed a figure, fails."""
    from rmt_lab.catalog import COMMANDS
    from rmt_lab.viz import figures_failed

    if recipe not in COMMANDS:
        raise ValueError(f"unknown recipe {recipe!r}; recipes: {sorted(COMMANDS)}")
    result = globals()[recipe](**arguments)
    print(_summary(result), flush=True)
    if recipe == "figures" and figures_failed(result):
        raise RuntimeError("figures: none drawn, or one failed (see above)")
