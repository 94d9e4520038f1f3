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
    p.add_argument("--tokens", type=int, default=100_000, help="input length in tokens (default 100000)")
    p.add_argument("--backbone", default="minilm", help="ready backbone (see `rmt-lab info`)")


def _run_demo(args: argparse.Namespace) -> int:
    from rmt_lab.bench.inference import measure_in_subprocess

    print(f"Streaming {args.tokens:,} random tokens through an RMT over {args.backbone!r} (10 memory tokens) ...")
    r = measure_in_subprocess(args.tokens, backbone=args.backbone)
    print(
        f"{r['n_segments']:,} segments in {r['seconds']:.1f} s: {r['tokens_per_s']:,.0f} tokens/s on {r['device']} "
        f"({r['threads']} threads); memory shape {tuple(r['memory_shape'])} (batch, memory tokens, d_model); "
        f"peak memory {r['peak_mib']:.0f} MiB"
    )
    return 0


def _add_bench_flops(p: argparse.ArgumentParser) -> None:
    from rmt_lab.bench.flops_sweep import FlopsSweepConfig

    d = FlopsSweepConfig()
    p.add_argument("--models", nargs="+", default=list(d.models), help="known model names (default: the OPT family)")
    p.add_argument("--lengths", nargs="+", type=int, default=list(d.lengths), help="input lengths in tokens")
    p.add_argument("--segment-len", type=int, default=d.segment_len, help="RMT content tokens per segment")
    p.add_argument("--num-mem", type=int, default=d.num_mem, help="RMT memory tokens")
    p.add_argument("--head", choices=["none", "lm", "cls"], default=d.head, help="what sits on top of the stack")
    p.add_argument("--mode", choices=["forward", "train"], default=d.mode, help="forward pass, or forward + backward")
    p.add_argument("--ratio-tokens", type=int, default=d.ratio_tokens, help="length of the full / RMT ratio table")
    p.add_argument("--measure", action="store_true", help="also count every point with FlopCounterMode (meta device)")
    p.add_argument("--out", default="data/results/bench", help="folder for flops.parquet and flops_ratio.parquet")


