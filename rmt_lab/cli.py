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


COMMANDS = {
    "info": (_add_info, _run_info, "versions, device, threads and available backbones"),
    "demo": (_add_demo, _run_demo, "stream a long random input through a pretrained RMT and print tokens/s"),
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
