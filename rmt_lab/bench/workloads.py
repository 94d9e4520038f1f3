"""What one benchmark point runs, inside its own fresh process (started by `runner.run_point`).

Each workload builds its model, warms up on a short input, then times the measured work and
returns a flat dict of measurements (JSON-ready). Memory is not measured here: the parent reads the
process's peak RSS; on CUDA the workload adds `peak_cuda_mib`.

- "rmt": the RMT over a long random input, streamed segment by segment (forward, nothing kept per
  segment), or one training step (forward + backward through the memory, full or truncated BPTT);
  with `keep_outputs` the naive loop instead: the whole input materialized and every segment's
  outputs, vocabulary logits included, kept, the way the published RMT wrapper works (issue 8);
  with `plain` the plain memory-cell loop (`PlainLoop`): the fair baseline of the cell, no logits.
- "full": the same backbone size attending over the whole input at once (random weights,
  position table enlarged to the length: lookups cost no FLOPs), eager or sdpa attention.
- "backbone": the bare backbone's forward over one segment's positions, repeated.
- "matmul": this machine's matmul peak (n^3 matmul, median of repeats) in the workload's dtype.
Every workload can measure the matmul peak first (`matmul_repeats > 0`), so a ratio to the peak is
taken in the same process, minutes apart at most; the streamed RMT can also measure it between
segments (`paired_peak`), so each segment's rate is compared with the peak of the same moment.
Every workload runs in `dtype` (float32 by default; bfloat16 is the GPU's fast path).

Training steps run with dropout off by default (modules in eval mode, gradients on). With attention
dropout, CPU sdpa leaves its fused kernel for the math path, which materializes the L x L probabilities
as eager does (seen here: a 2-layer, 4-head BERT step over 8,000 tokens peaked at 0.5 GiB without
dropout, 7.4 GiB with). The step's FLOPs are the same either way, and long-context training
commonly turns attention dropout off. The RMT's training step takes `dropout` too: every dropout
probability of the backbone set to it (hidden and attention, as the trainer's `ExperimentConfig.dropout`
sets them through `RecurrentWrapper.from_backbone`) and the modules in train mode, for the RMT's step
and the paired plain-loop step alike (same modules): how the trainer presets train (MiniLM's own 0.1).
The paired plain-loop step runs the backbone's attention as HF's default, sdpa, the way the published
wrapper trains an HF model (`hf_default_attention`); the RMT's step runs its own (rmt_lab's fused kernel).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from rmt_lab.process import rss_mib
from rmt_lab.tasks import NUM_CLASSES  # the training loss is a classification over the answer places

WORKLOADS: dict[str, Callable[..., dict]] = {}
TOKEN_RANGE = (1000, 29000)  # ordinary word ids of the shared 30522-entry vocabulary


def run_workload(workload: str, params: dict) -> dict:
    """One point's measurements (what `runner.run_point` calls in the fresh process)."""
    return WORKLOADS[workload](**params)


def workload(name: str) -> Callable[[Callable[..., dict]], Callable[..., dict]]:
    def register(fn: Callable[..., dict]) -> Callable[..., dict]:
        WORKLOADS[name] = fn
        return fn

    return register


# ------------------------------------------------------------------------------------------ helpers
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; allowed: {sorted(DTYPES)}")
    return DTYPES[name]


def resolve_device(device: str = "auto") -> torch.device:
    return torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                        "cpu" if device == "auto" else device)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def random_segments(n_tokens: int, segment_size: int, batch: int = 1, seed: int = 0,
                    device: torch.device | str = "cpu") -> Iterator[torch.Tensor]:
    """Random (batch, <= segment_size) token segments made on the fly: the input never sits in memory.

    Made on `device` itself: no copy from the host, which on a GPU would wait for the work queued before it.
    """
    g = torch.Generator(device=device).manual_seed(seed)
    for start in range(0, n_tokens, segment_size):
        yield torch.randint(*TOKEN_RANGE, (batch, min(segment_size, n_tokens - start)), generator=g, device=device)


