"""Benchmarks of the RMT against full attention: FLOPs, analytic and measured, and the report's Figure 3.

- `shapes`: `TransformerShape` and `shape_from_config` (BERT, RoBERTa, GPT-2, OPT), known public configs.
- `flops`: pure analytic FLOP breakdowns, full attention and RMT, forward and training; Megatron's form.
- `measured`: the same counted by torch's FlopCounterMode on meta-device HF models.
- `flops_sweep`: Figure 3 data (FLOPs versus length, OPT family) and the full / RMT ratio table.
"""

from rmt_lab.bench.flops import (
    HEADS, MODES, TERMS, forward_pass_flops, full_attention_flops, megatron_flops, megatron_forward_flops,
    memory_positions, rmt_flops, segment_lengths, total,
)
from rmt_lab.bench.flops_sweep import FIGURE3_LENGTHS, FlopsSweepConfig, flops_ratio_table, flops_sweep
from rmt_lab.bench.machine import machine_description
from rmt_lab.bench.measured import PassCounter, measure_full_attention_flops, measure_rmt_flops, meta_model
from rmt_lab.bench.shapes import (
    KNOWN_MODELS, OPT_MODELS, TransformerShape, known_model_names, model_config, shape_from_config,
)

__all__ = [
    "FIGURE3_LENGTHS", "HEADS", "KNOWN_MODELS", "MODES", "OPT_MODELS", "TERMS", "FlopsSweepConfig", "PassCounter",
    "TransformerShape", "flops_ratio_table", "flops_sweep", "forward_pass_flops", "full_attention_flops",
    "known_model_names", "machine_description", "measure_full_attention_flops", "measure_rmt_flops",
    "megatron_flops", "megatron_forward_flops", "memory_positions", "meta_model", "model_config", "rmt_flops",
    "segment_lengths", "shape_from_config", "total",
]
