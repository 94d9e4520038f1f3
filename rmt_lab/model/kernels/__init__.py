"""A fused softmax attention kernel for the CPU, forward and backward, and the transformers attention
functions that use it.

`cpu_attention.cpp` holds the kernel (how it works: the comment at its top). It is compiled on first
use with torch's C++ extension builder (g++ and ninja, the toolchain torch.compile's CPU backend needs
as well) into torch's extension cache, about 40-70 s once per machine and source version; later loads
take well under a second; where it cannot be built, sdpa serves (`built`). It serves fp32 attention with
every key visible to every query or a causal mask, with or without attention dropout: full segments of an
RMT, encoder or decoder, in inference (`cpu_attention`) and in training (`cpu_attention_with_lse`, whose
backward is `cpu_attention_backward`: flash-style, the weights recomputed from each row's log-sum-exp and
the dropped ones from a hash of the call's seed, never stored). Three torch custom ops, the backward
registered with autograd, so torch.compile keeps each as one call in the forward and backward graphs.

Its speed against torch's CPU flash attention, forward and backward, on AVX-512 and AVX2 builds, and
what it does to a training step: the README's speed section.

Two registered attention functions: `fused_training_attention` ("rmt_fused_training", every RMT's
attention from construction, `use_fused_attention`) runs the kernel where a gradient is to come, so
inference keeps sdpa's exact numbers (which recording attention reproduces); `fused_attention`
("rmt_fused", set by `RecurrentWrapper.compile_backbone(freeze=True)`) runs it in inference too. Both
send every other case (a padding mask, a causal one with fewer queries than keys, a GPU, another dtype,
head sizes that are not 1, 2, 4 or 8 SIMD vectors) to the backbone's sdpa.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import time
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

FUSED_IMPL = "rmt_fused"  # the kernel wherever it serves (`RecurrentWrapper.compile_backbone(freeze=True)`)
TRAINING_IMPL = "rmt_fused_training"  # the kernel where it serves and a gradient is to come (every RMT's default)
SOURCE = Path(__file__).with_name("cpu_attention.cpp")
log = logging.getLogger(__name__)

# Per SIMD level torch itself dispatches to on this CPU (ATen's Vectorized<float> takes its width from
# CPU_CAPABILITY_*): floats a vector, and the compiler flags of that build.
_BUILDS = {
    "AVX512": (16, ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-DCPU_CAPABILITY_AVX512"]),
    "AVX2": (8, ["-mavx2", "-mfma", "-DCPU_CAPABILITY_AVX2"]),
}


def capability() -> str:
    """The SIMD level the kernel is built for: torch's own CPU capability where the kernel knows it."""
    cap = torch.backends.cpu.get_cpu_capability()
    return cap if cap in _BUILDS else "DEFAULT"


# Floats per SIMD vector and compiler flags of the build; 0 floats: no build for this CPU (not x86 with
# AVX2 or AVX-512), sdpa serves.
# Read once here: a call into torch.backends while torch.compile traces would break the graph.
VECTOR_FLOATS, _FLAGS = _BUILDS.get(capability(), (0, []))


@functools.cache
def extension() -> ModuleType:
    """The compiled kernel, built on the first call (about 40 s), then loaded from torch's extension cache."""
    from torch.utils import cpp_extension

    if shutil.which("ninja") is None:  # the ninja package's binary, when its environment's bin/ is not on PATH
        import ninja

        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
    cap = capability()
    flags = ["-O3", "-fopenmp", *_FLAGS, f"-DCPU_CAPABILITY={cap}"]
    start = time.perf_counter()
    try:
        module = cpp_extension.load(name=f"rmt_lab_cpu_attention_{cap.lower()}", sources=[str(SOURCE)],
                                    extra_cflags=flags, extra_ldflags=["-fopenmp"])
    except (OSError, RuntimeError, ImportError) as exc:
        raise RuntimeError(
            f"could not build the CPU attention kernel {SOURCE.name} (needs g++ and ninja, like torch.compile on "
            f"the CPU): {exc}"
        ) from exc
    log.info("CPU attention kernel (%s) ready in %.1f s", cap, time.perf_counter() - start)
    return module


# Whether the kernel could be built: None until first needed. A plain module value, not a cached function,
# so that torch.compile reads it as a constant instead of tracing into the build.
_built: bool | None = None


def prepare() -> None:
    """Build (or load) the kernel now where this CPU has one, so no later step (a trace, a timed run, a
    benchmark process whose peak memory would include the compiler's, a torch.compile trace) pays for it."""
    global _built
    if VECTOR_FLOATS:
        extension()
        _built = True


