"""The `rmt-lab` command. Each subcommand is a pair: `_add_<name>(parser)` and `_run_<name>(args)`.

This is the only module that imports every part of rmt_lab; the library code never imports it.
"""

from __future__ import annotations

import argparse
import platform
import sys


def _add_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bench", action="store_true", help="also measure RMT inference tokens/s and peak RSS")


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
    return 0


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


COMMANDS = {
    "info": (_add_info, _run_info, "versions, device, threads and available backbones"),
    "data": (_add_data, _run_data, "synthetic tasks: preview a sample, export a split, benchmark streaming"),
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
