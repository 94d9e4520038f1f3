"""Figures and widgets of rmt_lab: the report's figures regenerated from our own result tables.

Every figure is a function of tidy DataFrames (or, for attention maps, of a recorded trace) that
returns a matplotlib Figure; nothing here runs an experiment (STYLE.md: data flows
experiments -> parquet/trace files -> viz).

    from rmt_lab.viz import plot_flops, render_figures
    fig = plot_flops(pd.read_parquet("data/results/bench/flops.parquet"))   # report Figure 3
    render_figures("data/results", "figures")                             # every figure with data

Report figures: `plot_long_context` (1), `plot_flops` (3), `plot_generalization` and
`plot_generalization_heatmap` (5), `plot_memory_operations` (6). Beyond the report:
`plot_training_curves`, `plot_recurrence_ablation`, `plot_memory_size_sweep`, `plot_accuracy_by_fact_position`,
`plot_accuracy_by_training_length`, `plot_measured_memory`, `plot_read_write_profile`, `plot_write_precision`,
`plot_memory_trajectory`, `plot_probe_accuracy`. Widgets (offline): `AttentionExplorer` (drawn in the
browser, `save_html` for a standalone page; rmt_lab.viz.explorer), `MemoryDynamics` (import from
rmt_lab.viz.widgets).
"""

from rmt_lab.viz.attention import (
    AttentionView, attention_view, memory_operation_panels, plot_attention, plot_memory_operations,
)
from rmt_lab.viz.explorer import AttentionExplorer
from rmt_lab.viz.memory import (
    attention_profile, memory_projection, plot_memory_trajectory, plot_probe_accuracy, plot_read_write_profile,
    plot_write_precision,
)
from rmt_lab.viz.results import (
    drawn_summary, figure_names, figures_failed, format_report, inputs_report, load_trace, missing_inputs,
    render_figures,
)
from rmt_lab.viz.scaling import (
    plot_accuracy_by_fact_position, plot_accuracy_by_training_length, plot_flops, plot_long_context,
    plot_measured_memory, plot_memory_size_sweep,
)
from rmt_lab.viz.style import figure_style, save_figure
from rmt_lab.viz.tables import TableError
from rmt_lab.viz.training import (
    plot_generalization, plot_generalization_heatmap, plot_recurrence_ablation, plot_training_curves,
)

__all__ = [
    "AttentionExplorer", "AttentionView", "TableError", "attention_profile", "attention_view", "drawn_summary",
    "figure_names", "figure_style", "figures_failed", "format_report", "inputs_report", "load_trace",
    "memory_operation_panels", "memory_projection", "missing_inputs", "plot_attention", "plot_flops",
    "plot_generalization", "plot_generalization_heatmap", "plot_long_context", "plot_accuracy_by_fact_position",
    "plot_accuracy_by_training_length", "plot_measured_memory", "plot_memory_operations", "plot_memory_size_sweep",
    "plot_memory_trajectory", "plot_probe_accuracy", "plot_read_write_profile", "plot_recurrence_ablation",
    "plot_training_curves", "plot_write_precision", "render_figures", "save_figure",
]