def _run_bench_flops(args: argparse.Namespace) -> int:
    from pathlib import Path

    import pandas as pd

    from rmt_lab.bench.flops_sweep import FlopsSweepConfig, flops_ratio_table, flops_sweep
    from rmt_lab.config import ConfigError, from_dict
    from rmt_lab.io import write_parquet

    try:
        config = from_dict(FlopsSweepConfig, {
            "models": args.models, "lengths": args.lengths, "segment_len": args.segment_len, "num_mem": args.num_mem,
            "head": args.head, "mode": args.mode, "ratio_tokens": args.ratio_tokens, "measure": args.measure,
        })
    except ConfigError as err:
        print(f"rmt-lab bench flops: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    previous = pd.read_parquet(out / "flops.parquet") if (out / "flops.parquet").exists() else None
    frame = flops_sweep(config, previous=previous, progress=args.measure)
    ratio = flops_ratio_table(frame, config.ratio_tokens)
    write_parquet(out / "flops.parquet", frame)
    write_parquet(out / "flops_ratio.parquet", ratio)
    print(f"{config.mode} FLOPs, full attention / RMT (segment {config.segment_len}, {config.num_mem} memory tokens, "
          f"head {config.head}) at {config.ratio_tokens:,} tokens:")
    shown = ratio[["model", "full_flops", "rmt_flops", "full_over_rmt"]]
    print(shown.to_string(index=False, formatters={
        "full_flops": "{:.3e}".format, "rmt_flops": "{:.3e}".format, "full_over_rmt": "{:,.1f}".format,
    }))
    if config.measure:
        worst = (frame["measured_flops"] / frame["flops"] - 1).abs().max()
        print(f"measured (FlopCounterMode, meta device) vs analytic: largest relative difference {worst:.2e}")
    print(f"wrote {out / 'flops.parquet'} ({len(frame)} rows) and {out / 'flops_ratio.parquet'}")
    return 0


def _add_budget(p: argparse.ArgumentParser) -> None:
    from rmt_lab.bench.runner import Budget

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
    p.add_argument("--backbone", help="ready backbone (see `rmt-lab info`); default minilm, tiny-bert with --quick")
    p.add_argument("--num-mem", type=int, help="RMT memory tokens (default 10)")
    p.add_argument("--segment-size", type=int, help="RMT content tokens per segment (default 499: 512 positions)")
    p.add_argument("--device", help="auto (cuda if available), cpu or cuda")
    p.add_argument("--quick", action="store_true", help="tiny settings (tiny-bert, short lengths): seconds per point")
    p.add_argument("--out", default="data/results/bench", help="folder of the parquet results")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--remeasure", action="store_true", help="run every point again instead of resuming")
    _add_budget(p)


def _sweep_config(cls, quick: dict, args: argparse.Namespace, fields: dict):
    """The sweep config: defaults, then the --quick preset, then every option given explicitly."""
    from rmt_lab.config import from_dict

    given = {"backbone": args.backbone, "num_mem": args.num_mem, "segment_size": args.segment_size,
             "device": args.device, **fields}
    given = {k: v for k, v in given.items() if v is not None}
    return from_dict(cls, {**(quick if args.quick else {}), **given, **_budget_overrides(args)})


def _add_bench_memory(p: argparse.ArgumentParser) -> None:
    from rmt_lab.bench.memory import METHODS, MODES

    p.add_argument("--lengths", nargs="+", type=int, metavar="N", help="forward lengths, tokens per sample")
    p.add_argument("--train-lengths", nargs="+", type=int, metavar="N", help="training-step lengths")
    p.add_argument("--methods", nargs="+", choices=METHODS, help="default: all")
    p.add_argument("--modes", nargs="+", choices=MODES, help="default: forward and train")
    p.add_argument("--bptt", nargs="+", type=int, metavar="K2", help="RMT training: -1 = full BPTT (default -1 2)")
    p.add_argument("--batch", type=int, help="samples per batch (default 1)")
    _add_sweep_common(p)


def _memory_config(args: argparse.Namespace):
    from rmt_lab.bench.memory import QUICK, MemorySweepConfig

    return _sweep_config(MemorySweepConfig, QUICK, args, {
        "lengths": args.lengths, "train_lengths": args.train_lengths, "methods": args.methods,
        "modes": args.modes, "bptt_depths": args.bptt, "batch": args.batch,
    })


def _print_memory(frame) -> None:
    from rmt_lab.bench.memory import feasible_lengths, flatness, memory_status_table

    print("\nPeak memory (GiB; peak RSS of a fresh process on CPU, max allocated on CUDA) by length and method:")
    print(memory_status_table(frame).to_string())
    print("\nLargest length within the budget, per method:")
    print(feasible_lengths(frame).to_string(index=False, formatters={
        "largest_ok_tokens": "{:,}".format, "first_failed_tokens": "{:,}".format,
        "peak_mib_there": "{:,.0f}".format, "tokens_per_s_there": "{:,.0f}".format}))
    rmt = frame[(frame["method"] == "rmt") & (frame["mode"] == "forward") & (frame["status"] == "ok")]
    low = 16_000 if 16_000 in set(rmt["tokens"]) else (int(rmt["tokens"].min()) if len(rmt) else None)
    if low is not None:
        f = flatness(frame, low)
        print(f"\nRMT forward peak memory: {f['low_peak_mib']:,.0f} MiB at {f['low_tokens']:,} tokens, "
              f"{f['high_peak_mib']:,.0f} MiB at {f['high_tokens']:,} tokens ({f['high_over_low']:.3f}x; "
              f"max/min from {f['low_tokens']:,} up: {f['max_over_min']:.3f}x)")


def _run_bench_memory(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rmt_lab.bench.memory import memory_sweep
    from rmt_lab.config import ConfigError

    try:
        config = _memory_config(args)
        path = Path(args.out) / "memory.parquet"
        frame = memory_sweep(config, path, progress=not args.no_progress, remeasure=args.remeasure)
    except ConfigError as err:
        print(f"rmt-lab bench memory: {err}", file=sys.stderr)
        return 2
    _print_memory(frame)
    print(f"\nwrote {path} ({len(frame)} rows of this sweep)")
    return 0


def _add_bench_speed(p: argparse.ArgumentParser) -> None:
    from rmt_lab.bench.speed import METHODS

    p.add_argument("--batches", nargs="+", type=int, metavar="B", help="batch sizes (default 1 8)")
    p.add_argument("--segments", type=int, help="full segments per sample (default 16)")
    p.add_argument("--methods", nargs="+", choices=METHODS, help="default: all")
    p.add_argument("--matmul-n", type=int, help="size of the matmul peak's square matrices (default 2048)")
    p.add_argument("--matmul-repeats", type=int, help="matmul peak: median of this many (default 10)")
    _add_sweep_common(p)


def _speed_config(args: argparse.Namespace):
    from rmt_lab.bench.speed import QUICK, SpeedSweepConfig

    return _sweep_config(SpeedSweepConfig, QUICK, args, {
        "batches": args.batches, "segments": args.segments, "methods": args.methods,
        "matmul_n": args.matmul_n, "matmul_repeats": args.matmul_repeats,
    })


def _print_speed(frame) -> None:
    from rmt_lab.bench.speed import speed_table

    table = speed_table(frame)
    if table.empty:
        print("\nno RMT speed point measured ok")
        return
    lines = [  # (label, format of one table row); a baseline not measured prints "-"
        ("tokens/s", lambda r: f"{r['tokens_per_s']:,.0f}"),
        ("achieved GFLOP/s", lambda r: f"{r['gflops_per_s']:,.1f}"),
        ("matmul peak GFLOP/s", lambda r: f"{r['matmul_peak_gflops']:,.1f}"),
        ("fraction of matmul peak", lambda r: f"{r['fraction_of_peak']:.1%}"),
        ("ms per segment, median (p10-p90)",
         lambda r: f"{r['segment_ms']:,.1f} ({r['segment_ms_p10']:,.1f}-{r['segment_ms_p90']:,.1f})"),
        ("bare backbone ms per pass, paired", lambda r: f"{r['paired_backbone_ms']:,.1f}"),
        ("RMT segment / bare backbone, paired", lambda r: f"{r['rmt_segment_over_backbone']:.3f}x"),
        ("bare backbone alone: ms per pass", lambda r: f"{r['backbone_segment_ms']:,.1f}"),
        ("bare backbone alone: fraction of peak", lambda r: f"{r['backbone_fraction_of_peak']:.1%}"),
        ("naive loop tokens/s", lambda r: f"{r['naive_tokens_per_s']:,.0f}"),
        ("RMT / naive loop tokens/s", lambda r: f"{r['rmt_over_naive']:.3f}x"),
        ("peak MiB, RMT", lambda r: f"{r['peak_mib']:,.0f}"),
        ("peak MiB, naive loop", lambda r: f"{r['naive_peak_mib']:,.0f}"),
    ]

    def cell(fmt, row) -> str:
        try:
            text = fmt(row)
        except KeyError:
            return "-"
        return "-" if "nan" in text else text

    rows = table.to_dict("records")
    heads = [f"{r['backbone']}, batch {r['batch']}" for r in rows]
    width = max(len(label) for label, _ in lines)
    print(f"\nRMT forward, {rows[0]['tokens_per_sample']:,} tokens per sample (fp32; FLOPs the task needs, "
          "analytic; matmul peak measured in the same process):")
    print(" " * width + "".join(f"{h:>28}" for h in heads))
    for label, fmt in lines:
        print(f"{label:<{width}}" + "".join(f"{cell(fmt, r):>28}" for r in rows))


def _run_bench_speed(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rmt_lab.bench.speed import speed_sweep
    from rmt_lab.config import ConfigError

    try:
        config = _speed_config(args)
        path = Path(args.out) / "speed.parquet"
        frame = speed_sweep(config, path, progress=not args.no_progress, remeasure=args.remeasure)
    except ConfigError as err:
        print(f"rmt-lab bench speed: {err}", file=sys.stderr)
        return 2
    _print_speed(frame)
    print(f"\nwrote {path} ({len(frame)} rows of this sweep)")
    return 0


def _add_bench_all(p: argparse.ArgumentParser) -> None:
    _add_sweep_common(p)


def _run_bench_all(args: argparse.Namespace) -> int:
    """flops, then memory, then speed, each with its defaults (or --quick preset) and the shared options."""
    empty = {"lengths": None, "train_lengths": None, "methods": None, "modes": None, "bptt": None, "batch": None,
             "batches": None, "segments": None, "matmul_n": None, "matmul_repeats": None}
    flops = argparse.Namespace(**vars(build_parser().parse_args(["bench", "flops", "--out", args.out])))
    if args.quick:
        flops.models, flops.lengths, flops.ratio_tokens = ["opt-125m", "opt-1.3b"], [512, 32_000], 32_000
    for run in (_run_bench_flops, _run_bench_memory, _run_bench_speed):
        code = run(flops if run is _run_bench_flops else argparse.Namespace(**{**empty, **vars(args)}))
        if code:
            return code
    return 0


# `rmt-lab bench ACTION`: each action is a pair like the commands.
BENCH_ACTIONS = {
    "flops": (_add_bench_flops, _run_bench_flops, "FLOPs versus length, full attention vs RMT (Figure 3 data)"),
    "memory": (_add_bench_memory, _run_bench_memory,
               "measured peak memory and time versus length, RMT vs full attention (eager, sdpa), forward and train"),
    "speed": (_add_bench_speed, _run_bench_speed,
              "RMT forward tokens/s, GFLOP/s and fraction of the matmul peak, vs the bare backbone and a naive loop"),
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


COMMANDS = {
    "info": (_add_info, _run_info, "versions, device, threads and available backbones"),
    "demo": (_add_demo, _run_demo, "stream a long random input through a pretrained RMT and print tokens/s"),
    "bench": (_add_bench, _run_bench, "benchmarks: FLOPs, memory and speed, RMT against full attention"),
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
