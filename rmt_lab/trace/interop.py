"""Interop: bertviz's input format and a TransformerLens-style `run_with_cache`."""

from __future__ import annotations

from torch import Tensor

from rmt_lab.trace.config import TraceConfig
from rmt_lab.trace.names import hook_name
from rmt_lab.trace.recorder import record
from rmt_lab.trace.store import Trace


def to_bertviz(trace: Trace, segment: int, sample: int = 0, layers: list[int] | None = None,
               trim_padding: bool = True) -> tuple[list[Tensor], list[str]]:
    """One segment's maps as bertviz's head_view/model_view take them: a list over layers of
    (1, heads, seq, seq) tensors, and the seq token labels (memory positions included).

    bertviz wants every layer: the trace must have kept the layers asked for, and `heads` are the kept ones.
    """
    info = trace.segment_info(segment)
    layers = list(info["layers"]) if layers is None else list(layers)
    missing = [lay for lay in layers if lay not in info["layers"]]
    if missing:
        raise KeyError(f"layers {missing} kept no map in segment {segment}; kept layers: {info['layers']}")
    labels = trace.labels(segment, sample)
    n = len(labels)
    if trim_padding:
        n = max(i for i, lab in enumerate(labels) if lab != "[PAD]") + 1
    attention = [trace[hook_name(segment, lay)][sample : sample + 1, :, :n, :n].float() for lay in layers]
    return attention, labels[:n]


def run_with_cache(model, input_ids: Tensor, names_filter=None, config: TraceConfig | None = None,
                   labels: Tensor | None = None):
    """Run the RMT and return (RMTOutput, cache) like TransformerLens' `run_with_cache`.

    The cache maps stable names (`hook_name`) to tensors: every segment's attention patterns
    (batch, heads, L, L) and memory states (batch, M, d). `names_filter`: a list of names or a
    predicate on names. The trace budget still applies (TraceConfig.budget_mib); pass a config to
    keep fewer segments, layers or heads.
    """
    config = config or TraceConfig(segments="all", keep_memory=True, summaries=False, top_k=0)
    output, trace = record(model, input_ids, config, labels=labels)
    if names_filter is None:
        keep = lambda name: True  # noqa: E731
    elif callable(names_filter):
        keep = names_filter
    else:
        wanted = set(names_filter)
        keep = wanted.__contains__
    cache = {name: trace[name] for name in trace.names() if keep(name)}
    return output, cache


__all__ = ["run_with_cache", "to_bertviz"]