class SegmentClock:
    """Wraps an iterable of segments and times what the consumer spends on each one.

    A segment's time runs from handing it out to the request for the next one, so per-segment
    times of `RecurrentWrapper.stream` are measured without touching the model; making the next
    segment is not counted. `between`, if given, runs (and is timed) after each segment is made and
    before it is handed out: a paired reference measured under the same machine load as the segment
    right after it; several are run in turn, each timed apart (`between_times[name]`), what each
    returns kept in `between_results[name]`.
    """

    def __init__(self, items: Iterable, device: torch.device, between: dict[str, Callable[[], object]] | None = None):
        self._items = iter(items)
        self._device = device
        self._between = between or {}
        self._starts: list[float] = []
        self._ends: list[float] = []
        self.between_times: dict[str, list[float]] = {name: [] for name in self._between}
        self.between_results: dict[str, list] = {name: [] for name in self._between}

    def __iter__(self) -> SegmentClock:
        return self

    def __next__(self):
        _sync(self._device)
        if len(self._starts) > len(self._ends):
            self._ends.append(time.perf_counter())  # the previous segment is done
        item = next(self._items)  # StopIteration ends the stream
        for name, run in self._between.items():
            t0 = time.perf_counter()
            self.between_results[name].append(run())
            _sync(self._device)
            self.between_times[name].append(time.perf_counter() - t0)
        self._starts.append(time.perf_counter())
        return item

    def times(self) -> list[float]:
        """Seconds spent on each segment handed out."""
        return [end - start for start, end in zip(self._starts, self._ends)]


def time_stats(times: list[float], prefix: str = "segment_s") -> dict[str, float]:
    """Median and 10th / 90th percentiles (the spread) of per-step times."""
    if not times:
        return {f"{prefix}_median": math.nan, f"{prefix}_p10": math.nan, f"{prefix}_p90": math.nan}
    t = torch.tensor(times, dtype=torch.float64)
    q = torch.quantile(t, torch.tensor([0.5, 0.1, 0.9], dtype=torch.float64)).tolist()
    return {f"{prefix}_median": q[0], f"{prefix}_p10": q[1], f"{prefix}_p90": q[2]}


def _peak_cuda(dev: torch.device) -> dict[str, float]:
    return {"peak_cuda_mib": torch.cuda.max_memory_allocated(dev) / 2**20} if dev.type == "cuda" else {}


def _reset_peak_cuda(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)


def _common(dev: torch.device) -> dict:
    """Taken right before the measured work: where it runs, and how busy the machine is (times depend on it).

    cpu_capability: the vector width torch's CPU kernels were picked for ("AVX512", "AVX2", ...; lowered by
    ATEN_CPU_CAPABILITY), which moves the matmul peak and the fused kernels' advantage; cpu_isa: the widest
    the CPU itself has, so a row measured with the width lowered on purpose says so."""
    isa = ("AVX512" if torch.cpu._is_avx512_supported() else "AVX2" if torch.cpu._is_avx2_supported()
           else "DEFAULT")
    return {"device": str(dev), "threads": torch.get_num_threads(), "baseline_rss_mib": rss_mib(),
            "load_avg_1m": os.getloadavg()[0], "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_isa": isa}


def _matmul(n: int, dev: torch.device, dtype: torch.dtype, held: list | None = None) -> Callable[[], float]:
    """A timed (n, n) @ (n, n) product on random data: each call returns its GFLOP/s."""
    a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
    c = torch.empty(n, n, device=dev, dtype=dtype)
    if held is not None:
        held.extend((a, b, c))

    def run() -> float:
        _sync(dev)
        start = time.perf_counter()
        torch.mm(a, b, out=c)
        _sync(dev)
        return 2 * n**3 / (time.perf_counter() - start) / 1e9

    return run


