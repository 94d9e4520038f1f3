"""The `rmt-lab` command. Each subcommand is a pair: `_add_<name>(parser)` and `_run_<name>(args)`.

This is the only module that imports every part of rmt_lab; the library code never imports it.
"""

from __future__ import annotations

import argparse
import platform
import sys


def _add_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bench", action="store_true", help="also measure minilm RMT inference tokens/s and peak memory")
    p.add_argument(
        "--bench-tokens", type=int, nargs="+", default=[16_000, 1_000_000], metavar="N",
        help="input lengths for --bench, each measured in a fresh process (default: 16000 1000000)",
    )


def _run_info(args: argparse.Namespace) -> int:
    import torch
    import transformers

    import rmt_lab
    from rmt_lab.model import available_backbones

    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    rows = [
        ("rmt_lab", rmt_lab.__version__),
        ("python", platform.python_version()),
        ("torch", torch.__version__),
        ("transformers", transformers.__version__),
        ("device", "cuda" if torch.cuda.is_available() else "cpu"),
        ("cuda device", cuda),
        ("cpu", platform.processor() or platform.machine()),
        ("torch threads", str(torch.get_num_threads())),
        ("backbones", ", ".join(available_backbones())),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    if args.bench:
        from rmt_lab.bench.inference import measure_in_subprocess

        print("\nminilm RMT, 10 memory tokens, 499 content tokens per segment (512 positions), batch 1, streaming:")
        print(f"{'tokens':>10} {'segments':>9} {'seconds':>9} {'tokens/s':>9} {'peak MiB':>9}")
        first = None
        for n in args.bench_tokens:
            r = measure_in_subprocess(n)
            first = first or r["peak_mib"]
            print(
                f"{n:>10,} {r['n_segments']:>9,} {r['seconds']:>9.1f} {r['tokens_per_s']:>9.0f} {r['peak_mib']:>9.1f}"
                f"  ({r['peak_mib'] / first:.3f}x the first length's peak)"
            )
    return 0


def _add_demo(p: argparse.ArgumentParser) -> None:
    from rmt_lab.bench.workloads import DTYPES
    from rmt_lab.model import COMPILE_MODES

    p.add_argument("--tokens", type=int, default=100_000, help="input length in tokens (default 100000)")
    p.add_argument("--backbone", default="minilm", help="ready backbone (see `rmt-lab info`)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    p.add_argument("--dtype", choices=list(DTYPES), default="float32")
    p.add_argument("--compile", choices=COMPILE_MODES,
                   help="torch.compile the backbone with this mode (default: eager)")


def _run_demo(args: argparse.Namespace) -> int:
    from rmt_lab.bench.inference import measure_in_subprocess

    print(f"Streaming {args.tokens:,} random tokens through an RMT over {args.backbone!r} (10 memory tokens, "
          f"{args.dtype}{', compiled ' + args.compile if args.compile else ''}) ...")
    r = measure_in_subprocess(args.tokens, backbone=args.backbone, device=args.device, dtype=args.dtype,
                              compile=args.compile or "")
    print(
        f"{r['n_segments']:,} segments in {r['seconds']:.1f} s: {r['tokens_per_s']:,.0f} tokens/s on {r['device']} "
        f"({r['threads']} threads); memory shape {tuple(r['memory_shape'])} (batch, memory tokens, d_model); "
        f"peak memory {r['peak_mib']:.0f} MiB"
    )
    return 0


def _add_bench_flops(p: argparse.ArgumentParser) -> None:
    from rmt_lab.bench.flops_sweep import FlopsSweepConfig
    from rmt_lab.recipes import bench_flops, defaults

    d = FlopsSweepConfig()
    p.add_argument("--models", nargs="+", default=list(d.models), help="known model names (default: the OPT family)")
    p.add_argument("--lengths", nargs="+", type=int, default=list(d.lengths), help="input lengths in tokens")
    p.add_argument("--segment-len", type=int, default=d.segment_len, help="RMT content tokens per segment")
    p.add_argument("--num-mem", type=int, default=d.num_mem, help="RMT memory tokens")
    p.add_argument("--head", choices=["none", "lm", "cls"], default=d.head, help="what sits on top of the stack")
    p.add_argument("--mode", choices=["forward", "train"], default=d.mode, help="forward pass, or forward + backward")
    p.add_argument("--ratio-tokens", type=int, default=d.ratio_tokens, help="length of the full / RMT ratio table")
    p.add_argument("--measure", action="store_true", help="also count every point with FlopCounterMode (meta device)")
    p.add_argument("--out", default=defaults(bench_flops)["out"], help="folder for flops.parquet and flops_ratio.parquet")


def _run_bench_flops(args: argparse.Namespace) -> int:
    return _flops(args.out, {"models": args.models, "lengths": args.lengths, "segment_len": args.segment_len,
                             "num_mem": args.num_mem, "head": args.head, "mode": args.mode,
                             "ratio_tokens": args.ratio_tokens, "measure": args.measure})


def _flops(out: str, settings: dict) -> int:
    """The FLOPs recipe with `settings` (FlopsSweepConfig fields), and its table printed."""
    from pathlib import Path

    from rmt_lab.bench.flops_sweep import FlopsSweepConfig
    from rmt_lab.config import ConfigError, from_dict
    from rmt_lab.recipes import bench_flops

    try:
        config = from_dict(FlopsSweepConfig, settings)
        frame, ratio = bench_flops(out, **settings)
    except ConfigError as err:
        print(f"rmt-lab bench flops: {err}", file=sys.stderr)
        return 2
    print(f"{config.mode} FLOPs, full attention / RMT (segment {config.segment_len}, {config.num_mem} memory tokens, "
          f"head {config.head}) at {config.ratio_tokens:,} tokens:")
    shown = ratio[["model", "full_flops", "rmt_flops", "full_over_rmt"]]
    print(shown.to_string(index=False, formatters={
        "full_flops": "{:.3e}".format, "rmt_flops": "{:.3e}".format, "full_over_rmt": "{:,.1f}".format,
    }))
    if config.measure:
        worst = (frame["measured_flops"] / frame["flops"] - 1).abs().max()
        print(f"measured (FlopCounterMode, meta device) vs analytic: largest relative difference {worst:.2e}")
    print(f"wrote {Path(out) / 'flops.parquet'} ({len(frame)} rows) and {Path(out) / 'flops_ratio.parquet'}")
    return 0


def _add_budget(p: argparse.ArgumentParser) -> None:
    from rmt_lab.process import Budget

    d = Budget()
    g = p.add_argument_group("budget per point (a point out of it becomes a row with the reason)")
    g.add_argument("--grace-s", type=float, help=f"seconds every point may take whatever its length (default {d.grace_s:g})")
    g.add_argument("--min-tokens-per-s", type=float,
                   help=f"pace after the grace; time limit = grace + tokens / pace (default {d.min_tokens_per_s:g})")
    g.add_argument("--rss-limit-gib", type=float,
                   help=f"resident memory limit of a point's process, GiB (default {d.rss_limit_mib / 1024:g})")


def _budget_overrides(args: argparse.Namespace) -> dict:
    budget = {"grace_s": args.grace_s, "min_tokens_per_s": args.min_tokens_per_s,
              "rss_limit_mib": None if args.rss_limit_gib is None else args.rss_limit_gib * 1024}
    budget = {k: v for k, v in budget.items() if v is not None}
    return {"budget": budget} if budget else {}


def _add_sweep_common(p: argparse.ArgumentParser) -> None:
    from rmt_lab.bench.workloads import DTYPES

    p.add_argument("--backbone", help="ready backbone (see `rmt-lab info`); default minilm, tiny-bert with --quick")
    p.add_argument("--num-mem", type=int, help="RMT memory tokens (default 10)")
    p.add_argument("--segment-size", type=int, help="RMT content tokens per segment (default 499: 512 positions)")
    p.add_argument("--device", help="auto (cuda if available), cpu or cuda")
    p.add_argument("--dtype", choices=list(DTYPES), help="default float32; bfloat16 on GPU")
    p.add_argument("--quick", action="store_true", help="tiny settings (tiny-bert, short lengths): seconds per point")
    p.add_argument("--out", default="data/results/bench", help="folder of the parquet results")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--remeasure", action="store_true", help="run every point again instead of resuming")
    _add_budget(p)


def _sweep_settings(args: argparse.Namespace, fields: dict) -> dict:
    """The options given explicitly (the recipe applies them over the defaults or the --quick preset)."""
    given = {"backbone": args.backbone, "num_mem": args.num_mem, "segment_size": args.segment_size,
             "device": args.device, "dtype": args.dtype, **fields}
    return {**{k: v for k, v in given.items() if v is not None}, **_budget_overrides(args)}


def _add_bench_memory(p: argparse.ArgumentParser) -> None:
    from rmt_lab.bench.memory import METHODS, MODES

    p.add_argument("--lengths", nargs="+", type=int, metavar="N", help="forward lengths, tokens per sample")
    p.add_argument("--train-lengths", nargs="+", type=int, metavar="N", help="training-step lengths")
    p.add_argument("--methods", nargs="+", choices=METHODS, help="default: all")
    p.add_argument("--modes", nargs="+", choices=MODES, help="default: forward and train")
    p.add_argument("--bptt", nargs="+", type=int, metavar="K2", help="RMT training: -1 = full BPTT (default -1 2)")
    p.add_argument("--batch", type=int, help="samples per batch (default 1)")
    _add_sweep_common(p)


def _memory_settings(args: argparse.Namespace) -> dict:
    return _sweep_settings(args, {
        "lengths": args.lengths, "train_lengths": args.train_lengths, "methods": args.methods,
        "modes": args.modes, "bptt_depths": args.bptt, "batch": args.batch,
    })


def _run_sweep(args: argparse.Namespace, name: str, settings: dict, show) -> int:
    """One measured sweep (memory or speed) through its recipe, resuming from <out>/<name>.parquet."""
    from pathlib import Path

    from rmt_lab import recipes
    from rmt_lab.config import ConfigError

    try:
        frame = getattr(recipes, f"bench_{name}")(args.out, quick=args.quick, remeasure=args.remeasure,
                                                  progress=not args.no_progress, **settings)
    except ConfigError as err:
        print(f"rmt-lab bench {name}: {err}", file=sys.stderr)
        return 2
    print(show(frame))
    print(f"\nwrote {Path(args.out) / f'{name}.parquet'} ({len(frame)} rows of this sweep)")
    return 0


def _run_bench_memory(args: argparse.Namespace) -> int:
    from rmt_lab.bench.memory import memory_report

    return _run_sweep(args, "memory", _memory_settings(args), memory_report)


def _add_bench_speed(p: argparse.ArgumentParser) -> None:
    from rmt_lab.bench.speed import METHODS
    from rmt_lab.model import COMPILE_MODES

    p.add_argument("--batches", nargs="+", type=int, metavar="B", help="batch sizes (default 1 8)")
    p.add_argument("--segments", type=int, help="full segments per sample (default 16)")
    p.add_argument("--methods", nargs="+", choices=METHODS, help="default: all")
    p.add_argument("--matmul-n", type=int, help="size of the matmul peak's square matrices (default 2048)")
    p.add_argument("--matmul-repeats", type=int, help="matmul peak: median of this many (default 10)")
    p.add_argument("--compile", choices=COMPILE_MODES, help="torch.compile mode of rmt-compiled (default: default)")
    p.add_argument("--train-batch", type=int, help="training step: samples per batch (default 2)")
    p.add_argument("--train-segments", type=int, help="training step: segments per sample (default 4)")
    _add_sweep_common(p)


def _speed_settings(args: argparse.Namespace) -> dict:
    return _sweep_settings(args, {
        "batches": args.batches, "segments": args.segments, "methods": args.methods,
        "matmul_n": args.matmul_n, "matmul_repeats": args.matmul_repeats, "compile": args.compile,
        "train_batch": args.train_batch, "train_segments": args.train_segments,
    })


def _run_bench_speed(args: argparse.Namespace) -> int:
    from rmt_lab.bench.speed import speed_report

    return _run_sweep(args, "speed", _speed_settings(args), speed_report)


def _add_bench_all(p: argparse.ArgumentParser) -> None:
    _add_sweep_common(p)


def _run_bench_all(args: argparse.Namespace) -> int:
    """flops, then memory, then speed, each with its defaults (or --quick preset) and the shared options."""
    from rmt_lab.bench.memory import memory_report
    from rmt_lab.bench.speed import speed_report

    quick_flops = {"models": ["opt-125m", "opt-1.3b"], "lengths": [512, 32_000], "ratio_tokens": 32_000}
    code = _flops(args.out, quick_flops if args.quick else {})
    for name, report in (("memory", memory_report), ("speed", speed_report)):
        code = code or _run_sweep(args, name, _sweep_settings(args, {}), report)
    return code


# `rmt-lab bench ACTION`: each action is a pair like the commands.
BENCH_ACTIONS = {
    "flops": (_add_bench_flops, _run_bench_flops, "FLOPs versus length, full attention vs RMT (Figure 3 data)"),
    "memory": (_add_bench_memory, _run_bench_memory,
               "measured peak memory and time versus length, RMT vs full attention (eager, sdpa), forward and train"),
    "speed": (_add_bench_speed, _run_bench_speed,
              "RMT forward (eager, compiled) and training step: tokens/s, GFLOP/s, fraction of the matmul peak, "
              "vs the bare backbone and a naive loop"),
    "all": (_add_bench_all, _run_bench_all, "flops, memory and speed in turn"),
}


def _add_bench(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, (add, run, help_text) in BENCH_ACTIONS.items():
        a = actions.add_parser(name, help=help_text, description=help_text)
        add(a)
        a.set_defaults(_bench_run=run)


def _run_bench(args: argparse.Namespace) -> int:
    return args._bench_run(args)


def _task_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="memorize", help="memorize, detect_memorize or reasoning")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--segments", type=int, help="length in segments (default 1)")
    length.add_argument("--tokens", type=int, help="length in content tokens")
    p.add_argument("--segment-size", type=int, default=499, help="content tokens per segment (report: 499)")
    p.add_argument("--placement", default="segment", help="segment (report) or sentence (BABILong)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise", default="pydoc", help="'pydoc' or a local UTF-8 file/folder or saved dataset")
    p.add_argument("--split", default="train", help="train, validation or test")


def _add_data(p: argparse.ArgumentParser) -> None:
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
    bench.add_argument("--tokens", type=int, nargs="+", default=[2_048_000, 10_000_000])
    bench.add_argument("--task", default="reasoning")
    bench.add_argument("--placement", default="segment")


def _run_data(args: argparse.Namespace) -> int:
    from rmt_lab.config import ConfigError
    from rmt_lab.tasks import NoiseError, TaskConfig, TaskGenerator, export_split, format_sample
    from rmt_lab.tasks import bench

    if args.data_command == "bench":
        print(bench.format_results(bench.run(args.tokens, args.task, args.placement)))
        return 0
    unit, length = ("tokens", args.tokens) if args.tokens is not None else ("segments", args.segments or 1)
    try:
        config = TaskConfig(
            task=args.task, segment_size=args.segment_size, length=length, unit=unit,
            placement=args.placement, seed=args.seed, noise=args.noise,
        )
        generator = TaskGenerator(config)
        if args.data_command == "preview":
            color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
            print(format_sample(generator.sample(args.split, args.index), generator.tokenizer, color=color))
        else:
            path = export_split(generator, args.split, args.n, args.out)
            print(f"wrote {args.n} {args.split} samples of {config.task} to {path}")
    except (ConfigError, NoiseError) as err:
        print(f"rmt-lab data: error: {err}", file=sys.stderr)
        return 2
    return 0


def _add_train(p: argparse.ArgumentParser) -> None:
    from rmt_lab.recipes import defaults, train

    d = defaults(train)
    p.add_argument("--config", default=d["config"], help="named configuration: quick (CPU, minutes), base (the "
                                                          "pretrained MiniLM with adapters: hours) or paper (GPU)")
    p.add_argument("--task", default=d["task"], help="memorize, detect_memorize or reasoning")
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
        print(f"rmt-lab train: error: {err}", file=sys.stderr)
        return 2
    try:
        result = train(args.config, args.task, args.run_dir, resume=args.resume, overrides=args.set)
    except (CheckpointError, TrainingDiverged) as err:
        print(f"rmt-lab train: error: {err}", file=sys.stderr)
        return 1
    print(f"run folder {result.run_dir}; validation accuracy at the end of each stage:")
    for n, acc in result.stage_accuracy().items():
        print(f"  {n:>3} segments: {acc:.3f}")
    return 0


def _add_eval(p: argparse.ArgumentParser) -> None:
    from rmt_lab.model import COMPILE_MODES
    from rmt_lab.recipes import defaults, eval_ablation, eval_generalization, eval_long
    from rmt_lab.train.evaluate import EVAL_DTYPES

    sub = p.add_subparsers(dest="eval_command", metavar="ACTION", required=True)
    run_help = "run folder made by rmt-lab train (--run-dir passes through torchrun; --run does not)"
    gen = sub.add_parser("generalization", help="every stage checkpoint on 1..M segments (report Figure 5)")
    d = defaults(eval_generalization)
    gen.add_argument("--max-segments", type=int, help="M (default 2 x the largest trained length)")
    gen.add_argument("--samples", type=int, default=d["samples"], help="test samples per point")
    gen.add_argument("--out", help="parquet path (default <run>/generalization.parquet)")
    ablation = sub.add_parser("ablation", help="the last stage without recurrence: every segment sees the initial "
                                               "memory (control: near chance beyond 1 segment if memory is used)")
    d = defaults(eval_ablation)
    ablation.add_argument("--max-segments", type=int, default=d["max_segments"], help="lengths 1..this")
    ablation.add_argument("--samples", type=int, default=d["samples"], help="test samples per point")
    ablation.add_argument("--out", help="parquet path (default <run>/no_recurrence.parquet)")
    long = sub.add_parser("long", help="one checkpoint streamed at lengths up to millions of tokens (report Figure 1)")
    d = defaults(eval_long)
    long.add_argument("--stage", type=int, help="segments of the stage checkpoint to use (default: the largest)")
    long.add_argument("--min-tokens", type=int, default=d["min_tokens"], help="first length; lengths double up to the max")
    long.add_argument("--max-tokens", type=int, default=d["max_tokens"], help="last length in tokens (e.g. 10000000)")
    long.add_argument("--samples", type=int, default=d["samples"], help="test samples per length")
    long.add_argument("--samples-from", type=int, nargs=2, metavar=("TOKENS", "N"),
                      help="N samples per length from TOKENS tokens on (fewer where a sample costs the most)")
    long.add_argument("--batch-size", type=int, default=d["batch_size"])
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

    from rmt_lab.recipes import eval_ablation, eval_generalization, eval_long

    try:
        if args.eval_command == "generalization":
            frame = eval_generalization(args.run_dir, args.max_segments, args.samples, args.dtype, args.out)
            print(frame.pivot(index="trained_segments", columns="eval_segments", values="accuracy").round(2)
                  .to_string())
        elif args.eval_command == "ablation":
            frame = eval_ablation(args.run_dir, args.max_segments, args.samples, args.dtype, args.out)
            print(f"stage-{frame['trained_segments'].iloc[0]} model without recurrence (accuracy, 95% interval):")
            for row in frame.itertuples():
                print(f"  {row.eval_segments:>3} segments: {row.accuracy:.3f} [{row.ci_low:.3f}, {row.ci_high:.3f}]")
        else:
            frame = eval_long(args.run_dir, args.stage, args.min_tokens, args.max_tokens, args.samples,
                              tuple(args.samples_from) if args.samples_from else None, args.batch_size,
                              args.compile or "", args.dtype, args.out)
            if not PartialState().is_main_process:  # under torchrun: one report
                return 0
            print(frame[["tokens", "n_segments", "accuracy", "n_samples", "ci_low", "ci_high", "peak_mib",
                         "tokens_per_s"]].to_string(index=False))
    except (FileNotFoundError, ValueError) as err:
        print(f"rmt-lab eval: error: {err}", file=sys.stderr)
        return 2
    default = {"generalization": "generalization", "ablation": "no_recurrence", "long": "long_eval"}
    print(f"wrote {args.out or f'{args.run_dir}/{default[args.eval_command]}.parquet'}")
    return 0


def _add_trace(p: argparse.ArgumentParser) -> None:
    from rmt_lab.recipes import defaults, trace
    from rmt_lab.trace import TraceConfig

    d, r = TraceConfig(), defaults(trace)
    model = p.add_argument_group("model")
    model.add_argument("--backbone", default=r["backbone"], help="ready backbone for an untrained RMT")
    model.add_argument("--checkpoint", help="an RMT saved with save_pretrained (overrides --backbone)")
    model.add_argument("--num-mem", type=int, default=r["num_mem"], help="memory tokens of an untrained RMT")
    data = p.add_argument_group(
        "input", "task samples, 4 segments long unless --segments or --tokens; a checkpoint keeps its segment size"
    )
    _task_config_args(data)
    data.add_argument("--samples", type=int, default=r["samples"], help="samples traced together as one batch")
    keep = p.add_argument_group("what to keep")
    keep.add_argument("--maps", default=r["maps"],
                      help="segments with full maps: none, all, or e.g. '0,2-4,every:10,facts,last'")
    keep.add_argument("--layers", type=int, nargs="+", help="layers with full maps (default all)")
    keep.add_argument("--heads", type=int, nargs="+", help="heads with full maps (default all)")
    keep.add_argument("--top-k", type=int, default=d.top_k, help="tokens written per memory slot to list")
    keep.add_argument("--keep-memory", action="store_true", help="store every segment's memory state")
    keep.add_argument("--budget-mib", type=float, default=d.budget_mib, help="trace data held in RAM at most")
    keep.add_argument("--map-dtype", default=d.map_dtype, help="float32 or float16")
    p.add_argument("--out", help="trace folder to write (required unless --bench)")
    p.add_argument("--overwrite", action="store_true", help="replace a trace already in --out")
    bench = p.add_argument_group("benchmark (instead of a trace)")
    bench.add_argument("--bench", action="store_true",
                       help="print the recorder's overhead vs recording off, and a 1M-token trace's peak memory")
    bench.add_argument("--bench-backbones", nargs="+", default=["minilm", "small-bert"])
    bench.add_argument("--bench-segments", type=int, default=40, help="segments per timed run")
    bench.add_argument("--bench-repeats", type=int, default=7, help="alternating untraced/traced runs")
    bench.add_argument("--bench-threads", type=int, nargs="+", default=[1, 2], help="torch threads to measure with")
    bench.add_argument("--bench-pairs", type=int, default=30, help="paired segments for the per-segment cost")
    bench.add_argument("--bench-tokens", type=int, default=1_000_000, help="length of the long trace (0: skip)")
    bench.add_argument("--bench-long-backbone", default="minilm", help="backbone of the long trace")


def _run_trace(args: argparse.Namespace) -> int:
    if args.bench:
        return _run_trace_bench(args)
    if not args.out:
        print("rmt-lab trace: error: --out is required (the trace folder to write)", file=sys.stderr)
        return 2
    from rmt_lab.recipes import trace
    from rmt_lab.tasks import NoiseError
    from rmt_lab.trace import TraceBudgetError

    try:
        r = trace(args.out, args.checkpoint, args.backbone, args.num_mem, args.task, args.segments, args.tokens,
                  args.segment_size, args.placement, args.seed, args.noise, args.split, args.samples, args.maps,
                  args.layers, args.heads, args.top_k, args.keep_memory, args.budget_mib, args.map_dtype,
                  args.overwrite)
    except (ValueError, FileExistsError, NoiseError, TraceBudgetError) as err:
        print(f"rmt-lab trace: error: {err}", file=sys.stderr)
        return 2
    first = r.samples[0]
    print(f"traced {len(r.samples)} {first.task} sample(s) of {first.n_tokens:,} tokens ({r.trace.n_segments:,} "
          f"segments) through {r.backbone!r} in {r.seconds:.1f} s ({r.tokens_per_s:,.0f} tokens/s); "
          f"answered {r.correct}/{len(r.samples)}")
    print(f"full maps kept for segments {r.trace.map_segments}; facts in segments "
          f"{sorted({seg for s in r.samples for span in s.facts for seg in span.segments})}")
    profile = r.profile()
    shown = profile if len(profile) <= 12 else profile.iloc[list(range(6)) + list(range(len(profile) - 6,
                                                                                           len(profile)))]
    print("per segment, mean over samples, layers and heads:")
    print(shown.to_string(index=False, float_format="{:.3f}".format))
    print(f"wrote {args.out}: trace.json, summaries.parquet ({len(r.trace.summaries):,} rows), written.parquet, "
          f"maps/ (load with rmt_lab.trace.Trace.load)")
    return 0


def _print_rows(columns: list, rows) -> None:
    """A table with one line per row, each printed as the iterable `rows` yields it (measured): (header,
    width, format of one row) per column; a negative width aligns left."""
    print(" ".join(f"{h:<{-w}}" if w < 0 else f"{h:>{w}}" for h, w, _ in columns))
    for r in rows:
        print(" ".join(f"{fmt(r)!s:<{-w}}" if w < 0 else f"{fmt(r)!s:>{w}}" for _, w, fmt in columns))


def _run_trace_bench(args: argparse.Namespace) -> int:
    from rmt_lab.trace.bench import million_in_subprocess, overhead_ratio, own_time_share, segment_overhead

    print(f"recorder overhead: summaries for every segment vs recording off ({args.bench_segments} segments per "
          f"run, {args.bench_repeats} alternating pairs; batch 1, 10 memory tokens, segment 499). Ratios: median of "
          "the pairs (min-max), and best of n (fastest traced run / fastest plain run)")
    grid = [(backbone, threads) for threads in args.bench_threads for backbone in args.bench_backbones]
    where = [("backbone", -11, lambda r: r["backbone"]), ("threads", 7, lambda r: r["threads"]),
             ("load", 5, lambda r: f"{r['load_average']:.1f}")]
    _print_rows(where + [
        ("plain ms/seg", 12, lambda r: f"{r['plain_ms_per_segment']:.1f}"),
        ("traced ms/seg", 13, lambda r: f"{r['traced_ms_per_segment']:.1f}"),
        ("wall: median (min-max)", 23, lambda r: f"{r['ratio']:.3f} ({r['ratio_min']:.2f}-{r['ratio_max']:.2f})"),
        ("best", 6, lambda r: f"{r['best_ratio']:.3f}"),
        ("cpu: median (min-max)", 23,
         lambda r: f"{r['cpu_ratio']:.3f} ({r['cpu_ratio_min']:.2f}-{r['cpu_ratio_max']:.2f})"),
        ("best", 6, lambda r: f"{r['best_cpu_ratio']:.3f}"),
    ], ({"backbone": b, **overhead_ratio(b, n_segments=args.bench_segments, repeats=args.bench_repeats, threads=t)}
        for b, t in grid))
    print(f"\nper segment, paired inside one recording (CPU time, {args.bench_pairs} pairs, median and quartiles):")
    _print_rows(where + [
        ("plain ms", 9, lambda r: f"{r['plain_ms']:.1f}"), ("traced ms", 9, lambda r: f"{r['traced_ms']:.1f}"),
        ("extra ms", 8, lambda r: f"{r['extra_ms']:.2f}"),
        ("ratio (q1-q3)", 20, lambda r: f"{r['ratio']:.3f} ({r['ratio_q1']:.3f}-{r['ratio_q3']:.3f})"),
    ], ({"backbone": b, **segment_overhead(b, n_pairs=args.bench_pairs, threads=t)} for b, t in grid))
    print(f"\nthe recorder's own time over the model's, in the same traced runs ({args.bench_segments} segments, "
          "median (min-max) of 3 runs):")
    _print_rows(where + [
        ("own ms/seg", 10, lambda r: f"{r['own_ms_per_segment']:.2f}"),
        ("share", 22, lambda r: f"{r['share']:.3f} ({r['share_min']:.3f}-{r['share_max']:.3f})"),
    ], ({"backbone": b, **own_time_share(b, n_segments=args.bench_segments, threads=t)} for b, t in grid))
    if args.bench_tokens:
        r = million_in_subprocess(n_tokens=args.bench_tokens, backbone=args.bench_long_backbone)
        print(f"\n{r['tokens']:,}-token detect_memorize trace on {r['backbone']!r} ({r['n_segments']:,} segments): "
              f"{r['seconds']:.0f} s, {r['tokens_per_s']:,.0f} tokens/s; summaries for every segment "
              f"({r['summary_rows']:,} rows), full maps for segments {r['map_segments']} (fact in {r['fact_segment']})")
        print(f"peak RSS {r['peak_rss_mib']:.0f} MiB (model and task loaded: {r['rss_before_mib']:.0f} MiB); "
              f"trace data held in RAM at most {r['peak_held_mib']:.1f} MiB of the {r['budget_mib']:.0f} MiB budget; "
              f"trace folder {r['trace_folder_mib']:.1f} MiB (temporary, removed)")
    return 0


def _add_probe(p: argparse.ArgumentParser) -> None:
    from rmt_lab.recipes import defaults, probe

    d = defaults(probe)
    p.add_argument("--checkpoint", required=True, help="an RMT saved with save_pretrained (a stage checkpoint)")
    p.add_argument("--task", default=d["task"], help="memorize, detect_memorize or reasoning")
    p.add_argument("--segments", type=int, default=d["segments"], help="segments per sample")
    p.add_argument("--samples", type=int, default=d["samples"], help="samples; half train the probes, half test them")
    p.add_argument("--split", default=d["split"], help="train, validation or test")
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--out", required=True, help="parquet file to write (e.g. <trace folder>/probe.parquet)")


def _run_probe(args: argparse.Namespace) -> int:
    from rmt_lab.recipes import probe, probe_by_distance
    from rmt_lab.train import CheckpointError

    try:
        frame = probe(args.checkpoint, args.out, args.task, args.segments, args.samples, args.split, args.seed)
    except (CheckpointError, ValueError, OSError) as err:
        print(f"rmt-lab probe: error: {err}", file=sys.stderr)
        return 2
    print(f"linear probe on the memory state, {args.task}, {args.samples} samples of {args.segments} segments "
          "(half train, half test); accuracy by distance from the fact segment (chance 0.167):")
    print(probe_by_distance(frame).round(3).to_string())
    print(f"wrote {args.out}")
    return 0


def _add_reproduce(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--quick", action="store_const", const="quick", dest="plan",
                       help="quick config on a CPU: about 20 minutes on 2 cores")
    which.add_argument("--base", action="store_const", const="base", dest="plan",
                       help="base config (pretrained MiniLM, adapters) on a CPU: many hours on 2 cores, resumable")
    which.add_argument("--paper", action="store_const", const="paper", dest="plan",
                       help="the report's setup on the pretrained MiniLM; meant for a GPU")
    p.add_argument("--results", default="data/results", help="results folder (steps whose files exist are skipped)")
    p.add_argument("--figures", default="figures", help="folder for the figures")
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
    from pathlib import Path

    from rmt_lab.reproduce import adopt, default_jobs, made_from, plan, reproduce

    steps = plan(args.plan, args.results, args.figures)
    if args.adopt:
        adopted = adopt(steps, args.results)
        print(f"recorded the inputs of {len(adopted)} step(s): {', '.join(s.name for s in adopted) or 'none'}")
        return 0
    if args.list:
        records = made_from(Path(args.results))
        for i, step in enumerate(steps, 1):
            state = "done" if step.done(records, Path(args.results)) else "to do"
            print(f"[{i}/{len(steps)}] {step.name} ({state}): {step.command()}")
        return 0
    try:
        return reproduce(steps, args.force, args.results, jobs=args.jobs or default_jobs(args.plan))
    except ValueError as err:
        print(f"rmt-lab reproduce: error: {err}", file=sys.stderr)
        return 2


def _add_figures(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", default="data/results", help="results folder the figures are drawn from")
    p.add_argument("--out", default="figures", help="folder for the PNG and SVG files")
    p.add_argument("--only", nargs="+", metavar="NAME", help="draw only these figures (see --list)")
    p.add_argument("--list", action="store_true", help="list the figures and the inputs each one lacks, draw nothing")
    p.add_argument("--strict", action="store_true", help="exit 1 if any figure lacks an input")
    p.add_argument("--config", help="draw the run and trace figures of this configuration only (default: each "
                                    "one with results, into OUT/<config>/)")
    p.add_argument("--recompute", action="store_true",
                   help="first rerun every experiment behind the figures (rmt-lab reproduce --quick, all steps)")


def _run_figures(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rmt_lab.viz import figure_names, format_report, missing_inputs, render_figures

    if args.recompute:
        from rmt_lab.reproduce import default_jobs, plan, reproduce

        steps = [step for step in plan("quick", args.results, args.out) if step.name != "figures"]
        code = reproduce(steps, force=[step.name for step in steps], results=args.results,
                         jobs=default_jobs("quick"))
        if code:
            return code
    if not Path(args.results).is_dir():
        print(f"rmt-lab figures: error: results folder {args.results} does not exist; make results with "
              "rmt-lab reproduce --quick (or the train/eval/bench/trace commands)", file=sys.stderr)
        return 2
    if args.list:
        for name, missing in missing_inputs(args.results, args.config).items():
            print(f"{name}: " + ("ready" if not missing else "missing " + "; ".join(map(str, missing))))
        return 0
    try:
        report = render_figures(args.results, args.out, only=args.only, config=args.config)
    except ValueError as err:
        print(f"rmt-lab figures: error: {err}", file=sys.stderr)
        return 2
    print(format_report(report))
    drawn = sum(bool(r.files) for r in report)
    print(f"{drawn} of {len(report)} figures drawn into {args.out}/ from {args.results}/"
          + (f"; figures: {', '.join(figure_names())}" if not drawn else ""))
    if any(r.error for r in report) or not drawn:
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
