"""Benchmarks of the RMT against full attention: FLOPs, analytic and measured, memory and speed.

- `shapes`: `TransformerShape` and `shape_from_config` (BERT, RoBERTa, GPT-2, OPT), known public configs.
- `flops`: pure analytic FLOP breakdowns, full attention and RMT, forward and training; Megatron's form.
- `measured`: the same counted by torch's FlopCounterMode on meta-device HF models.
- `flops_sweep`: Figure 3 data (FLOPs versus length, OPT family) and the full / RMT ratio table.
- `runner`: one point in a fresh process (`rmt_lab.process`) under a time and memory `Budget`; running out
  is a row.
- `workloads`: what a point runs in that process (RMT streamed or trained, full attention, bare
  backbone, naive loop, matmul peak).
- `sweep`: points into tidy parquet with machine columns; resume, skipped series, progress.
- `memory`: peak memory and time versus length, RMT vs full attention (eager, sdpa), forward and train.
- `speed`: RMT tokens/s, GFLOP/s, fraction of the matmul peak, vs the bare backbone and a naive loop.
- `inference`: one streaming RMT point (for `rmt-lab demo` and `info --bench`).

Exports load their module on first use (PEP 562), so a benchmark's child process imports only
what it runs.
"""

import importlib

_EXPORTS = {
    "flops": ["HEADS", "MODES", "TERMS", "forward_pass_flops", "full_attention_flops", "megatron_flops",
              "megatron_forward_flops", "memory_positions", "rmt_flops", "segment_lengths", "total"],
    "flops_sweep": ["FIGURE3_LENGTHS", "FlopsSweepConfig", "flops_ratio_table", "flops_sweep"],
    "machine": ["machine_description"],
    "measured": ["PassCounter", "measure_full_attention_flops", "measure_rmt_flops", "meta_model"],
    "shapes": ["KNOWN_MODELS", "OPT_MODELS", "TransformerShape", "known_model_names", "model_config",
               "shape_from_config"],
    "runner": ["run_point"],
    "workloads": ["WORKLOADS"],
    "sweep": ["Point", "run_sweep"],
    "memory": ["MemorySweepConfig", "feasible_lengths", "flatness", "memory_points", "memory_status_table",
               "memory_sweep", "memory_table"],
    "speed": ["SpeedSweepConfig", "speed_points", "speed_sweep", "speed_table"],
    "inference": ["measure_in_subprocess"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
