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


# `rmt-lab bench ACTION`: each action is a pair like the commands; memory, speed and all come later.
BENCH_ACTIONS = {
    "flops": (_add_bench_flops, _run_bench_flops, "FLOPs versus length, full attention vs RMT (Figure 3 data)"),
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


def _add_trace(p: argparse.ArgumentParser) -> None:
    from rmt_lab.trace import TraceConfig

    d = TraceConfig()
    model = p.add_argument_group("model")
    model.add_argument("--backbone", default="minilm", help="ready backbone for an untrained RMT (default minilm)")
    model.add_argument("--checkpoint", help="an RMT saved with save_pretrained (overrides --backbone)")
    model.add_argument("--num-mem", type=int, default=10, help="memory tokens of an untrained RMT (default 10)")
    data = p.add_argument_group(
        "input", "task samples, 4 segments long unless --segments or --tokens; a checkpoint keeps its segment size"
    )
    _task_config_args(data)
    data.add_argument("--samples", type=int, default=1, help="samples traced together as one batch")
    keep = p.add_argument_group("what to keep")
    keep.add_argument("--maps", default="facts,last",
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
    import time

    import torch

    from rmt_lab.config import ConfigError, from_dict
    from rmt_lab.model import RecurrentWrapper, RMTConfig
    from rmt_lab.tasks import NoiseError, TaskConfig, TaskGenerator
    from rmt_lab.trace import TraceConfig, TraceBudgetError, fact_alignment, record

    try:
        config = from_dict(TraceConfig, {
            "segments": args.maps, "layers": args.layers, "heads": args.heads, "top_k": args.top_k,
            "keep_memory": args.keep_memory, "budget_mib": args.budget_mib, "map_dtype": args.map_dtype,
        })
        if args.checkpoint:
            model = RecurrentWrapper.from_pretrained(args.checkpoint)
        else:
            model = RecurrentWrapper.from_backbone(args.backbone, RMTConfig(
                num_mem_tokens=args.num_mem, segment_size=args.segment_size, num_classes=6))
        model.eval()
        size = model.config.segment_size  # a checkpoint brings its own
        unit, length = ("tokens", args.tokens) if args.tokens is not None else ("segments", args.segments or 4)
        task = TaskConfig(task=args.task, segment_size=size, length=length, unit=unit, placement=args.placement,
                          seed=args.seed, noise=args.noise)
        generator = TaskGenerator(task)
        samples = [generator.sample(args.split, i) for i in range(args.samples)]
        start = time.perf_counter()
        out, trace = record(model, samples, config, out=args.out, overwrite=args.overwrite)
        seconds = time.perf_counter() - start
    except (ConfigError, NoiseError, ValueError, FileExistsError, TraceBudgetError) as err:
        print(f"rmt-lab trace: error: {err}", file=sys.stderr)
        return 2
    n_tokens = samples[0].n_tokens * len(samples)
    correct = int((out.logits.argmax(-1) == torch.tensor([s.label for s in samples])).sum())
    print(f"traced {len(samples)} {task.task} sample(s) of {samples[0].n_tokens:,} tokens ({trace.n_segments:,} "
          f"segments) through {model.cell.backbone_name!r} in {seconds:.1f} s ({n_tokens / seconds:,.0f} tokens/s); "
          f"answered {correct}/{len(samples)}")
    print(f"full maps kept for segments {trace.map_segments}; facts in segments "
          f"{sorted({seg for s in samples for span in s.facts for seg in span.segments})}")
    profile = fact_alignment(trace.summaries).groupby(["segment", "has_fact"]).mean(numeric_only=True)
    profile = profile.drop(columns=["sample"]).reset_index()
    shown = profile if len(profile) <= 12 else profile.iloc[list(range(6)) + list(range(len(profile) - 6,
                                                                                           len(profile)))]
    print("per segment, mean over samples, layers and heads:")
    print(shown.to_string(index=False, float_format="{:.3f}".format))
    print(f"wrote {args.out}: trace.json, summaries.parquet ({len(trace.summaries):,} rows), written.parquet, "
          f"maps/ (load with rmt_lab.trace.Trace.load)")
    return 0


def _run_trace_bench(args: argparse.Namespace) -> int:
    from rmt_lab.trace.bench import million_in_subprocess, overhead_ratio, own_time_share, segment_overhead

    print(f"recorder overhead: summaries for every segment vs recording off ({args.bench_segments} segments per "
          f"run, {args.bench_repeats} alternating pairs; batch 1, 10 memory tokens, segment 499). Ratios: median of "
          "the pairs (min-max), and best of n (fastest traced run / fastest plain run)")
    print(f"{'backbone':<11} {'threads':>7} {'load':>5} {'plain ms/seg':>12} {'traced ms/seg':>13} "
          f"{'wall: median (min-max)':>23} {'best':>6} {'cpu: median (min-max)':>23} {'best':>6}")
    for threads in args.bench_threads:
        for backbone in args.bench_backbones:
            r = overhead_ratio(backbone, n_segments=args.bench_segments, repeats=args.bench_repeats, threads=threads)
            wall = f"{r['ratio']:.3f} ({r['ratio_min']:.2f}-{r['ratio_max']:.2f})"
            cpu = f"{r['cpu_ratio']:.3f} ({r['cpu_ratio_min']:.2f}-{r['cpu_ratio_max']:.2f})"
            print(f"{backbone:<11} {r['threads']:>7} {r['load_average']:>5.1f} {r['plain_ms_per_segment']:>12.1f} "
                  f"{r['traced_ms_per_segment']:>13.1f} {wall:>23} {r['best_ratio']:>6.3f} {cpu:>23} "
                  f"{r['best_cpu_ratio']:>6.3f}")
    print(f"\nper segment, paired inside one recording (CPU time, {args.bench_pairs} pairs, median and quartiles):")
    print(f"{'backbone':<11} {'threads':>7} {'load':>5} {'plain ms':>9} {'traced ms':>9} {'extra ms':>8} "
          f"{'ratio (q1-q3)':>20}")
    for threads in args.bench_threads:
        for backbone in args.bench_backbones:
            r = segment_overhead(backbone, n_pairs=args.bench_pairs, threads=threads)
            ratio = f"{r['ratio']:.3f} ({r['ratio_q1']:.3f}-{r['ratio_q3']:.3f})"
            print(f"{backbone:<11} {r['threads']:>7} {r['load_average']:>5.1f} {r['plain_ms']:>9.1f} "
                  f"{r['traced_ms']:>9.1f} {r['extra_ms']:>8.2f} {ratio:>20}")
    print(f"\nthe recorder's own time over the model's, in the same traced runs ({args.bench_segments} segments, "
          "median (min-max) of 3 runs):")
    print(f"{'backbone':<11} {'threads':>7} {'load':>5} {'own ms/seg':>10} {'share':>22}")
    for threads in args.bench_threads:
        for backbone in args.bench_backbones:
            r = own_time_share(backbone, n_segments=args.bench_segments, threads=threads)
            share = f"{r['share']:.3f} ({r['share_min']:.3f}-{r['share_max']:.3f})"
            print(f"{backbone:<11} {r['threads']:>7} {r['load_average']:>5.1f} {r['own_ms_per_segment']:>10.2f} "
                  f"{share:>22}")
    if args.bench_tokens:
        r = million_in_subprocess(n_tokens=args.bench_tokens, backbone=args.bench_long_backbone)
        print(f"\n{r['tokens']:,}-token detect_memorize trace on {r['backbone']!r} ({r['n_segments']:,} segments): "
              f"{r['seconds']:.0f} s, {r['tokens_per_s']:,.0f} tokens/s; summaries for every segment "
              f"({r['summary_rows']:,} rows), full maps for segments {r['map_segments']} (fact in {r['fact_segment']})")
        print(f"peak RSS {r['peak_rss_mib']:.0f} MiB (model and task loaded: {r['rss_before_mib']:.0f} MiB); "
              f"trace data held in RAM at most {r['peak_held_mib']:.1f} MiB of the {r['budget_mib']:.0f} MiB budget; "
              f"trace folder {r['trace_folder_mib']:.1f} MiB (temporary, removed)")
    return 0


COMMANDS = {
    "info": (_add_info, _run_info, "versions, device, threads and available backbones"),
    "demo": (_add_demo, _run_demo, "stream a long random input through a pretrained RMT and print tokens/s"),
    "data": (_add_data, _run_data, "synthetic tasks: preview a sample, export a split, benchmark streaming"),
    "bench": (_add_bench, _run_bench, "benchmarks: FLOPs of full attention against the RMT"),
    "trace": (_add_trace, _run_trace, "record memory read/write/retain per segment and attention maps to a folder"),
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