def built() -> bool:
    """Whether the kernel is ready, building it on the first call; False (with a warning, once) where it cannot
    be built, and sdpa then serves every attention."""
    global _built
    if _built is None:
        try:
            extension()
            _built = True
        except RuntimeError as exc:
            log.warning("%s; the backbone's sdpa serves every attention instead", exc)
            _built = False
    return _built


def use_fused_attention(model: torch.nn.Module) -> None:
    """Run `model`'s attention as TRAINING_IMPL where it runs transformers' sdpa (HF's default) through the
    attention interface. Families that compute attention in their own code, and a model loaded with another
    implementation (eager, say), keep theirs."""
    if getattr(model, "_supports_attention_backend", False) and model.config._attn_implementation == "sdpa":
        model.set_attn_implementation(TRAINING_IMPL)


@torch.library.custom_op("rmt_lab::cpu_attention", mutates_args=())
def cpu_attention(query: Tensor, key: Tensor, value: Tensor, scale: float, causal: bool = False) -> Tensor:
    """softmax(scale * query key^T) value for (batch, heads, length, dim) fp32 CPU tensors: every key visible, or
    with `causal` key k visible to query q iff k <= q + key length - query length (the queries are the last
    positions; sdpa's is_causal where the lengths are equal).

    Returns (batch, query length, heads, dim), contiguous. No gradient: see `cpu_attention_with_lse`.
    """
    return extension().attention(query, key, value, scale, causal)


@cpu_attention.register_fake
def _(query: Tensor, key: Tensor, value: Tensor, scale: float, causal: bool = False) -> Tensor:
    batch, heads, length, dim = query.shape
    return query.new_empty(batch, length, heads, dim)


def _seed_value(seed: Tensor | None) -> int:
    return 0 if seed is None else int(seed)


@torch.library.custom_op("rmt_lab::cpu_attention_with_lse", mutates_args=())
def cpu_attention_with_lse(query: Tensor, key: Tensor, value: Tensor, scale: float, dropout: float = 0.0,
                           seed: Tensor | None = None, causal: bool = False) -> tuple[Tensor, Tensor]:
    """`cpu_attention`, differentiable in query, key and value, and what its backward needs besides them: each
    query row's log-sum-exp of its scores, (batch, heads, query length), in log2 units (of scale * log2(e) *
    query key^T). The log-sum-exp itself takes no gradient.

    `dropout` p drops each weight with probability p and scales the kept ones by 1 / (1 - p), as sdpa's
    dropout_p does; which ones is a hash of `seed` (an int64 scalar tensor, `dropout_seed`) and the weight's
    place, so the backward finds the same ones without a stored mask (`dropout_mask` shows them). The log-sum-exp
    is that of all the scores, before any weight is dropped."""
    out, lse = extension().attention_with_lse(query, key, value, scale, dropout, _seed_value(seed), causal)
    return out, lse


@cpu_attention_with_lse.register_fake
def _(query: Tensor, key: Tensor, value: Tensor, scale: float, dropout: float = 0.0, seed: Tensor | None = None,
      causal: bool = False) -> tuple[Tensor, Tensor]:
    batch, heads, length, dim = query.shape
    return query.new_empty(batch, length, heads, dim), query.new_empty(batch, heads, length)


@torch.library.custom_op("rmt_lab::cpu_attention_backward", mutates_args=())
def cpu_attention_backward(grad: Tensor, query: Tensor, key: Tensor, value: Tensor, out: Tensor, lse: Tensor,
                           scale: float, dropout: float = 0.0, seed: Tensor | None = None,
                           causal: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of query, key and value from the gradient of `cpu_attention_with_lse`'s output (batch, length,
    heads, dim): (batch, heads, length, dim) views of (batch, length, heads, dim) tensors, the layout of the
    projections the inputs are views of. `dropout`, `seed` and `causal`: the forward's."""
    dq, dk, dv = extension().attention_backward(grad, query, key, value, out, lse, scale, dropout, _seed_value(seed),
                                                causal)
    return dq, dk, dv