@workload("matmul")
def matmul_peak(n: int = 2048, repeats: int = 10, device: str = "auto", dtype: str = "float32") -> dict:
    """Matmul peak of this machine in `dtype`: 2*n^3 FLOPs per (n, n) @ (n, n), median over `repeats`."""
    run = _matmul(n, resolve_device(device), torch_dtype(dtype))
    for _ in range(2):  # warm-up: thread pool, caches, clocks
        run()
    rates = [run() for _ in range(repeats)]
    return {
        "matmul_peak_gflops": statistics.median(rates),
        "matmul_peak_gflops_min": min(rates),
        "matmul_peak_gflops_max": max(rates),
        "matmul_n": n,
    }


def _maybe_peak(matmul_n: int, matmul_repeats: int, dev: torch.device, dtype: str = "float32") -> dict:
    return matmul_peak(matmul_n, matmul_repeats, str(dev), dtype) if matmul_repeats > 0 else {}


# ------------------------------------------------------------------------------------------ the RMT
def _rmt_model(backbone: str, num_mem: int, segment_size: int, bptt_depth: int, train: bool, dev: torch.device,
               dtype: str = "float32", dropout: float = 0.0):
    """The RMT in eval mode (dropout off, in training steps too), or with `dropout` > 0 (training only) every
    dropout probability of the backbone set to it and the modules in train mode (module docstring)."""
    from rmt_lab.model import RecurrentWrapper, RMTConfig

    if dropout and not train:
        raise ValueError(f"dropout={dropout!r} applies to a training step only; a forward runs in inference mode")
    config = RMTConfig(num_mem_tokens=num_mem, segment_size=segment_size, num_classes=NUM_CLASSES if train else 0,
                       bptt_depth=bptt_depth if bptt_depth != 0 else -1)
    model = RecurrentWrapper.from_backbone(backbone, config, dropout=dropout or None).to(dev, torch_dtype(dtype))
    return model.train(bool(dropout))


