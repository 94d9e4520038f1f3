"""The `rmt-lab` command. Each subcommand is a pair: `_add_<name>(parser)` and `_run_<name>(args)`.

It parses options into the arguments of `rmt_lab.recipes`, taking their defaults from the recipes' signatures,
and prints what comes back with the report functions of the modules that make each result. This is the only
module that imports every part of rmt_lab; the library code never imports it.
"""

from __future__ import annotations

import argparse
import inspect
import sys


def _recipe_options(p, recipe, helps: dict[str, str | None], prefix: str = "") -> None:
    """A --<prefix><name> option per entry of `helps`, with the default and type of `recipe`'s argument `name`;
    a sequence default makes an option of one or more values of its items' type."""
    from rmt_lab.recipes import defaults

    d = defaults(recipe)
    for name, help_text in helps.items():
        flag = "--" + prefix + name.replace("_", "-")
        if isinstance(d[name], (list, tuple)):
            p.add_argument(flag, nargs="+", type=type(d[name][0]), default=list(d[name]), help=help_text)
        else:
            p.add_argument(flag, type=type(d[name]), default=d[name], help=help_text)


def _call(recipe, args: argparse.Namespace, **fixed):
    """`recipe` with the options named like its arguments (an option left unset, None, keeps the default) and
    the arguments `fixed`."""
    given = {name: getattr(args, name, None) for name in inspect.signature(recipe).parameters}
    return recipe(**{name: value for name, value in given.items() if value is not None}, **fixed)


def _error(command: str, err: object, code: int = 2) -> int:
    print(f"rmt-lab {command}: error: {err}", file=sys.stderr)
    return code


def _add_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bench", action="store_true", help="also measure minilm RMT inference tokens/s and peak memory")
    p.add_argument(
        "--bench-tokens", type=int, nargs="+", default=[16_000, 1_000_000], metavar="N",
        help="input lengths for --bench, each measured in a fresh process (default: 16000 1000000)",
    )


def _run_info(args: argparse.Namespace) -> int:
    from rmt_lab.bench.inference import stream_table
    from rmt_lab.bench.machine import info_report
    from rmt_lab.recipes import stream

    print(info_report())
    if args.bench:
        print()
        for line in stream_table(stream(n) for n in args.bench_tokens):
            print(line)
    return 0


def _add_demo(p: argparse.ArgumentParser) -> None:
    from rmt_lab.bench.workloads import DTYPES
    from rmt_lab.model import COMPILE_MODES
    from rmt_lab.recipes import stream

    _recipe_options(p, stream, {"tokens": "input length in tokens (default 100000)",
                                "backbone": "ready backbone (see `rmt-lab info`)",
                                "device": "auto (cuda if available), cpu or cuda"})
    p.add_argument("--dtype", choices=list(DTYPES), default="float32")
    p.add_argument("--compile", choices=COMPILE_MODES,
                   help="torch.compile the backbone with this mode (default: eager)")


def _run_demo(args: argparse.Namespace) -> int:
    from rmt_lab.bench.inference import stream_summary
    from rmt_lab.recipes import stream

    print(f"Streaming {args.tokens:,} random tokens through an RMT over {args.backbone!r} (10 memory tokens, "
          f"{args.dtype}{', compiled ' + args.compile if args.compile else ''}) ...")
    print(stream_summary(_call(stream, args)))
    return 0


def _add_bench_flops(p: argparse.ArgumentParser) -> None:
    from rmt_lab.bench.flops_sweep import FlopsSweepConfig
    from rmt_lab.recipes import bench_flops

    d = FlopsSweepConfig()
    p.add_argument("--models", nargs="+", default=list(d.models), help="known model names (default: the OPT family)")
    p.add_argument("--lengths", nargs="+", type=int, default=list(d.lengths), help="input lengths in tokens")
    p.add_argument("--segment-len", type=int, default=d.segment_len, help="RMT content tokens per segment")
    p.add_argument("--num-mem", type=int, default=d.num_mem, help="RMT memory tokens")
    p.add_argument("--head", choices=["none", "lm", "cls"], default=d.head, help="what sits on top of the stack")
    p.add_argument("--mode", choices=["forward", "train"], default=d.mode, help="forward pass, or forward + backward")
    p.add_argument("--ratio-tokens", type=int, default=d.ratio_tokens, help="length of the full / RMT ratio table")
    p.add_argument("--measure", action="store_true", help="also count every point with FlopCounterMode (meta device)")
    _recipe_options(p, bench_flops, {"out": "folder for flops.parquet and flops_ratio.parquet"})


