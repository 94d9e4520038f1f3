"""Benchmarks of the RMT against full attention: FLOPs, analytic and measured, and the report's Figure 3.

- `shapes`: `TransformerShape` and `shape_from_config` (BERT, RoBERTa, GPT-2, OPT), known public configs.
- `flops`: pure analytic FLOP breakdowns, full attention and RMT, forward and training; Megatron's form.
"""

from rmt_lab.bench.flops import (
    HEADS, MODES, TERMS, forward_pass_flops, full_attention_flops, megatron_flops, megatron_forward_flops,
    memory_positions, rmt_flops, segment_lengths, total,
)
from rmt_lab.bench.shapes import (
    KNOWN_MODELS, OPT_MODELS, TransformerShape, known_model_names, model_config, shape_from_config,
)

__all__ = [
    "HEADS", "KNOWN_MODELS", "MODES", "OPT_MODELS", "TERMS", "TransformerShape", "forward_pass_flops",
    "full_attention_flops", "known_model_names", "megatron_flops", "megatron_forward_flops", "memory_positions",
    "model_config", "rmt_flops", "segment_lengths", "shape_from_config", "total",
]