@workload("rmt")
def run_rmt(*, backbone: str, tokens: int, batch: int = 1, num_mem: int = 10, segment_size: int = 499,
            mode: str = "forward", bptt_depth: int = 0, keep_outputs: bool = False, plain: bool = False,
            paired_backbone: bool = False, paired_plain: bool = False, paired_peak: bool = False, compile: str = "",
            checkpoint_segments: bool = False, dropout: float = 0.0, dtype: str = "float32", device: str = "auto",
            matmul_n: int = 2048, matmul_repeats: int = 0) -> dict:
    """The RMT over `tokens` random tokens per sample (batch rows), streamed, or the naive loop.

    forward: inference mode, memory carried segment to segment, nothing else kept.
    train: one step, classification loss on the last summary, backward through the memory of the
    last `bptt_depth` segments (-1: all of them, full BPTT as in the report); no optimizer step; dropout
    off, or with `dropout` > 0 the backbone's hidden and attention dropout at that probability, in train
    mode (the paired plain-loop steps too: the same modules, on HF's sdpa attention).
    keep_outputs (forward only): the naive baseline, see `naive_loop`.
    plain (forward only): the plain memory-cell loop instead of the RMT (`PlainLoop`), streamed like it
    (paired_peak applies; the RMT's weights, nothing compiled).
    paired_plain: before each segment, one segment of the plain loop (its own tokens and memory), timed
    apart: `paired_plain_speedup_median` is the median over segments of plain loop time / RMT time, the
    RMT's speed in units of the plain loop's under the same load. In a training step, whole steps are
    paired instead (`_paired_training`): the plain loop trained like the published wrapper trains, on HF's
    sdpa attention.
    paired_backbone (streamed forward only): before each segment, the bare backbone (same weights)
    runs once over the segment's positions, timed apart; returns its per-pass times and the median
    of the per-segment ratios RMT / bare, which a load change on a shared machine hits alike. The
    bare backbone is the eager one, also when the RMT's is compiled.
    paired_peak: before each segment, one `matmul_n` product in `dtype`, timed apart: the median of the
    per-segment ratios (segment GFLOP/s / that product's GFLOP/s) is `paired_fraction_median`, the
    RMT's fraction of the matmul peak of the same moment; in a training step, per paired round.
    compile: torch.compile mode for the backbone ("default", "reduce-overhead", "max-autotune"; "" =
    eager) (`RecurrentWrapper.compile_backbone`), weights frozen for the forward; for a training step
    forward and backward are compiled, during the warm-up step. The warm-up, compilation included,
    is `warmup_s`.
    checkpoint_segments (train only): recompute each segment in backward instead of storing it.
    """
    dev = resolve_device(device)
    peak = _maybe_peak(matmul_n, matmul_repeats, dev, dtype)
    train = mode == "train"
    model = _rmt_model(backbone, num_mem, segment_size, bptt_depth, train, dev, dtype, dropout)
    model.checkpoint_segments = checkpoint_segments
    between, held = {}, []  # the paired references, and the tensors they hold (not the RMT's memory)
    if paired_backbone:  # made before compiling: an eager copy of the backbone if the RMT's gets compiled
        between["backbone"] = _bare_pass(model, batch, dev, held, copy_body=bool(compile))
    if paired_peak:
        between["matmul"] = _matmul(matmul_n, dev, torch_dtype(dtype), held)
    if paired_plain and not train:  # last: right before the RMT's segment
        between["plain"] = _plain_pass(PlainLoop(model, batch), segment_size, dev, copy_body=bool(compile),
                                       held=held)
    if compile:
        model.compile_backbone(mode=compile, freeze=not train)
    n_segments = math.ceil(tokens / segment_size)
    info = {"attn_impl": model.cell.model.config._attn_implementation, "positions": model.cell.positions_per_segment,
            "dropout": dropout}
    if train:
        labels = torch.randint(0, NUM_CLASSES, (batch,), device=dev)
        start = time.perf_counter()
        warm = model.stream(random_segments(segment_size, segment_size, batch, seed=1, device=dev), n_segments=1,
                            labels=labels)
        warm.loss.backward()
        model.zero_grad(set_to_none=True)
        del warm
        _sync(dev)
        info["warmup_s"] = time.perf_counter() - start
        result = _common(dev)
        _reset_peak_cuda(dev)
        clock = SegmentClock(random_segments(tokens, segment_size, batch, device=dev), dev)
        start = time.perf_counter()
        out = model.stream(clock, n_segments=n_segments, labels=labels)
        _sync(dev)
        mid = time.perf_counter()
        out.loss.backward()
        _sync(dev)
        end = time.perf_counter()
        result.update(seconds=end - start, backward_s=end - mid, n_segments=out.n_segments, **time_stats(clock.times()))
        del out
        if paired_plain or paired_peak:
            result.update(_paired_training(model, tokens, batch, labels, dev, between.get("matmul"), paired_plain))
    else:
        with torch.inference_mode():
            loop = PlainLoop(model, batch) if plain else None
            start = time.perf_counter()
            warm = random_segments(2 * segment_size, segment_size, batch, seed=1, device=dev)
            if loop is not None:  # warm-up
                loop.run(warm)
            else:
                model.stream(warm)
            _sync(dev)
            info["warmup_s"] = time.perf_counter() - start
            for run in between.values():
                run()
            result = _common(dev)
            _reset_peak_cuda(dev)
            if keep_outputs:
                seconds, times, out_segments, memory, kept = naive_loop(model, tokens, batch, dev)
                result.update(seconds=seconds, n_segments=out_segments, memory_shape=list(memory.shape),
                              kept_mib=kept / 2**20, **time_stats(times))
            else:
                clock = SegmentClock(random_segments(tokens, segment_size, batch, device=dev), dev, between)
                start = time.perf_counter()
                out = loop.run(clock) if loop is not None else model.stream(clock)
                _sync(dev)
                seconds = time.perf_counter() - start - sum(sum(t) for t in clock.between_times.values())
                times = clock.times()
                result.update(seconds=seconds, n_segments=out.n_segments, memory_shape=list(out.memory.shape),
                              **time_stats(times))
                if paired_plain:
                    other = clock.between_times["plain"]
                    result.update(**time_stats(other, "paired_plain_s"),
                                  paired_plain_speedup_median=_median([b / a for a, b in zip(times, other)]))
                if paired_backbone:
                    bare = clock.between_times["backbone"]
                    result.update(**time_stats(bare, "paired_backbone_s"),
                                  paired_ratio_median=_median([a / b for a, b in zip(times, bare)]))
                if paired_peak:
                    peaks = clock.between_results["matmul"]  # GFLOP/s of each product
                    flops = _segment_flops(model, batch)  # FLOPs the task needs in one full segment
                    full = tokens // segment_size  # a shorter last segment does other work: not compared
                    result.update(paired_peak_gflops_median=_median(peaks), paired_fraction_median=_median(
                        [flops / t / 1e9 / p for t, p in zip(times[:full], peaks[:full])]))
    if held:  # resident through the whole run, so counted in the peak: reported, to be subtracted
        info["reference_mib"] = sum(t.numel() * t.element_size() for t in held) / 2**20
    return {**result, **info, **peak, **_peak_cuda(dev)}