def _add_sweep_common(p: argparse.ArgumentParser) -> None:
    from rmt_lab.bench.workloads import DTYPES
    from rmt_lab.process import Budget
    from rmt_lab.recipes import bench_memory

    p.add_argument("--backbone", help="ready backbone (see `rmt-lab info`); default minilm, tiny-bert with --quick")
    p.add_argument("--num-mem", type=int, help="RMT memory tokens (default 10)")
    p.add_argument("--segment-size", type=int, help="RMT content tokens per segment (default 499: 512 positions)")
    p.add_argument("--device", help="auto (cuda if available), cpu or cuda")
    p.add_argument("--dtype", choices=list(DTYPES), help="default float32; bfloat16 on GPU")
    p.add_argument("--quick", action="store_true", help="tiny settings (tiny-bert, short lengths): seconds per point")
    _recipe_options(p, bench_memory, {"out": "folder of the parquet results"})
    p.add_argument("--no-progress", action="store_false", dest="progress", help="no progress bar")
    p.add_argument("--remeasure", action="store_true", help="run every point again instead of resuming")
    d = Budget()
    g = p.add_argument_group("budget per point (a point out of it becomes a row with the reason)")
    g.add_argument("--grace-s", type=float,
                   help=f"seconds every point may take whatever its length (default {d.grace_s:g})")
    g.add_argument("--min-tokens-per-s", type=float,
                   help=f"pace after the grace; time limit = grace + tokens / pace (default {d.min_tokens_per_s:g})")
    g.add_argument("--rss-limit-gib", type=float,
                   help=f"resident memory limit of a point's process, GiB (default {d.rss_limit_mib / 1024:g})")


def _settings(args: argparse.Namespace, config) -> dict:
    """The options given that are named like fields of the sweep's `config` dataclass, and the budget options
    given (the recipe applies them over the defaults or the --quick preset)."""
    from dataclasses import fields

    given = {f.name: getattr(args, f.name, None) for f in fields(config)}
    budget = {"grace_s": getattr(args, "grace_s", None), "min_tokens_per_s": getattr(args, "min_tokens_per_s", None),
              "rss_limit_mib": None if getattr(args, "rss_limit_gib", None) is None else args.rss_limit_gib * 1024}
    budget = {k: v for k, v in budget.items() if v is not None}
    return {**{k: v for k, v in given.items() if v is not None}, **({"budget": budget} if budget else {})}


def _add_bench_memory(p: argparse.ArgumentParser) -> None:
    from rmt_lab.bench.memory import METHODS, MODES

    p.add_argument("--lengths", nargs="+", type=int, metavar="N", help="forward lengths, tokens per sample")
    p.add_argument("--train-lengths", nargs="+", type=int, metavar="N", help="training-step lengths")
    p.add_argument("--methods", nargs="+", choices=METHODS, help="default: all")
    p.add_argument("--modes", nargs="+", choices=MODES, help="default: forward and train")
    p.add_argument("--bptt", nargs="+", type=int, metavar="K2", dest="bptt_depths",
                   help="RMT training: -1 = full BPTT (default -1 2)")
    p.add_argument("--batch", type=int, help="samples per batch (default 1)")
    _add_sweep_common(p)