@cpu_attention_backward.register_fake
def _(grad: Tensor, query: Tensor, key: Tensor, value: Tensor, out: Tensor, lse: Tensor, scale: float,
      dropout: float = 0.0, seed: Tensor | None = None, causal: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    def like(t: Tensor) -> Tensor:
        batch, heads, length, dim = t.shape
        return t.new_empty(batch, length, heads, dim).transpose(1, 2)

    return like(query), like(key), like(value)


def _save_for_backward(ctx, inputs: tuple, output: tuple[Tensor, Tensor]) -> None:
    query, key, value, scale, dropout, seed, causal = inputs
    out, lse = output
    ctx.save_for_backward(query, key, value, out, lse, seed)
    ctx.scale, ctx.dropout, ctx.causal = scale, dropout, causal
    ctx.mark_non_differentiable(lse)


def _backward(ctx, grad: Tensor, _grad_lse: Tensor | None) -> tuple[Tensor, Tensor, Tensor, None, None, None, None]:
    if grad.stride(-1) != 1:
        grad = grad.contiguous()
    *saved, seed = ctx.saved_tensors
    return (*cpu_attention_backward(grad, *saved, ctx.scale, ctx.dropout, seed, ctx.causal), None, None, None, None)


cpu_attention_with_lse.register_autograd(_backward, setup_context=_save_for_backward)


def dropout_seed() -> Tensor:
    """A fresh seed for `cpu_attention_with_lse`'s dropout: an int64 scalar tensor drawn from torch's default
    CPU generator, so `torch.manual_seed` makes the dropped weights reproducible. A tensor, not an int, so
    torch.compile traces the draw instead of breaking the graph to read it."""
    return torch.randint(2**63 - 1, (), dtype=torch.int64)


def dropout_mask(dropout: float, seed: Tensor, batch: int, heads: int, n_q: int, n_keys: int) -> Tensor:
    """The factors `cpu_attention_with_lse` multiplies its weights by under `dropout` and `seed`: 0 (dropped) or
    1 / (1 - dropout), (batch, heads, n_q, n_keys) fp32. For tests, which rebuild the attention from it."""
    return extension().dropout_mask(dropout, _seed_value(seed), batch, heads, n_q, n_keys)


def supports(query: Tensor, key: Tensor, value: Tensor, causal: bool = False) -> bool:
    """Whether the kernel computes this attention: fp32 on an x86 CPU with AVX2 or AVX-512, equal heads, head
    dims of 1, 2, 4 or 8 SIMD vectors (16-128 floats with AVX-512, 8-64 with AVX2); `causal` only with as many
    queries as keys (where sdpa's is_causal and the kernel's mask, aligned to the last key, agree)."""
    width = VECTOR_FLOATS
    return (
        width > 0
        and query.device.type == key.device.type == value.device.type == "cpu"
        and query.dtype == key.dtype == value.dtype == torch.float32
        and query.dim() == 4 and key.shape == value.shape
        and query.shape[:2] == key.shape[:2] and query.shape[-1] == key.shape[-1]
        and query.shape[-1] in (width, 2 * width, 4 * width, 8 * width)
        and key.shape[2] > 0
        and (not causal or query.shape[2] == key.shape[2])
        and query.stride(-1) == key.stride(-1) == value.stride(-1) == 1
    )


def _attention(module, query, key, value, attention_mask, dropout, scaling, is_causal, kwargs, inference: bool):
    """The kernel where no mask is given (every key visible, or causal), and either a gradient is to come or
    weights are dropped (`cpu_attention_with_lse`), or `inference` allows it (`cpu_attention`); sdpa otherwise."""
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = bool(causal) and query.shape[2] > 1  # one query row sees every key, as in HF's sdpa
    extras = any(kwargs.get(k) is not None for k in ("position_bias", "softcap", "sliding_window", "s_aux"))
    if attention_mask is None and not extras and dropout < 1.0 and supports(query, key, value, causal) and built():
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        grad = torch.is_grad_enabled() and (query.requires_grad or key.requires_grad or value.requires_grad)
        if grad or (inference and dropout > 0.0):
            seed = dropout_seed() if dropout > 0.0 else None
            return cpu_attention_with_lse(query, key, value, scale, dropout, seed, causal)[0], None
        if inference:
            return cpu_attention(query, key, value, scale, causal), None
    return sdpa_attention_forward(
        module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
    )


def fused_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """Registered as FUSED_IMPL: the CPU kernel wherever it serves, in inference and training; sdpa otherwise."""
    return _attention(module, query, key, value, attention_mask, dropout, scaling, is_causal, kwargs, inference=True)


def fused_training_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
                             **kwargs):
    """Registered as TRAINING_IMPL: the CPU kernel where it serves and a gradient is to come; sdpa otherwise, so
    inference keeps sdpa's very numbers (which a recording of attention reproduces exactly)."""
    return _attention(module, query, key, value, attention_mask, dropout, scaling, is_causal, kwargs, inference=False)


AttentionInterface.register(FUSED_IMPL, fused_attention)
AttentionInterface.register(TRAINING_IMPL, fused_training_attention)
# The masks sdpa gets: None where every position is valid (then the kernel runs), a padding mask otherwise.
AttentionMaskInterface.register(FUSED_IMPL, sdpa_mask)
AttentionMaskInterface.register(TRAINING_IMPL, sdpa_mask)