def _segment_flops(model: nn.Module, batch: int) -> float:
    """Analytic forward FLOPs of one full segment through the RMT's backbone, no head (the task's FLOPs)."""
    from rmt_lab.bench.flops import rmt_flops, total
    from rmt_lab.bench.shapes import shape_from_config

    size, m = model.config.segment_size, model.config.num_mem_tokens
    return float(total(rmt_flops(shape_from_config(model.cell.model.config), size, size, m, batch, head="none")))


TRAIN_ROUNDS = 2  # paired rounds after the measured step: a step is seconds long, two show the spread


def _paired_training(model: nn.Module, tokens: int, batch: int, labels: torch.Tensor, dev: torch.device,
                     matmul: Callable[[], float] | None, plain: bool) -> dict:
    """Rounds of (one matmul, one plain-loop training step, one RMT training step), each timed apart, so
    the RMT's step is compared with the peak and the baseline of the same moment.

    The plain-loop step is the published wrapper's way of training a classifier (`plain_training_loss`):
    the RMT's weights and dropout, its attention HF's default sdpa as the published wrapper runs it
    (`hf_default_attention`), one backward through every segment. Returns the medians over rounds:
    `paired_fraction_median` (step GFLOP/s over the matmul's, FLOPs 3x the forward's) and
    `paired_plain_speedup_median` (plain step time / RMT step time), with `paired_plain_attn_impl`, the
    attention the plain step ran.
    """
    size = model.config.segment_size
    n_segments = math.ceil(tokens / size)

    def timed(step: Callable[[], torch.Tensor]) -> float:
        model.zero_grad(set_to_none=True)
        _sync(dev)
        start = time.perf_counter()
        step().backward()
        _sync(dev)
        return time.perf_counter() - start

    def rmt_step() -> torch.Tensor:
        return model.stream(random_segments(tokens, size, batch, seed=5, device=dev), n_segments=n_segments,
                            labels=labels).loss

    def plain_step() -> torch.Tensor:
        return plain_training_loss(model, random_segments(tokens, size, batch, seed=6, device=dev), labels)

    peaks, plain_s, rmt_s = [], [], []
    for _ in range(TRAIN_ROUNDS):
        if matmul is not None:
            peaks.append(matmul())
        if plain:
            with hf_default_attention(model) as plain_impl:  # switched outside the timing: no part of a step
                plain_s.append(timed(plain_step))
        rmt_s.append(timed(rmt_step))
    model.zero_grad(set_to_none=True)
    out = {**time_stats(rmt_s, "paired_step_s")}
    if peaks:
        flops = 3 * _segment_flops(model, batch) * tokens / size  # every segment full in the benchmark
        out.update(paired_peak_gflops_median=_median(peaks),
                   paired_fraction_median=_median([flops / t / 1e9 / p for t, p in zip(rmt_s, peaks)]))
    if plain:
        out.update(**time_stats(plain_s, "paired_plain_s"), paired_plain_attn_impl=plain_impl,
                   paired_plain_speedup_median=_median([p / t for p, t in zip(plain_s, rmt_s)]))
    return out