def _add_bench_speed(p: argparse.ArgumentParser) -> None:
    from rmt_lab.bench.speed import METHODS
    from rmt_lab.model import COMPILE_MODES

    p.add_argument("--batches", nargs="+", type=int, metavar="B", help="batch sizes (default 1 8)")
    p.add_argument("--segments", type=int, help="full segments per sample (default 16)")
    p.add_argument("--methods", nargs="+", choices=METHODS, help="default: all")
    p.add_argument("--matmul-n", type=int, help="size of the matmul peak's square matrices (default 2048)")
    p.add_argument("--matmul-repeats", type=int, help="matmul peak: median of this many (default 10)")
    p.add_argument("--compile", choices=COMPILE_MODES, help="torch.compile mode of rmt-compiled (default: default)")
    p.add_argument("--train-batch", type=int, help="training step: one batch size in place of the default 8 and 32")
    p.add_argument("--train-segments", type=int, help="training step: segments per sample (default 4)")
    _add_sweep_common(p)


# `rmt-lab bench ACTION`: the options of each action, and its help.
BENCH_ACTIONS = {
    "flops": (_add_bench_flops, "FLOPs versus length, full attention vs RMT (Figure 3 data)"),
    "memory": (_add_bench_memory,
               "measured peak memory and time versus length, RMT vs full attention (eager, sdpa), forward and train"),
    "speed": (_add_bench_speed,
              "RMT forward (eager, compiled) and training step: tokens/s, GFLOP/s, fraction of the matmul peak, "
              "vs the bare backbone and a naive loop"),
    "all": (_add_sweep_common, "flops, memory and speed in turn"),
}


