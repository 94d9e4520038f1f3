"""A fused softmax attention kernel for the CPU, and the transformers attention function that uses it.

`cpu_attention.cpp` holds the kernel (how it works: the comment at its top). It is compiled on first
use with torch's C++ extension builder (g++ and ninja, the toolchain torch.compile's CPU backend needs
as well) into torch's extension cache, about 40 s once per machine and source version; later loads take
well under a second. It serves fp32, unmasked, non-causal attention without gradients, the case of an
RMT encoder streaming full segments at inference, where it takes ~0.70x the time of torch's CPU flash
attention (512 positions, 12 heads of 32 dims, AVX-512). `fused_attention`, registered with
transformers as "rmt_fused", sends every other case (a padding or causal mask, a GPU, another dtype,
gradients, head sizes that are not 1, 2, 4 or 8 SIMD vectors) to the backbone's sdpa.
The kernel is a torch custom op, so torch.compile keeps it as one call in the compiled graph.
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

FUSED_IMPL = "rmt_fused"
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


def prepare() -> None:
    """Build (or load) the kernel now where this CPU has one, so no later step (a trace, a timed run, a
    benchmark process whose peak memory would include the compiler's) pays for it."""
    if VECTOR_FLOATS:
        extension()


@torch.library.custom_op("rmt_lab::cpu_attention", mutates_args=())
def cpu_attention(query: Tensor, key: Tensor, value: Tensor, scale: float) -> Tensor:
    """softmax(scale * query key^T) value for (batch, heads, length, dim) fp32 CPU tensors, no mask.

    Returns (batch, query length, heads, dim), contiguous.
    """
    return extension().attention(query, key, value, scale)


@cpu_attention.register_fake
def _(query: Tensor, key: Tensor, value: Tensor, scale: float) -> Tensor:
    batch, heads, length, dim = query.shape
    return query.new_empty(batch, length, heads, dim)


def supports(query: Tensor, key: Tensor, value: Tensor) -> bool:
    """Whether the kernel computes this attention: fp32 on an x86 CPU with AVX2 or AVX-512, no gradient,
    equal heads, head dims of 1, 2, 4 or 8 SIMD vectors (16-128 floats with AVX-512, 8-64 with AVX2)."""
    width = VECTOR_FLOATS
    return (
        width > 0
        and query.device.type == key.device.type == value.device.type == "cpu"
        and query.dtype == key.dtype == value.dtype == torch.float32
        and not (torch.is_grad_enabled() and (query.requires_grad or key.requires_grad or value.requires_grad))
        and query.dim() == 4 and key.shape == value.shape
        and query.shape[:2] == key.shape[:2] and query.shape[-1] == key.shape[-1]
        and query.shape[-1] in (width, 2 * width, 4 * width, 8 * width)
        and key.shape[2] > 0
        and query.stride(-1) == key.stride(-1) == value.stride(-1) == 1
    )


def fused_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """Registered as "rmt_fused": the CPU kernel where every key is visible to every query, sdpa otherwise."""
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    extras = any(kwargs.get(k) is not None for k in ("position_bias", "softcap", "sliding_window", "s_aux"))
    if (attention_mask is None and not causal and not extras and (dropout == 0.0 or not module.training)
            and supports(query, key, value)):
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        return cpu_attention(query, key, value, scale), None
    return sdpa_attention_forward(
        module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
    )


AttentionInterface.register(FUSED_IMPL, fused_attention)
# The masks sdpa gets: None where every position is valid (then the kernel runs), a padding mask otherwise.
AttentionMaskInterface.register(FUSED_IMPL, sdpa_mask)
