"""Streaming inference of an RMT: tokens/s and peak resident memory, one fresh process per point.

Peak memory on CPU is the process's peak RSS (`ru_maxrss`); tracemalloc cannot see tensor memory,
so every point runs in its own subprocess to start from a clean high-water mark. On CUDA it is
`torch.cuda.max_memory_allocated`.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Iterator

import torch

from rmt_lab.model import RecurrentWrapper, RMTConfig


def random_segments(n_tokens: int, segment_size: int, batch: int = 1, seed: int = 0) -> Iterator[torch.Tensor]:
    """Random token segments generated on the fly, so the input itself never sits in memory."""
    g = torch.Generator().manual_seed(seed)
    for start in range(0, n_tokens, segment_size):
        yield torch.randint(1000, 29000, (batch, min(segment_size, n_tokens - start)), generator=g)


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure_inference(
    n_tokens: int,
    backbone: str = "minilm",
    num_mem_tokens: int = 10,
    segment_size: int = 499,
    batch: int = 1,
    device: str | None = None,
) -> dict:
    """Stream `n_tokens` per sample through a fresh RMT; returns throughput and peak memory."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = RecurrentWrapper.from_backbone(backbone, RMTConfig(num_mem_tokens=num_mem_tokens, segment_size=segment_size))
    model = model.to(dev).eval()
    with torch.inference_mode():
        model.stream(t.to(dev) for t in random_segments(2 * segment_size, segment_size, batch, seed=1))  # warm-up
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        start = time.perf_counter()
        out = model.stream(t.to(dev) for t in random_segments(n_tokens, segment_size, batch))
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        seconds = time.perf_counter() - start
    return {
        "backbone": backbone,
        "tokens": n_tokens,
        "batch": batch,
        "segment_size": segment_size,
        "num_mem_tokens": num_mem_tokens,
        "n_segments": out.n_segments,
        "seconds": seconds,
        "tokens_per_s": n_tokens * batch / seconds,
        "peak_mib": peak_memory_mib(dev),
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "memory_shape": list(out.memory.shape),
    }


def measure_in_subprocess(n_tokens: int, **kwargs) -> dict:
    """`measure_inference` in a fresh Python process, so its peak RSS is this point's alone."""
    args = [sys.executable, "-m", "rmt_lab.bench.inference", "--tokens", str(n_tokens)]
    for key, value in kwargs.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark point {n_tokens} tokens failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, required=True)
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--num-mem-tokens", type=int, default=10)
    parser.add_argument("--segment-size", type=int, default=499)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args(argv)
    result = measure_inference(
        args.tokens, args.backbone, args.num_mem_tokens, args.segment_size, args.batch
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