def hf_default_attention(model: nn.Module) -> contextlib.AbstractContextManager[str]:
    """The RMT's backbone on HF's default attention, sdpa, inside the block; its own back when it ends, however.

    The published wrapper trains an HF model as loaded, whose attention is sdpa; every RMT runs rmt_lab's fused
    kernel where a gradient is to come (`rmt_lab.model.kernels`), which on the CPU with attention dropout is
    much faster than sdpa's math path. A baseline sharing the RMT's modules must not share that kernel.
    Yields the implementation set ("sdpa").
    """
    from rmt_lab.model.backbones import attention_implementation

    return attention_implementation(model.cell.model, "sdpa")


def plain_training_loss(model: nn.Module, segments: Iterable[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """The published wrapper's training forward of a classifier: each (batch, seg_len) segment through the HF
    body with the memory concatenated (`PlainLoop`, the RMT's weights and modules), the memory carried with its
    graph, the class loss on the last segment's [CLS] (encoder) or last token (decoder). Runs whatever attention
    the backbone is set to: `hf_default_attention` makes it the published one."""
    loop = PlainLoop(model, labels.shape[0])
    loop.run(segments)
    return nn.functional.cross_entropy(model._classify(loop.summary), labels)  # (,)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def _bare_pass(model: nn.Module, batch: int, dev: torch.device, held: list, copy_body: bool = False
               ) -> Callable[[], object]:
    """One forward of the RMT's own backbone body (or a copy) over a segment's positions, from token ids."""
    body = model.cell.adapter.body(model.cell.model)
    if copy_body:
        body = copy.deepcopy(body)
        held.extend(body.parameters())
    g = torch.Generator().manual_seed(2)
    positions = model.cell.positions_per_segment
    return lambda: body(input_ids=torch.randint(*TOKEN_RANGE, (batch, positions), generator=g).to(dev))


class PlainLoop:
    """The plain memory-cell loop: the fair baseline of the RMT's cell, the published memory cell with its
    vocabulary head taken away.

    Per segment: concatenate the read memory, the segment's token embeddings and the write memory (decoder)
    or `[CLS] memory [SEP] tokens [SEP]` (encoder), run the HF body (no LM head, no mask: every segment is
    full), slice the new memory from the write positions. The RMT's own weights and initial memory; the
    special tokens' embeddings are made once. Nothing is kept but the memory and the last segment's
    summary state ([CLS] or the last token), which a training step classifies.
    """

    def __init__(self, model: nn.Module, batch: int, body: nn.Module | None = None):
        cell = model.cell
        self.body = body if body is not None else cell.adapter.body(cell.model)
        self.embeddings, self.memory_in, self.m = cell.embeddings, cell.memory_in, cell.config.num_mem_tokens
        self.decoder = cell.layout == "decoder"
        self.memory = cell.init_memory(batch)  # (batch, n_mem, d_model)
        if not self.decoder:
            ids = torch.tensor([[cell.special.cls, cell.special.sep]], device=cell.memory.device)
            self.cls, self.sep = self.embeddings(ids).expand(batch, -1, -1).split(1, dim=1)  # (batch, 1, d_embed) each

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        """One segment of (batch, seg_len) token ids; returns the new memory (batch, n_mem, d_model)."""
        m = self.m
        tokens = self.embeddings(ids)  # (batch, seg_len, d_embed)
        read = self.memory if self.memory_in is None else self.memory_in(self.memory)  # (batch, n_mem, d_embed)
        parts = [read, tokens, read] if self.decoder else [self.cls, read, self.sep, tokens, self.sep]
        hidden = self.body(inputs_embeds=torch.cat(parts, dim=1)).last_hidden_state  # (batch, positions, d_model)
        self.memory = hidden[:, -m:] if self.decoder else hidden[:, 1:1 + m]
        self.summary = hidden[:, -m - 1] if self.decoder else hidden[:, 0]  # the last token, or [CLS]
        return self.memory

    def run(self, segments: Iterable[torch.Tensor]):
        """Every segment in turn; returns what `RecurrentWrapper.stream` reports of the memory and the count."""
        n = 0
        for ids in segments:
            self.step(ids)
            n += 1
        return _LoopOutput(self.memory, n)


@dataclass
class _LoopOutput:
    memory: torch.Tensor  # (batch, n_mem, d_model)
    n_segments: int


def _plain_pass(loop: PlainLoop, segment_size: int, dev: torch.device, copy_body: bool, held: list
                ) -> Callable[[], object]:
    """One segment of the plain loop on its own random tokens; an eager copy of the body if the RMT's gets
    compiled (the baseline stays the plain eager loop)."""
    if copy_body:
        loop.body = copy.deepcopy(loop.body)
        held.extend(loop.body.parameters())
    g = torch.Generator(device=dev).manual_seed(3)
    batch = loop.memory.shape[0]
    return lambda: loop.step(torch.randint(*TOKEN_RANGE, (batch, segment_size), generator=g, device=dev))


def naive_loop(model: nn.Module, tokens: int, batch: int, dev: torch.device):
    """The baseline of issue 8: the whole input materialized, every segment's outputs kept.

    That is how the published RMT wrapper works: it runs the backbone with its language-model head
    and returns all segments' outputs, vocabulary logits included. Here the head is the model's own
    (GPT-2) or, for an encoder, the vocabulary projection tied to the token embeddings (BERT's MLM
    decoder without its transform layer); the memory cell is the same as the streamed RMT's.
    Returns (seconds, per-segment times, segments, memory, bytes of the outputs kept).
    """
    size = model.config.segment_size
    head = model.cell.lm_head
    weight = model.cell.embeddings.weight  # (vocab, d_model)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(*TOKEN_RANGE, (batch, tokens), generator=g).to(dev)  # (batch, tokens), all of it
    memory = model.init_memory(batch)  # (batch, n_mem, d_model)
    outputs, times = [], []
    _sync(dev)
    start = time.perf_counter()
    for lo in range(0, tokens, size):
        t0 = time.perf_counter()
        seg = ids[:, lo:lo + size]  # (batch, <= segment_size)
        out = model.cell(seg, None, memory)  # every token valid, like the streamed RMT's full segments
        logits = head(out.hidden) if head is not None else out.hidden @ weight.T  # (batch, seg, vocab)
        outputs.append((out, logits))  # memory, summary, hidden states and logits of every segment: kept
        memory = out.memory
        _sync(dev)
        times.append(time.perf_counter() - t0)
    hidden = torch.cat([o.hidden for o, _ in outputs], dim=1)  # (batch, tokens, d_model), as the wrapper returns
    _sync(dev)
    seconds = time.perf_counter() - start
    kept = sum(t.numel() * t.element_size() for o, logits in outputs for t in (o.memory, o.summary, o.hidden, logits))
    del hidden
    return seconds, times, len(outputs), memory, kept


# ------------------------------------------------------------------------------- full attention, bare
def widened_config(backbone: str, positions: int = 0):
    """The HF config of a ready backbone, its position table enlarged to `positions` if longer."""
    from rmt_lab.model.backbones import backbone_config as ready_config

    config = ready_config(backbone)
    for key in ("max_position_embeddings", "n_positions"):  # GPT-2 aliases one to the other: set one
        if getattr(config, key, None):
            setattr(config, key, max(getattr(config, key), positions))
            break
    return config


def plain_model(backbone: str, positions: int, attn: str) -> nn.Module:
    """The backbone's body (no LM head, no pooler) with random weights, `positions` positions, `attn`."""
    from transformers import AutoModel

    from rmt_lab.model import adapter_for

    config = widened_config(backbone, positions)
    kwargs = {"add_pooling_layer": False} if adapter_for(config).layout == "encoder" else {}
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)  # config-building notes; none matter here
    try:
        return AutoModel.from_config(config, attn_implementation=attn, **kwargs)
    finally:
        logger.setLevel(level)


