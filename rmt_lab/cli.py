"""The `rmt-lab` command. Each subcommand is a pair: `_add_<name>(parser)` and `_run_<name>(args)`.

It parses options into the arguments of `rmt_lab.recipes`, taking their defaults and types from the recipes'
signatures and their help from the recipes' docstrings, and prints what comes back with the report functions
of the modules that make each result. A `_run_<name>` returns its exit code, None for 0; the errors it lets
through are turned into a one-line message and an exit code in one place, `main` (see EXIT_CODES). This is
the only module that imports every part of rmt_lab; the library code never imports it.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path

from accelerate import PartialState

from rmt_lab import recipes, reproduce
from rmt_lab.bench.flops_sweep import FlopsSweepConfig, flops_report
from rmt_lab.bench.inference import stream_summary, stream_table
from rmt_lab.bench.machine import info_report
from rmt_lab.bench.memory import MemorySweepConfig, memory_report
from rmt_lab.bench.speed import SpeedSweepConfig, speed_report
from rmt_lab.bench.workloads import DTYPES
from rmt_lab.catalog import option, run_file
from rmt_lab.model import COMPILE_MODES
from rmt_lab.tasks import bench as task_bench
from rmt_lab.trace import TraceBudgetError
from rmt_lab.trace import bench as trace_bench
from rmt_lab.train import TrainingDiverged
from rmt_lab.train.evaluate import EVAL_DTYPES, ablation_report, generalization_report, long_report


def _options(p, recipe, names: str, prefix: str = "", settings: type | None = None, **extra: dict) -> None:
    """An option --<prefix><argument> (see rmt_lab.catalog.option) for each argument in `names` of `recipe`,
    with the argument's default (none: the option is required), a type from its annotation and the help that
    the recipe's docstring gives it under "Args:"; `extra` adds argparse settings by argument (metavar ...,
    and "aliases": more option strings).
    An argument that is a field of the dataclass `settings`, which the recipe takes as **settings, has no
    default: left unset, the recipe keeps the field's default or its preset's."""
    hints = typing.get_type_hints(recipe) | (typing.get_type_hints(settings) if settings else {})
    helps, parameters = recipes.argument_help(recipe), inspect.signature(recipe).parameters
    for name in names.split():
        kwargs = {"dest": prefix.replace("-", "_") + name, "help": helps.get(name), **_typed(hints[name])}
        default = parameters[name].default if name in parameters else None
        if default is inspect.Parameter.empty:
            kwargs["required"] = True
        else:
            kwargs["default"] = list(default) if isinstance(default, tuple) else default
        kwargs |= extra.get(name, {})
        p.add_argument("--" + prefix + option(name).removeprefix("--"), *kwargs.pop("aliases", ()), **kwargs)


def _typed(hint) -> dict:
    """argparse's settings for an argument annotated `hint`: a flag for a bool, choices for a Literal, one or
    more values for a sequence (a tuple's length where it is fixed); of `X | None` and `str | Path`, the first."""
    if isinstance(hint, types.UnionType):
        hint = typing.get_args(hint)[0]
    origin, items = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        return {"action": "store_true"}
    if origin is typing.Literal:
        return {"choices": items}
    if origin in (tuple, Sequence):
        return {**_typed(items[0]), "nargs": "+" if len(items) == 1 or items[1] is ... else len(items)}
    return {"type": hint}


def _given(recipe, args: argparse.Namespace, prefix: str = "") -> dict:
    """The options named like the arguments of `recipe` (a function or a dataclass; after `prefix`) that were
    given: one left unset, None, keeps the argument's default."""
    names = [name for name, p in inspect.signature(recipe).parameters.items() if p.kind is not p.VAR_KEYWORD]
    return {name: getattr(args, prefix + name) for name in names if getattr(args, prefix + name, None) is not None}


def _call(recipe, args: argparse.Namespace, **fixed):
    """`recipe` with the options given that are named like its arguments, and the arguments `fixed` over them."""
    return recipe(**_given(recipe, args) | fixed)


def _add_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bench", action="store_true", help="also measure minilm RMT inference tokens/s and peak memory")
    _options(p, recipes.stream_lengths, "tokens", prefix="bench-", tokens={"metavar": "N"})


def _run_info(args: argparse.Namespace) -> None:
    print(info_report())
    if args.bench:
        print()
        for line in stream_table(recipes.stream_lengths(args.bench_tokens)):
            print(line, flush=True)  # each length when it is measured: a million tokens take minutes


def _add_demo(p: argparse.ArgumentParser) -> None:
    _options(p, recipes.stream, "tokens backbone device dtype compile", dtype={"choices": list(DTYPES)},
             compile={"choices": COMPILE_MODES})


def _run_demo(args: argparse.Namespace) -> None:
    print(f"Streaming {args.tokens:,} random tokens through an RMT over {args.backbone!r} (10 memory tokens, "
          f"{args.dtype}{', compiled ' + args.compile if args.compile else ''}) ...")
    print(stream_summary(_call(recipes.stream, args)))


def _add_bench_flops(p: argparse.ArgumentParser) -> None:
    _options(p, recipes.bench_flops, "models lengths segment_len num_mem head mode ratio_tokens measure out",
             settings=FlopsSweepConfig)


def _add_bench_memory(p: argparse.ArgumentParser) -> None:
    _options(p, recipes.bench_memory, "lengths train_lengths methods modes bptt_depths batch",
             settings=MemorySweepConfig, lengths={"metavar": "N"}, train_lengths={"metavar": "N"},
             bptt_depths={"metavar": "K2"})
    _add_sweep_common(p)


def _add_bench_speed(p: argparse.ArgumentParser) -> None:
    names = "batches segments methods matmul_n matmul_repeats compile train_batch train_segments train_dropout"
    _options(p, recipes.bench_speed, names, settings=SpeedSweepConfig, batches={"metavar": "B"})
    _add_sweep_common(p)


def _add_sweep_common(p: argparse.ArgumentParser) -> None:
    """The options of the memory and speed sweeps both (and of `bench all`), with bench_memory's help texts."""
    _options(p, recipes.bench_memory, "backbone num_mem segment_size device dtype quick out",
             settings=MemorySweepConfig)
    p.add_argument("--no-progress", action="store_false", dest="progress", help="no progress bar")
    _options(p, recipes.bench_memory, "remeasure")
    _options(p.add_argument_group("budget per point (a point out of it becomes a row with the reason)"),
             recipes.bench_memory, "grace_s min_tokens_per_s rss_limit_gib")


# `rmt-lab bench ACTION`: the options of each action, and its help.
BENCH_ACTIONS = {
    "flops": (_add_bench_flops, "FLOPs versus length, full attention vs RMT (Figure 3 data)"),
    "memory": (_add_bench_memory,
               "measured peak memory and time versus length, RMT vs full attention (eager, sdpa), forward and train"),
    "speed": (_add_bench_speed,
              ("RMT forward (eager, compiled) and training step: tokens/s, GFLOP/s, fraction of the matmul peak, "
               "vs the bare backbone and a naive loop")),
    "all": (_add_sweep_common, "flops, memory and speed in turn"),
}


def _add_bench(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, (add, help_text) in BENCH_ACTIONS.items():
        add(actions.add_parser(name, help=help_text, description=help_text))


def _run_bench(args: argparse.Namespace) -> None:
    """The action's recipe (rmt_lab.recipes.bench_<action>) with the options given over its defaults (or the
    --quick preset); its report and the files written. `all` runs flops, memory and speed in turn and stops at
    the first that fails; flops keeps its defaults there: the shared options are those of the measured sweeps."""
    out = Path(args.out)
    for name in ["flops", "memory", "speed"] if args.action == "all" else [args.action]:
        if name == "flops":
            settings = {} if args.action == "all" else _given(FlopsSweepConfig, args)
            frame, ratio = _call(recipes.bench_flops, args, **settings)
            print(flops_report(frame, ratio))
            print(f"wrote {out / 'flops.parquet'} ({len(frame)} rows) and {out / 'flops_ratio.parquet'}")
        else:
            config, report = {"memory": (MemorySweepConfig, memory_report),
                              "speed": (SpeedSweepConfig, speed_report)}[name]
            frame = _call(getattr(recipes, f"bench_{name}"), args, **_given(config, args))
            print(f"{report(frame)}\n\nwrote {out / f'{name}.parquet'} ({len(frame)} rows of this sweep)")


def _task_options(p, description: str):
    """The task options of `trace` and of `data preview|export` (the trace recipe's) in an "input" group whose
    description says how long a sample is by default; returns the group."""
    p = p.add_argument_group("input", f"task samples, {description}")
    _options(p, recipes.trace, "task")
    _options(p.add_mutually_exclusive_group(), recipes.trace, "segments tokens")
    _options(p, recipes.trace, "segment_size placement seed noise split")
    return p


def _add_data(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    preview = sub.add_parser("preview", help="print a sample with its facts highlighted and its ground truth")
    _task_options(preview, "1 segment long unless --segments or --tokens")
    _options(preview, recipes.preview_data, "index")
    preview.add_argument("--color", choices=["auto", "always", "never"], default="auto", help="ANSI highlight")
    export = sub.add_parser("export", help="write a split to parquet (atomic), with its config as JSON")
    _task_options(export, "1 segment long unless --segments or --tokens")
    _options(export, recipes.export_data, "n out")
    _options(sub.add_parser("bench", help="tokens/s and peak RSS when streaming long samples"), task_bench.run,
             "tokens task placement")


def _run_data(args: argparse.Namespace) -> None:
    task = _given(recipes.task_generator, args)
    if args.action == "bench":
        print(task_bench.format_results(_call(task_bench.run, args)))
    elif args.action == "preview":
        color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
        print(_call(recipes.preview_data, args, color=color, **task))
    else:
        path = _call(recipes.export_data, args, **task)
        print(f"wrote {args.n} {args.split} samples of {args.task} to {path}")


def _add_train(p: argparse.ArgumentParser) -> None:
    _options(p, recipes.train, "config task run_dir resume overrides",
             overrides={"nargs": "*", "metavar": "KEY=VALUE"})


def _run_train(args: argparse.Namespace) -> None:
    print(_call(recipes.train, args).report())


# `rmt-lab eval ACTION`: its recipe, the recipe's arguments that are options, the result file's key, the
# report, and the action's help.
EVAL_ACTIONS = {
    "generalization": (recipes.eval_generalization, "max_segments samples out", "generalization",
                       generalization_report, "every stage checkpoint on 1..M segments (report Figure 5)"),
    "ablation": (recipes.eval_ablation, "max_segments samples out", "no_recurrence", ablation_report,
                 ("the last stage without recurrence: every segment sees the initial memory (control: near "
                  "chance beyond 1 segment if memory is used)")),
    "long": (recipes.eval_long, "stage min_tokens max_tokens samples samples_from batch_size compile out",
             "long_eval", long_report,
             "one checkpoint streamed at lengths up to millions of tokens (report Figure 1)"),
}


def _add_eval(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, (recipe, names, _, _, help_text) in EVAL_ACTIONS.items():
        action = sub.add_parser(name, help=help_text)
        _options(action, recipe, names, samples_from={"metavar": ("TOKENS", "N")}, compile={"choices": COMPILE_MODES})
        # every evaluation takes these two as eval_generalization does, and its docstring says what they are
        _options(action, recipes.eval_generalization, "run_dir dtype", run_dir={"aliases": ["--run"]},
                 dtype={"choices": list(EVAL_DTYPES)})


def _run_eval(args: argparse.Namespace) -> None:
    recipe, _, result, report, _ = EVAL_ACTIONS[args.action]
    frame = _call(recipe, args)
    if PartialState().is_main_process:  # under torchrun: one report
        print(report(frame))
        print(f"wrote {args.out or run_file(result, args.run_dir)}")


def _add_trace(p: argparse.ArgumentParser) -> None:
    _options(p.add_argument_group("model"), recipes.trace, "backbone checkpoint num_mem")
    data = _task_options(p, "4 segments long unless --segments or --tokens; a checkpoint keeps its segment size")
    _options(data, recipes.trace, "samples")
    _options(p.add_argument_group("what to keep"), recipes.trace,
             "maps layers heads top_k keep_memory budget_mib map_dtype")
    _options(p, recipes.trace, "out overwrite",
             out={"required": False, "help": "trace folder to write (required unless --bench)"})
    bench = p.add_argument_group("benchmark (instead of a trace)")
    bench.add_argument("--bench", action="store_true",
                       help="print the recorder's overhead vs recording off, and a 1M-token trace's peak memory")
    _options(bench, recipes.trace_overhead, "backbones segments repeats threads pairs tokens long_backbone",
             prefix="bench-")


def _run_trace(args: argparse.Namespace) -> None:
    if args.bench:
        tables = recipes.trace_overhead(**_given(recipes.trace_overhead, args, prefix="bench_"))
        for line in trace_bench.overhead_report(tables, args.bench_segments, args.bench_repeats, args.bench_pairs):
            print(line, flush=True)  # each row when it is measured: a row takes seconds to minutes
        for long_trace in tables["long"]:
            print("\n" + trace_bench.million_report(long_trace))
        return
    if not args.out:  # argparse cannot say "required unless --bench"
        raise ValueError("--out is required (the trace folder to write)")
    r = _call(recipes.trace, args)
    print(r.report())
    print(f"wrote {args.out}: trace.json, summaries.parquet ({len(r.trace.summaries):,} rows), written.parquet, "
          f"maps/ (load with rmt_lab.trace.Trace.load)")


def _add_probe(p: argparse.ArgumentParser) -> None:
    _options(p, recipes.probe, "checkpoint task segments samples split seed out")


def _run_probe(args: argparse.Namespace) -> None:
    frame = _call(recipes.probe, args)
    print(f"linear probe on the memory state, {args.task}, {args.samples} samples of {args.segments} segments "
          "(half train, half test); accuracy by distance from the fact segment (chance: 0.167 for a place, "
          "0.25 for a direction):")
    print(recipes.probe_by_distance(frame).round(3).to_string())
    print(f"wrote {args.out}")


def _add_reproduce(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    for name, help_text in reproduce.PLANS.items():
        which.add_argument("--" + name, action="store_const", const=name, dest="plan", help=help_text)
    _options(p, reproduce.plan, "results figures")
    _options(p, reproduce.reproduce, "force", force={"metavar": "STEP"})
    # not reproduce()'s argument: its default depends on the plan (reproduce.default_jobs)
    p.add_argument("--jobs", type=int,
                   help="steps run side by side (trainings, evaluations); default: the CPU count up to 3 for "
                        "--quick and --base, 1 for --paper")
    p.add_argument("--list", action="store_true", help="print the steps, their commands and whether each is done")
    p.add_argument("--adopt", action="store_true",
                   help="record the models that steps' existing outputs were made from (results made by running "
                        "a step's command by hand), so that a clone judges them by content, not file times; "
                        "outputs whose model is gone are kept, and the model is not remade for them")


def _run_reproduce(args: argparse.Namespace) -> int | None:
    steps = reproduce.plan(args.plan, args.results, args.figures)
    if args.adopt:
        adopted = reproduce.adopt(steps, args.results)
        print(f"recorded the inputs of {len(adopted)} step(s): {', '.join(s.name for s in adopted) or 'none'}")
    elif args.list:
        print("\n".join(reproduce.step_lines(steps, args.results)))
    else:
        return reproduce.reproduce(steps, args.force, args.results, jobs=args.jobs or reproduce.default_jobs(args.plan),
                                   plan_name=args.plan)


def _add_figures(p: argparse.ArgumentParser) -> None:
    _options(p, recipes.figures, "results out only", only={"metavar": "NAME"})
    p.add_argument("--list", action="store_true", help="list the figures and the inputs each one lacks, draw nothing")
    p.add_argument("--strict", action="store_true", help="exit 1 if any figure lacks an input")
    _options(p, recipes.figures, "config")
    p.add_argument("--recompute", action="store_true",
                   help="first rerun every experiment behind the figures (rmt-lab reproduce --quick, all steps)")


def _run_figures(args: argparse.Namespace) -> int | None:
    from rmt_lab.viz import drawn_summary, figures_failed, format_report, inputs_report  # loads matplotlib

    if args.recompute and (code := reproduce.recompute(args.results, args.out)):
        return code
    if args.list:
        print(inputs_report(recipes.results_folder(args.results), args.config))
        return None
    report = _call(recipes.figures, args)
    print(format_report(report))
    print(drawn_summary(report, args.results, args.out))
    return 1 if figures_failed(report) or (args.strict and any(r.missing for r in report)) else 0


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


# Exit code by exception class, for the errors that are the user's to fix: their message names the problem and
# is printed alone. 2 is bad input, as for argparse's usage errors; 1 a run that started well and failed. Any
# other exception is a bug and keeps its traceback.
EXIT_CODES: dict[type[Exception], int] = {
    ValueError: 2,  # rmt_lab's input checks (ConfigError, NoiseError, CheckpointError ...), if rmt_lab raised it
    OSError: 2,  # a file or folder named in the options is missing, already there or unreadable
    TraceBudgetError: 2,  # the trace would hold more than --budget-mib: keep fewer maps or raise the budget
    TrainingDiverged: 1,  # the loss became NaN or infinite mid-run; the message names the last good checkpoint
}


def _raised_by_rmt_lab(err: BaseException) -> bool:
    """Whether `err` was raised in rmt_lab's own code: a ValueError from inside torch, numpy or pandas means
    rmt_lab called them wrongly (a bug), not that the input was bad, and its traceback is what fixes it."""
    tb = err.__traceback__
    while tb.tb_next:
        tb = tb.tb_next
    return tb.tb_frame.f_globals.get("__name__", "").partition(".")[0] == "rmt_lab"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    try:
        return args._run(args) or 0
    except tuple(EXIT_CODES) as err:
        if isinstance(err, ValueError) and not _raised_by_rmt_lab(err):
            raise
        command = " ".join(filter(None, [args.command, getattr(args, "action", None)]))
        print(f"rmt-lab {command}: error: {err}", file=sys.stderr)
        return next(code for kind, code in EXIT_CODES.items() if isinstance(err, kind))


if __name__ == "__main__":
    sys.exit(main())
