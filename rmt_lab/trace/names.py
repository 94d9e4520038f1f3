"""Stable names of everything a trace records, built by one helper (TransformerLens-style hook names).

    hook_name(3, 2)                  -> "seg.3.layer.2.attn.pattern"   (batch, heads, positions, positions)
    hook_name(3, kind="memory.state") -> "seg.3.memory.state"           (batch, n_mem, d_model)

No other module spells these strings by hand; `parse_name` is the inverse. A user hook (`Recorder(hooks=...)`)
is attached by a kind ("attn.pattern") or a glob over names ("seg.*.layer.0.attn.pattern"); `hook_pattern`
checks one and `hook_matches` applies it.
"""

from __future__ import annotations

import fnmatch
import re

KINDS = {
    "attn.pattern": True,  # attention probabilities of one layer, queries as rows; needs a layer
    "memory.state": False,  # the memory written by the segment (the cell's output memory)
}

_PATTERN = re.compile(r"^seg\.(\d+)(?:\.layer\.(\d+))?\.(.+)$")


def hook_name(segment: int, layer: int | None = None, kind: str = "attn.pattern") -> str:
    """The stable name of one recorded tensor; `layer` is required exactly for per-layer kinds."""
    if kind not in KINDS:
        raise ValueError(f"unknown trace tensor kind {kind!r}; known kinds: {sorted(KINDS)}")
    if KINDS[kind] != (layer is not None):
        raise ValueError(f"kind {kind!r} {'needs' if KINDS[kind] else 'takes no'} layer (got layer={layer!r})")
    if segment < 0 or (layer is not None and layer < 0):
        raise ValueError(f"segment and layer indices must be >= 0, got segment={segment}, layer={layer}")
    return f"seg.{segment}.layer.{layer}.{kind}" if layer is not None else f"seg.{segment}.{kind}"


def parse_name(name: str) -> tuple[int, int | None, str]:
    """(segment, layer or None, kind) of a name made by `hook_name`."""
    match = _PATTERN.match(name)
    if not match or match.group(3) not in KINDS:
        examples = f"{hook_name(0, 0)!r}, {hook_name(0, kind='memory.state')!r}"
        raise ValueError(f"{name!r} is not a trace tensor name (e.g. {examples})")
    segment, layer, kind = match.groups()
    return int(segment), (int(layer) if layer is not None else None), kind


def hook_pattern(pattern: str) -> str:
    """`pattern` if it can name recorded tensors: a kind, or a glob over names ending in a kind or a wildcard."""
    if not isinstance(pattern, str) or not (pattern in KINDS or pattern.endswith("*")
                                            or any(pattern.endswith("." + kind) for kind in KINDS)):
        raise ValueError(f"hook pattern {pattern!r} names no trace tensor: give a kind {sorted(KINDS)} or a glob over "
                         f"names such as {hook_name(0, 0)!r} (e.g. 'seg.*.layer.0.attn.pattern')")
    return pattern


def hook_matches(pattern: str, name: str) -> bool:
    """Whether hook `pattern` (a kind or a glob over names) covers the tensor called `name`."""
    return parse_name(name)[2] == pattern if pattern in KINDS else fnmatch.fnmatchcase(name, pattern)
