"""Low-rank adapters (LoRA, Hu et al. 2021) on a frozen backbone.

With `RMTConfig.lora_rank = r > 0` every linear layer of the backbone body (`nn.Linear`, and GPT-2's `Conv1D`,
which stores its weight transposed) becomes W x + b + (alpha/r) B A x
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
from transformers.pytorch_utils import Conv1D


class _Adapter:
    """The trained rank-r update (alpha/r) B A added to a frozen layer's output; B starts at zero, so an
    adapted layer starts as the layer exactly."""

    def _add_adapter(self, n_in: int, n_out: int, rank: int, alpha: float, like: Tensor) -> None:
        factory = {"device": like.device, "dtype": like.dtype}
        self.lora_a = nn.Parameter(torch.empty(rank, n_in, **factory))  # (r, in)
        self.lora_b = nn.Parameter(torch.zeros(n_out, rank, **factory))  # (out, r)
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # nn.Linear's own init, as LoRA's reference code
        self.scale = alpha / rank

    def update(self, x: Tensor) -> Tensor:
        # Two skinny products instead of W + scale * B A: the full (out, in) update never exists, and its
        # gradient (as costly as a full weight gradient) is never formed.
        return F.linear(F.linear(x, self.lora_a), self.lora_b) * self.scale

    def merged_update(self) -> Tensor:
        """(alpha/r) B A, (out, in): what `merged()` folds into the plain layer's weight."""
        return self.scale * self.lora_b @ self.lora_a

    def extra_repr(self) -> str:
        own = f"rank={self.lora_a.shape[0]}, scale={self.scale:g}"
        return ", ".join(filter(None, [super().extra_repr(), own]))


class LoRALinear(_Adapter, nn.Linear):
    """An `nn.Linear` with a frozen base weight plus a trained rank-r update (the same state-dict keys + A, B)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight  # (out, in), shared with the module it replaces
        self.bias = base.bias
        self._add_adapter(self.in_features, self.out_features, rank, alpha, base.weight)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias) + self.update(x)

    def merged(self) -> nn.Linear:
        layer = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                          device=self.weight.device, dtype=self.weight.dtype)
        layer.weight.data.copy_(self.weight + self.merged_update())
        return layer


class LoRAConv1D(_Adapter, Conv1D):
    """HF's `Conv1D` (GPT-2's projections: a linear layer whose weight is stored (in, out)) with the same adapter."""

    def __init__(self, base: Conv1D, rank: int, alpha: float):
        nn.Module.__init__(self)
        self.nf, self.nx = base.nf, base.nx
        self.weight = base.weight  # (in, out), shared with the module it replaces
        self.bias = base.bias
        self._add_adapter(self.nx, self.nf, rank, alpha, base.weight)

    def forward(self, x: Tensor) -> Tensor:
        return Conv1D.forward(self, x) + self.update(x)

    def merged(self) -> Conv1D:
        layer = Conv1D(self.nf, self.nx).to(device=self.weight.device, dtype=self.weight.dtype)
        layer.weight.data.copy_(self.weight + self.merged_update().T)  # Conv1D stores (in, out)
        return layer

    def __repr__(self) -> str:
        return nn.Module.__repr__(self)


ADAPTED = {nn.Linear: LoRALinear, Conv1D: LoRAConv1D}  # layer type -> its adapted form


def attach_lora(body: nn.Module, rank: int, alpha: float) -> int:
    """Give each linear layer of `body` (`nn.Linear`, HF's `Conv1D`) an adapter and freeze what does not
    train; returns the adapters' count."""
    targets = [(name, m) for name, m in body.named_modules() if type(m) in ADAPTED]
    if not targets:
        kinds = sorted({type(m).__name__ for m in body.modules() if hasattr(m, "weight")})
        raise ValueError(f"lora_rank > 0 needs linear layers ({[t.__name__ for t in ADAPTED]}) in the backbone body; "
                         f"it has only {kinds}")
    for name, module in targets:
        _replace(body, name, ADAPTED[type(module)](module, rank, alpha))
    trained = {id(p) for p in trained_parameters(body).values()}
    for p in body.parameters():
        p.requires_grad_(id(p) in trained)
    return len(targets)


def trained_parameters(body: nn.Module) -> dict[str, nn.Parameter]:
    """{name in `body`: parameter} of what trains under adapters: A, B, the adapted layers' biases, the norms.

    Decided by module type, so a loaded model knows what its checkpoint holds without any flag."""
    found = {}
    for name, module in body.named_modules():
        if isinstance(module, _Adapter | nn.LayerNorm):
            for key, p in module.named_parameters(recurse=False):
                if key != "weight" or isinstance(module, nn.LayerNorm):
                    found[f"{name}.{key}" if name else key] = p
    return found


def merge_lora(body: nn.Module) -> int:
    """Fold each adapter into its layer: the plain layer with weight W + (alpha/r) B A; returns their count.

    For evaluation: one product per layer instead of three (rank 32 on MiniLM: ~17% fewer FLOPs).
    """
    adapted = [(name, m) for name, m in body.named_modules() if isinstance(m, _Adapter)]
    with torch.no_grad():
        for name, module in adapted:
            merged = module.merged()
            if module.bias is not None:
                merged.bias.copy_(module.bias)
            merged.requires_grad_(False)
            _replace(body, name, merged)
    return len(adapted)


def _replace(body: nn.Module, name: str, module: nn.Module) -> None:
    """Put `module` where `body`'s submodule `name` is (a dotted path)."""
    parent_name, _, child = name.rpartition(".")
    setattr(body.get_submodule(parent_name) if parent_name else body, child, module)

