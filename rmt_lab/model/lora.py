"""Low-rank adapters (LoRA, Hu et al. 2021) on a frozen backbone.

With `RMTConfig.lora_rank = r > 0` every `nn.Linear` of the backbone body becomes W x + b + (alpha/r) B A x
with W frozen, A (r, in) and B (out, r) trained and B starting at zero, so training starts from the
pretrained function exactly. The biases of those layers and the body's layer norms train too (a few
ten thousand numbers); everything else of the backbone, embeddings included, stays frozen. Why the RMT
trains this way rather than every weight: what trains is small (MiniLM at rank 32: 1.36M numbers with
memory and classifier, 6% of the model, a 5.4 MB checkpoint instead of 90 MB), small enough to keep
with the results; a step also skips the frozen weights' gradients (at rank 32, 1.75 against 1.9 s a
segment of batch 32 on one Xeon thread: the adapters' own products take back most of the saving).

Replacing the module keeps its name and its `weight` / `bias` keys, so state dicts, tracing hooks
and attention modules are found exactly as without adapters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LoRALinear(nn.Linear):
    """An `nn.Linear` with a frozen base weight plus a trained rank-r update (the same state-dict keys + A, B)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight  # (out, in), shared with the module it replaces
        self.bias = base.bias
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_a = nn.Parameter(torch.empty(rank, self.in_features, **factory))  # (r, in)
        self.lora_b = nn.Parameter(torch.zeros(self.out_features, rank, **factory))  # (out, r): starts as W exactly
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # nn.Linear's own init, as LoRA's reference code
        self.scale = alpha / rank

    def forward(self, x: Tensor) -> Tensor:
        # Two skinny products instead of W + scale * B A: the full (out, in) update never exists, and its
        # gradient (as costly as a full weight gradient) is never formed.
        return F.linear(x, self.weight, self.bias) + F.linear(F.linear(x, self.lora_a), self.lora_b) * self.scale

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.lora_a.shape[0]}, scale={self.scale:g}"


def attach_lora(body: nn.Module, rank: int, alpha: float) -> int:
    """Give each `nn.Linear` of `body` an adapter and freeze what does not train; returns the adapters' count."""
    targets = [(name, m) for name, m in body.named_modules() if type(m) is nn.Linear]
    if not targets:
        kinds = sorted({type(m).__name__ for m in body.modules() if hasattr(m, "weight")})
        raise ValueError(f"lora_rank > 0 needs nn.Linear layers in the backbone body; it has only {kinds}")
    for name, module in targets:
        _replace(body, name, LoRALinear(module, rank, alpha))
    trained = {id(p) for p in trained_parameters(body).values()}
    for p in body.parameters():
        p.requires_grad_(id(p) in trained)
    return len(targets)


def trained_parameters(body: nn.Module) -> dict[str, nn.Parameter]:
    """{name in `body`: parameter} of what trains under adapters: A, B, the adapted layers' biases, the norms.

    Decided by module type, so a loaded model knows what its checkpoint holds without any flag."""
    found = {}
    for name, module in body.named_modules():
        if isinstance(module, LoRALinear | nn.LayerNorm):
            for key, p in module.named_parameters(recurse=False):
                if key != "weight" or isinstance(module, nn.LayerNorm):
                    found[f"{name}.{key}" if name else key] = p
    return found


def merge_lora(body: nn.Module) -> int:
    """Fold each adapter into its layer: an `nn.Linear` with weight W + (alpha/r) B A; returns their count.

    For evaluation: one product per layer instead of three (rank 32 on MiniLM: ~17% fewer FLOPs).
    """
    adapted = [(name, m) for name, m in body.named_modules() if isinstance(m, LoRALinear)]
    for name, module in adapted:
        merged = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None,
                           device=module.weight.device, dtype=module.weight.dtype)
        with torch.no_grad():
            merged.weight.copy_(module.weight + module.scale * module.lora_b @ module.lora_a)
            if module.bias is not None:
                merged.bias.copy_(module.bias)
        merged.requires_grad_(False)
        _replace(body, name, merged)
    return len(adapted)


def _replace(body: nn.Module, name: str, module: nn.Module) -> None:
    """Put `module` where `body`'s submodule `name` is (a dotted path)."""
    parent_name, _, child = name.rpartition(".")
    setattr(body.get_submodule(parent_name) if parent_name else body, child, module)

