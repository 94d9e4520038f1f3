"""Instrumentation of the Recurrent Memory Transformer: what memory reads, writes and keeps.

Beyond the report's Figure 6 (attention maps of memory operations on a 4-segment sample), this
records cheap summaries for every segment of inputs of any length (a million tokens on a CPU) and
full attention maps only where asked:

    from rmt_lab.trace import Recorder, TraceConfig, record
    out, trace = record(model, samples, TraceConfig(segments="facts,last"), out="runs/trace")
    trace.summaries          # tidy DataFrame: segment, sample, layer, head, slot, metric, value, has_fact
    trace.written            # top-k tokens written per memory slot
    trace.pattern(0, 1)      # (batch, heads, L, L), read lazily from runs/trace/maps/
    trace.labels(0)          # ["[CLS]", "[mem 0]", ..., "[SEP]", "mary", ...]

Names of recorded tensors come from one helper, `hook_name` ("seg.3.layer.2.attn.pattern").
Memory probing (`probe_memory`), bertviz export (`to_bertviz`) and a TransformerLens-style
`run_with_cache` build on the same recorder.
"""

from rmt_lab.trace.attention import METRICS, TRACE_IMPL, summaries_from_maps
from rmt_lab.trace.config import SegmentSelection, TraceConfig
from rmt_lab.trace.interop import run_with_cache, to_bertviz
from rmt_lab.trace.index import SegmentIndex, build_index
from rmt_lab.trace.names import hook_name, parse_name
from rmt_lab.trace.probe import collect_memory_states, memory_targets, probe_memory, probe_targets
from rmt_lab.trace.recorder import Recorder, fact_positions, record
from rmt_lab.trace.store import Trace, TraceBudgetError, TraceMismatchError, model_fingerprint
from rmt_lab.trace.summaries import ALL_METRICS, ATTENTION_METRICS, MEMORY_METRICS, fact_alignment, where_written

__all__ = [
    "ALL_METRICS", "ATTENTION_METRICS", "MEMORY_METRICS", "METRICS", "TRACE_IMPL",
    "Recorder", "SegmentIndex", "SegmentSelection", "Trace", "TraceBudgetError", "TraceConfig", "TraceMismatchError",
    "build_index", "collect_memory_states", "fact_alignment", "fact_positions", "hook_name", "model_fingerprint",
    "memory_targets", "parse_name", "probe_memory", "probe_targets", "record", "run_with_cache",
    "summaries_from_maps", "to_bertviz", "where_written",
]