def _add_bench(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, (add, help_text) in BENCH_ACTIONS.items():
        add(actions.add_parser(name, help=help_text, description=help_text))


def _run_bench(args: argparse.Namespace) -> int:
    """The action's recipe with the options given over its defaults (or --quick preset), its report printed;
    `all` runs flops, memory and speed in turn and stops at the first that fails."""
    from rmt_lab.config import ConfigError

    for name in ["flops", "memory", "speed"] if args.action == "all" else [args.action]:
        try:
            print(_bench_report(name, args))
        except ConfigError as err:
            return _error(f"bench {name}", err)
    return 0


def _bench_report(name: str, args: argparse.Namespace) -> str:
    """Benchmark `name` run by its recipe (rmt_lab.recipes.bench_<name>); its report and the files written.
    Under `bench all` flops keeps its defaults: the shared options are those of the measured sweeps."""
    from pathlib import Path

    from rmt_lab import recipes

    out = Path(args.out)
    if name == "flops":
        from rmt_lab.bench.flops_sweep import FlopsSweepConfig, flops_report

        settings = {} if args.action == "all" else _settings(args, FlopsSweepConfig)
        frame, ratio = _call(recipes.bench_flops, args, **settings)
        written = f"wrote {out / 'flops.parquet'} ({len(frame)} rows) and {out / 'flops_ratio.parquet'}"
        return f"{flops_report(frame, ratio)}\n{written}"
    from rmt_lab.bench.memory import MemorySweepConfig, memory_report
    from rmt_lab.bench.speed import SpeedSweepConfig, speed_report

    config, report = {"memory": (MemorySweepConfig, memory_report), "speed": (SpeedSweepConfig, speed_report)}[name]
    frame = _call(getattr(recipes, f"bench_{name}"), args, **_settings(args, config))
    return f"{report(frame)}\n\nwrote {out / f'{name}.parquet'} ({len(frame)} rows of this sweep)"


def _task_config_args(p: argparse.ArgumentParser) -> None:
    """The task options of `trace` and of `data preview|export`, with the trace recipe's defaults (TaskConfig's)."""
    from rmt_lab.recipes import trace

    _recipe_options(p, trace, {"task": "memorize, detect_memorize or reasoning"})
    length = p.add_mutually_exclusive_group()
    length.add_argument("--segments", type=int, help="length in segments (default 1)")
    length.add_argument("--tokens", type=int, help="length in content tokens")
    _recipe_options(p, trace, {"segment_size": "content tokens per segment (report: 499)",
                               "placement": "segment (report) or sentence (BABILong)", "seed": None,
                               "noise": "'pydoc' or a local UTF-8 file/folder or saved dataset",
                               "split": "train, validation or test"})


def _add_data(p: argparse.ArgumentParser) -> None:
    from rmt_lab.tasks.bench import run

    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    preview = sub.add_parser("preview", help="print a sample with its facts highlighted and its ground truth")
    _task_config_args(preview)
    preview.add_argument("--index", type=int, default=0, help="which sample of the split")
    preview.add_argument("--color", choices=["auto", "always", "never"], default="auto", help="ANSI highlight")
    export = sub.add_parser("export", help="write a split to parquet (atomic), with its config as JSON")
    _task_config_args(export)
    export.add_argument("--n", type=int, required=True, help="number of samples")
    export.add_argument("--out", required=True, help="parquet path, e.g. data/memorize_train.parquet")
    bench = sub.add_parser("bench", help="tokens/s and peak RSS when streaming long samples")
    _recipe_options(bench, run, {"tokens": None, "task": None, "placement": None})


def _run_data(args: argparse.Namespace) -> int:
    from rmt_lab.config import ConfigError
    from rmt_lab.tasks import NoiseError, TaskConfig, TaskGenerator, export_split, format_sample
    from rmt_lab.tasks import bench

    if args.data_command == "bench":
        print(bench.format_results(_call(bench.run, args)))
        return 0
    try:
        config = TaskConfig.of_length(args.segments, args.tokens, task=args.task, segment_size=args.segment_size,
                                      placement=args.placement, seed=args.seed, noise=args.noise)
        generator = TaskGenerator(config)
        if args.data_command == "preview":
            color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
            print(format_sample(generator.sample(args.split, args.index), generator.tokenizer, color=color))
        else:
            path = export_split(generator, args.split, args.n, args.out)
            print(f"wrote {args.n} {args.split} samples of {config.task} to {path}")
    except (ConfigError, NoiseError) as err:
        return _error("data", err)
    return 0


def _add_train(p: argparse.ArgumentParser) -> None:
    from rmt_lab.recipes import train

    _recipe_options(p, train, {"config": "named configuration: quick (CPU, minutes), base (the pretrained MiniLM "
                                         "with adapters: hours) or paper (GPU)",
                               "task": "memorize, detect_memorize or reasoning"})
    p.add_argument("--run-dir", help="run folder (default runs/<config>-<task>)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override config fields, e.g. curriculum.max_steps=200 optim.lr=3e-4")


def _run_train(args: argparse.Namespace) -> int:
    from rmt_lab.config import ConfigError
    from rmt_lab.recipes import experiment_config, train
    from rmt_lab.train import CheckpointError, TrainingDiverged

    try:
        experiment_config(args.config, args.task, args.set)  # a bad config is a usage error (2), not a failed run
    except (ConfigError, ValueError) as err:
        return _error("train", err)
    try:
        result = train(args.config, args.task, args.run_dir, resume=args.resume, overrides=args.set)
    except (CheckpointError, TrainingDiverged) as err:
        return _error("train", err, code=1)
    print(result.report())
    return 0


def _add_eval(p: argparse.ArgumentParser) -> None:
    from rmt_lab.model import COMPILE_MODES
    from rmt_lab.recipes import eval_ablation, eval_generalization, eval_long
    from rmt_lab.train.evaluate import EVAL_DTYPES

    sub = p.add_subparsers(dest="eval_command", metavar="ACTION", required=True)
    run_help = "run folder made by rmt-lab train (--run-dir passes through torchrun; --run does not)"
    gen = sub.add_parser("generalization", help="every stage checkpoint on 1..M segments (report Figure 5)")
    gen.add_argument("--max-segments", type=int, help="M (default 2 x the largest trained length)")
    _recipe_options(gen, eval_generalization, {"samples": "test samples per point"})
    gen.add_argument("--out", help="parquet path (default <run>/generalization.parquet)")
    ablation = sub.add_parser("ablation", help="the last stage without recurrence: every segment sees the initial "
                                               "memory (control: near chance beyond 1 segment if memory is used)")
    _recipe_options(ablation, eval_ablation, {"max_segments": "lengths 1..this", "samples": "test samples per point"})
    ablation.add_argument("--out", help="parquet path (default <run>/no_recurrence.parquet)")
    long = sub.add_parser("long", help="one checkpoint streamed at lengths up to millions of tokens (report Figure 1)")
    long.add_argument("--stage", type=int, help="segments of the stage checkpoint to use (default: the largest)")
    _recipe_options(long, eval_long, {"min_tokens": "first length; lengths double up to the max",
                                      "max_tokens": "last length in tokens (e.g. 10000000)",
                                      "samples": "test samples per length"})
    long.add_argument("--samples-from", type=int, nargs=2, metavar=("TOKENS", "N"),
                      help="N samples per length from TOKENS tokens on (fewer where a sample costs the most)")
    _recipe_options(long, eval_long, {"batch_size": None})
    long.add_argument("--compile", choices=COMPILE_MODES,
                      help="torch.compile the backbone with this mode, weights frozen (default: eager)")
    long.add_argument("--out", help="parquet path (default <run>/long_eval.parquet); existing points are kept")
    for action in (gen, ablation, long):
        action.add_argument("--run-dir", "--run", dest="run_dir", required=True, help=run_help)
        action.add_argument("--dtype", default="float32", choices=list(EVAL_DTYPES),
                            help="compute dtype: bfloat16 = autocast (weights and memory fp32; fast on CPUs with "
                                 "AMX and on GPUs)")


def _run_eval(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    from rmt_lab.catalog import run_file
    from rmt_lab.recipes import eval_ablation, eval_generalization, eval_long
    from rmt_lab.train.evaluate import ablation_report, generalization_report, long_report

    recipe, result, report = {
        "generalization": (eval_generalization, "generalization", generalization_report),
        "ablation": (eval_ablation, "no_recurrence", ablation_report),
        "long": (eval_long, "long_eval", long_report),
    }[args.eval_command]
    try:
        frame = _call(recipe, args)
    except (FileNotFoundError, ValueError) as err:
        return _error("eval", err)
    if not PartialState().is_main_process:  # under torchrun: one report
        return 0
    print(report(frame))
    print(f"wrote {args.out or run_file(result, args.run_dir)}")
    return 0


def _add_trace(p: argparse.ArgumentParser) -> None:
    from rmt_lab.recipes import trace, trace_overhead

    model = p.add_argument_group("model")
    _recipe_options(model, trace, {"backbone": "ready backbone for an untrained RMT"})
    model.add_argument("--checkpoint", help="an RMT saved with save_pretrained (overrides --backbone)")
    _recipe_options(model, trace, {"num_mem": "memory tokens of an untrained RMT"})
    data = p.add_argument_group(
        "input", "task samples, 4 segments long unless --segments or --tokens; a checkpoint keeps its segment size"
    )
    _task_config_args(data)
    _recipe_options(data, trace, {"samples": "samples traced together as one batch"})
    keep = p.add_argument_group("what to keep")
    _recipe_options(keep, trace, {"maps": "segments with full maps: none, all, or e.g. '0,2-4,every:10,facts,last'"})
    keep.add_argument("--layers", type=int, nargs="+", help="layers with full maps (default all)")
    keep.add_argument("--heads", type=int, nargs="+", help="heads with full maps (default all)")
    _recipe_options(keep, trace, {"top_k": "tokens written per memory slot to list"})
    keep.add_argument("--keep-memory", action="store_true", help="store every segment's memory state")
    _recipe_options(keep, trace, {"budget_mib": "trace data held in RAM at most", "map_dtype": "float32 or float16"})
    p.add_argument("--out", help="trace folder to write (required unless --bench)")
    p.add_argument("--overwrite", action="store_true", help="replace a trace already in --out")
    bench = p.add_argument_group("benchmark (instead of a trace)")
    bench.add_argument("--bench", action="store_true",
                       help="print the recorder's overhead vs recording off, and a 1M-token trace's peak memory")
    _recipe_options(bench, trace_overhead, {"backbones": None, "segments": "segments per timed run",
                                            "repeats": "alternating untraced/traced runs",
                                            "threads": "torch threads to measure with",
                                            "pairs": "paired segments for the per-segment cost"}, prefix="bench-")
    bench.add_argument("--bench-tokens", type=int, default=1_000_000, help="length of the long trace (0: skip)")
    bench.add_argument("--bench-long-backbone", default="minilm", help="backbone of the long trace")


def _run_trace(args: argparse.Namespace) -> int:
    if args.bench:
        return _run_trace_bench(args)
    if not args.out:
        return _error("trace", "--out is required (the trace folder to write)")
    from rmt_lab.recipes import trace
    from rmt_lab.tasks import NoiseError
    from rmt_lab.trace import TraceBudgetError

    try:
        r = _call(trace, args)
    except (ValueError, FileExistsError, NoiseError, TraceBudgetError) as err:
        return _error("trace", err)
    print(r.report())
    print(f"wrote {args.out}: trace.json, summaries.parquet ({len(r.trace.summaries):,} rows), written.parquet, "
          f"maps/ (load with rmt_lab.trace.Trace.load)")
    return 0


def _run_trace_bench(args: argparse.Namespace) -> int:
    from rmt_lab.recipes import trace_overhead
    from rmt_lab.trace.bench import million_in_subprocess, million_report, overhead_report

    tables = trace_overhead(args.bench_backbones, args.bench_threads, args.bench_segments, args.bench_repeats,
                            args.bench_pairs)
    for line in overhead_report(tables, args.bench_segments, args.bench_repeats, args.bench_pairs):
        print(line)
    if args.bench_tokens:
        long_trace = million_in_subprocess(n_tokens=args.bench_tokens, backbone=args.bench_long_backbone)
        print("\n" + million_report(long_trace))
    return 0


def _add_probe(p: argparse.ArgumentParser) -> None:
    from rmt_lab.recipes import probe

    p.add_argument("--checkpoint", required=True, help="an RMT saved with save_pretrained (a stage checkpoint)")
    _recipe_options(p, probe, {"task": "memorize, detect_memorize or reasoning", "segments": "segments per sample",
                               "samples": "samples; half train the probes, half test them",
                               "split": "train, validation or test", "seed": None})
    p.add_argument("--out", required=True, help="parquet file to write (e.g. <trace folder>/probe.parquet)")


def _run_probe(args: argparse.Namespace) -> int:
    from rmt_lab.recipes import probe, probe_by_distance
    from rmt_lab.train import CheckpointError

    try:
        frame = _call(probe, args)
    except (CheckpointError, ValueError, OSError) as err:
        return _error("probe", err)
    print(f"linear probe on the memory state, {args.task}, {args.samples} samples of {args.segments} segments "
          "(half train, half test); accuracy by distance from the fact segment (chance 0.167):")
    print(probe_by_distance(frame).round(3).to_string())
    print(f"wrote {args.out}")
    return 0


def _add_reproduce(p: argparse.ArgumentParser) -> None:
    from rmt_lab.reproduce import plan

    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--quick", action="store_const", const="quick", dest="plan",
                       help="quick config on a CPU: about 20 minutes on 2 cores")
    which.add_argument("--base", action="store_const", const="base", dest="plan",
                       help="base config (pretrained MiniLM, adapters) on a CPU: many hours on 2 cores, resumable")
    which.add_argument("--paper", action="store_const", const="paper", dest="plan",
                       help="the report's setup on the pretrained MiniLM; meant for a GPU")
    _recipe_options(p, plan, {"results": "results folder (steps whose files exist are skipped)",
                              "figures": "folder for the figures"})
    p.add_argument("--force", nargs="+", default=[], metavar="STEP",
                   help="redo these steps even if their files exist (a prefix: 'train', 'long evaluation memorize')")
    p.add_argument("--jobs", type=int,
                   help="steps run side by side (trainings, evaluations); default: the CPU count up to 3 for "
                        "--quick and --base, 1 for --paper")
    p.add_argument("--list", action="store_true", help="print the steps, their commands and whether each is done")
    p.add_argument("--adopt", action="store_true",
                   help="record the models that steps' existing outputs were made from (results made by running "
                        "a step's command by hand), so that a clone judges them by content, not file times")


def _run_reproduce(args: argparse.Namespace) -> int:
    from rmt_lab.reproduce import adopt, default_jobs, plan, reproduce, step_lines

    steps = plan(args.plan, args.results, args.figures)
    if args.adopt:
        adopted = adopt(steps, args.results)
        print(f"recorded the inputs of {len(adopted)} step(s): {', '.join(s.name for s in adopted) or 'none'}")
        return 0
    if args.list:
        print("\n".join(step_lines(steps, args.results)))
        return 0
    try:
        return reproduce(steps, args.force, args.results, jobs=args.jobs or default_jobs(args.plan))
    except ValueError as err:
        return _error("reproduce", err)


def _add_figures(p: argparse.ArgumentParser) -> None:
    from rmt_lab.recipes import figures

    _recipe_options(p, figures, {"results": "results folder the figures are drawn from",
                                 "out": "folder for the PNG and SVG files"})
    p.add_argument("--only", nargs="+", metavar="NAME", help="draw only these figures (see --list)")
    p.add_argument("--list", action="store_true", help="list the figures and the inputs each one lacks, draw nothing")
    p.add_argument("--strict", action="store_true", help="exit 1 if any figure lacks an input")
    p.add_argument("--config", help="draw the run and trace figures of this configuration only (default: each "
                                    "one with results, into OUT/<config>/)")
    p.add_argument("--recompute", action="store_true",
                   help="first rerun every experiment behind the figures (rmt-lab reproduce --quick, all steps)")


def _run_figures(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rmt_lab.recipes import figures
    from rmt_lab.reproduce import recompute
    from rmt_lab.viz import drawn_summary, figures_failed, format_report, inputs_report

    code = recompute(args.results, args.out) if args.recompute else 0
    if code:
        return code
    if not Path(args.results).is_dir():
        return _error("figures", f"results folder {args.results} does not exist; make results with "
                                 "rmt-lab reproduce --quick (or the train/eval/bench/trace commands)")
    if args.list:
        print(inputs_report(args.results, args.config))
        return 0
    try:
        report = figures(args.results, args.out, only=args.only, config=args.config)
    except ValueError as err:
        return _error("figures", err)
    print(format_report(report))
    print(drawn_summary(report, args.results, args.out))
    if figures_failed(report):
        return 1
    return 1 if args.strict and any(r.missing for r in report) else 0


COMMANDS = {
    "info": (_add_info, _run_info, "versions, device, threads and available backbones"),
    "demo": (_add_demo, _run_demo, "stream a long random input through a pretrained RMT and print tokens/s"),
    "data": (_add_data, _run_data, "synthetic tasks: preview a sample, export a split, benchmark streaming"),
    "train": (_add_train, _run_train, "train an RMT with the report's curriculum"),
    "eval": (_add_eval, _run_eval, "generalization matrix and long evaluation to millions of tokens"),
    "bench": (_add_bench, _run_bench, "benchmarks: FLOPs, memory and speed, RMT against full attention"),
    "trace": (_add_trace, _run_trace, "record memory read/write/retain per segment and attention maps to a folder"),
    "probe": (_add_probe, _run_probe, "linear probes on the memory state: how long the answer stays decodable"),
    "figures": (_add_figures, _run_figures, "draw every figure that has results into figures/ (PNG and SVG)"),
    "reproduce": (_add_reproduce, _run_reproduce, "run every experiment behind the figures, then draw them"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rmt-lab", description="Recurrent Memory Transformer workbench.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (add, run, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add(p)
        p.set_defaults(_run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    return args._run(args)


if __name__ == "__main__":
    sys.exit(main())