@workload("full")
def run_full(*, backbone: str, tokens: int, batch: int = 1, attn: str = "sdpa", mode: str = "forward",
             dtype: str = "float32", device: str = "auto", matmul_n: int = 2048, matmul_repeats: int = 0) -> dict:
    """Full attention over all `tokens` at once, the backbone's size with random weights.

    forward: final hidden states, inference mode. train: a 6-way classifier on one position ([CLS]
    for an encoder, the last token for a decoder), forward + backward, dropout off, no optimizer step.
    """
    dev = resolve_device(device)
    peak = _maybe_peak(matmul_n, matmul_repeats, dev, dtype)
    train = mode == "train"
    dt = torch_dtype(dtype)
    model = plain_model(backbone, tokens, attn).to(dev, dt).eval()  # dropout off in training too (module docstring)
    causal = bool(getattr(model.config, "is_decoder", False)) or model.config.model_type == "gpt2"
    head = nn.Linear(model.config.hidden_size, NUM_CLASSES).to(dev, dt)
    g = torch.Generator().manual_seed(0)

    def step(n: int) -> None:
        ids = torch.randint(*TOKEN_RANGE, (batch, n), generator=g).to(dev)  # (batch, n)
        hidden = model(input_ids=ids).last_hidden_state  # (batch, n, d_model)
        if train:
            logits = head(hidden[:, -1 if causal else 0])  # (batch, classes)
            nn.functional.cross_entropy(logits, torch.zeros(batch, dtype=torch.long, device=dev)).backward()
        _sync(dev)

    with torch.inference_mode(not train):
        step(min(tokens, 512))  # warm-up
        model.zero_grad(set_to_none=True)
        result = _common(dev)
        _reset_peak_cuda(dev)
        start = time.perf_counter()
        step(tokens)
        seconds = time.perf_counter() - start
    return {**result, "seconds": seconds, "n_segments": 1, "attn_impl": model.config._attn_implementation,
            "positions": tokens, **peak,
            **_peak_cuda(dev)}


@workload("backbone")
def run_backbone(*, backbone: str, positions: int, passes: int, batch: int = 1, dtype: str = "float32",
                 device: str = "auto", matmul_n: int = 2048, matmul_repeats: int = 0) -> dict:
    """The ready backbone's own forward (its weights, its default attention) over `positions`, `passes` times.

    The plain call a user would make, `body(input_ids=ids)`: the reference for the RMT's time per segment.
    """
    from rmt_lab.model import load_backbone

    dev = resolve_device(device)
    peak = _maybe_peak(matmul_n, matmul_repeats, dev, dtype)
    loaded = load_backbone(backbone)
    body = loaded.adapter.body(loaded.model).to(dev, torch_dtype(dtype)).eval()
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        body(input_ids=torch.randint(*TOKEN_RANGE, (batch, positions), generator=g).to(dev))  # warm-up
        result = _common(dev)
        _reset_peak_cuda(dev)
        times = []
        start = time.perf_counter()
        for _ in range(passes):
            ids = torch.randint(*TOKEN_RANGE, (batch, positions), generator=g).to(dev)  # (batch, positions)
            t0 = time.perf_counter()
            body(input_ids=ids)
            _sync(dev)
            times.append(time.perf_counter() - t0)
        seconds = time.perf_counter() - start
    return {**result, "seconds": seconds, "n_segments": passes, "positions": positions,
            "attn_impl": loaded.model.config._attn_implementation, **time_stats(times), **peak, **_peak_cuda(dev)}
