"""Each figure function draws what its table says: axes, scales, labels and the plotted data."""

import matplotlib.colors
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.figure import Figure

from rmt_lab.viz import (
    TableError, memory_projection, plot_flops, plot_generalization, plot_generalization_heatmap, plot_long_context,
    plot_accuracy_by_fact_position, plot_accuracy_by_training_length, plot_measured_memory, plot_memory_size_sweep,
    plot_memory_trajectory, plot_probe_accuracy, plot_read_write_profile, plot_recurrence_ablation,
    plot_training_curves, plot_write_precision, save_figure,
)
from rmt_lab.stats import wilson_interval
from rmt_lab.viz.scaling import REPORT_OPT_MODELS
from tests.viz import helpers


def data_axes(fig: Figure):
    """Axes that hold data (colour bars excluded)."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def test_flops_two_panels_split_at_32k_log_y():
    fig = plot_flops(helpers.flops_table())
    left, right = data_axes(fig)
    assert left.get_yscale() == right.get_yscale() == "log"
    assert "relative to" in left.get_ylabel() and "tokens" in left.get_xlabel()
    left_x = np.concatenate([line.get_xdata() for line in left.get_lines()])
    right_x = np.concatenate([line.get_xdata() for line in right.get_lines()])
    assert left_x.max() == 32_000 and right_x.min() == 32_000 and right_x.max() == 2_048_000
    # the RMT line of opt-125m: relative FLOPs linear in length
    rmt = [line for line in right.get_lines() if line.get_linestyle() == "--"][0]
    assert np.allclose(np.asarray(rmt.get_ydata()) / np.asarray(rmt.get_xdata()), 1.03 / 512)
    labels = [t.get_text() for t in right.get_legend().get_texts()]
    assert {"OPT-125M", "OPT-1.3B", "OPT-175B", "full attention"} <= set(labels)
    assert any(lab.startswith("RMT (segment 512)") for lab in labels)


def test_flops_keeps_report_models_only():
    table = pd.concat([helpers.flops_table(), helpers.flops_table().assign(model="opt-350m")])
    fig = plot_flops(table)
    labels = {t.get_text() for t in data_axes(fig)[1].get_legend().get_texts()}
    assert "OPT-350M" not in labels and "opt-350m" not in REPORT_OPT_MODELS
    assert "OPT-350M" in {t.get_text() for t in data_axes(plot_flops(table, models=None))[1].get_legend().get_texts()}


def test_long_context_accuracy_and_memory_panels():
    table = helpers.long_eval_table()
    fig = plot_long_context(table)
    acc, mem = data_axes(fig)
    assert mem.get_xscale() == "log" and acc.get_ylim()[1] == pytest.approx(1.04)
    assert "MiB" in mem.get_ylabel()
    lines = [line for line in acc.get_lines() if len(line.get_xdata()) == 4]
    assert len(lines) == 3
    reasoning = table[table["task"] == "reasoning"]
    assert np.allclose(lines[2].get_ydata(), reasoning["accuracy"])
    assert np.allclose([line for line in mem.get_lines() if len(line.get_xdata()) == 4][0].get_ydata(), 560.0)
    legend = {t.get_text() for t in fig.legends[0].get_texts()}  # below the panels
    assert {"Memorize", "Detect & Memorize", "Reasoning", "chance (1/6)"} <= legend
    trained = [line for line in acc.get_lines() if line.get_linestyle() == "--"]
    assert trained and trained[0].get_xdata()[0] == pytest.approx(7 * 499)


def test_long_context_draws_a_curve_per_training_length_of_a_task():
    table = helpers.long_eval_table()
    longer = table[table["task"] == "detect_memorize"].assign(trained_segments=32, accuracy=0.95)
    fig = plot_long_context(pd.concat([table, longer], ignore_index=True))
    acc, _ = data_axes(fig)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[1:3] == ["Detect & Memorize, trained on 7 segments", "Detect & Memorize, trained on 32 segments"]
    assert "Memorize" in legend  # a task with one model keeps its plain name
    curves = {line.get_label(): line for line in acc.get_lines()}
    assert curves[legend[2]].get_linestyle() == "-." and np.allclose(curves[legend[2]].get_ydata(), 0.95)
    assert curves[legend[1]].get_linestyle() == "-"
    trained = [line.get_xdata()[0] for line in acc.get_lines() if line.get_linestyle() == "--"]
    assert trained == pytest.approx([7 * 499, 32 * 499])


def test_long_context_draws_a_model_trained_to_hold_memory_beside_the_one_it_started_from():
    table = helpers.long_eval_table()
    detect = table[table["task"] == "detect_memorize"]
    longer = detect.assign(trained_segments=32, accuracy=0.8)  # a table from before the loss: no column
    held = detect.assign(trained_segments=32, accuracy=1.0, retention_loss=100.0)
    acc, _ = data_axes(plot_long_context(pd.concat([table, longer, held], ignore_index=True)))
    curves = {line.get_label(): line for line in acc.get_lines()}
    plain = curves["Detect & Memorize, trained on 32 segments"]
    kept = curves["Detect & Memorize, trained on 32 segments + retention loss 100"]
    assert np.allclose(plain.get_ydata(), 0.8) and np.allclose(kept.get_ydata(), 1.0)
    assert plain.get_linestyle() == "-." and kept.get_linestyle() == ":"


def test_long_context_draws_no_interval_across_unmeasured_lengths_and_names_training_lengths_above():
    table = helpers.long_eval_table()
    memorize = table["task"] == "memorize"
    beyond = table[memorize].iloc[[-1]].assign(tokens=table["tokens"].max() * 10, n_samples=4)  # 4x steps, then 10x
    acc, _ = data_axes(plot_long_context(pd.concat([table, beyond], ignore_index=True)))
    color = next(line.get_color() for line in acc.get_lines() if line.get_label() == "Memorize")
    rgb = matplotlib.colors.to_rgb(color)
    bands = [c for c in acc.collections if isinstance(c, PolyCollection) and np.allclose(c.get_facecolor()[0][:3], rgb)]
    assert len(bands) == 1 and bands[0].get_paths()[0].vertices[:, 0].max() == table.loc[memorize, "tokens"].max()
    bars = [c for c in acc.collections if isinstance(c, LineCollection) and np.allclose(c.get_edgecolor()[0][:3], rgb)]
    assert len(bars) == 1 and bars[0].get_segments()[0][0, 0] == beyond["tokens"].iloc[0]
    assert sorted(bars[0].get_segments()[0][:, 1]) == pytest.approx(np.ravel(wilson_interval([0.9], [4])))
    top = acc.child_axes[0]
    assert [t.get_text() for t in top.xaxis.get_ticklabels()] == ["7"] and "trained on" in top.get_xlabel()
    assert top.get_xticks() == pytest.approx([7 * 499])


def test_long_context_names_each_tasks_memory_measure_when_they_differ():
    table = helpers.long_eval_table()
    texts = lambda fig: [t.get_text() for t in data_axes(fig)[1].texts]  # noqa: E731
    assert texts(plot_long_context(table)) == ["measured: peak RSS (fresh process), cpu"]
    gpu = table["task"] == "memorize"
    table.loc[gpu, "device"], table.loc[gpu, "memory_source"] = "cuda:0", "cuda max_memory_allocated"
    assert sorted(texts(plot_long_context(table))) == ["cuda max_memory_allocated, cuda:0",
                                                       "peak RSS (fresh process), cpu"]  # once for the two CPU tasks


def test_long_context_draws_a_memory_line_per_source_of_one_model():
    table = helpers.long_eval_table()
    gpu = (table["task"] == "memorize") & (table["tokens"] < table["tokens"].max())  # its longest length on a CPU
    table.loc[gpu, ["device", "memory_source", "peak_mib"]] = "cuda:0", "cuda max_memory_allocated", 195.0
    acc, mem = data_axes(plot_long_context(table))
    memorize = table[table["task"] == "memorize"]
    curve = next(line for line in acc.get_lines() if line.get_label() == "Memorize")
    assert list(curve.get_xdata()) == list(memorize["tokens"])  # accuracy: one curve over both devices
    memory = [list(line.get_ydata()) for line in mem.get_lines() if line.get_color() == curve.get_color()]
    assert sorted(memory) == [[195.0] * (len(memorize) - 1), [560.0]]  # never a line from GPU to CPU memory


def test_wilson_interval_contains_estimate_and_stays_in_range():
    lo, hi = wilson_interval([0.0, 0.5, 1.0], [16, 16, 16])
    assert (lo <= [0.0, 0.5, 1.0]).all() and (hi >= [0.0, 0.5, 1.0]).all()
    assert lo[0] == 0 and hi[2] == 1 and 0.25 < lo[1] < 0.5 < hi[1] < 0.75


def test_generalization_lines_one_panel_per_task():
    table = helpers.generalization_table()
    fig = plot_generalization(table)
    axes = data_axes(fig)
    assert [ax.get_title() for ax in axes] == ["Memorize", "Detect & Memorize", "Reasoning"]
    lines = [line for line in axes[2].get_lines() if len(line.get_xdata()) == 5]
    assert len(lines) == 3  # trained on 1, 2, 3 segments
    expected = table[(table["task"] == "reasoning") & (table["trained_segments"] == 2)].sort_values("eval_segments")
    assert np.allclose(lines[1].get_ydata(), expected["accuracy"])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["1", "2", "3"]


def test_generalization_heatmap_matrix():
    table = helpers.generalization_table(tasks=("memorize",))
    fig = plot_generalization_heatmap(table)
    ax = data_axes(fig)[0]
    image = ax.get_images()[0].get_array()
    expected = table.pivot(index="trained_segments", columns="eval_segments", values="accuracy").to_numpy()
    assert image.shape == (3, 5) and np.allclose(image, expected)
    assert ax.get_ylabel() == "trained on (segments)" and ax.get_xlabel() == "evaluated on (segments)"
    assert len(ax.patches) == 3  # each trained length boxed on its own column


def test_recurrence_ablation_against_the_same_model_with_memory():
    generalization = helpers.generalization_table()
    ablation = generalization[generalization["trained_segments"] == 3].assign(accuracy=1 / 6)
    fig = plot_recurrence_ablation(generalization, ablation)
    axes = data_axes(fig)
    assert [ax.get_title() for ax in axes] == [f"{t} (trained on 3 segments)" for t in
                                               ("Memorize", "Detect & Memorize", "Reasoning")]
    with_memory, without = (line for line in axes[0].get_lines() if len(line.get_xdata()) == 5)
    assert np.allclose(with_memory.get_ydata(), [1, 1, 1, 1 / 6 + 0.3, 1 / 6 + 0.3])
    assert np.allclose(without.get_ydata(), 1 / 6)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["memory carried", "no recurrence"]


def test_memory_size_sweep_one_line_per_task_and_length():
    table = pd.DataFrame({"task": "memorize", "num_mem_tokens": [1, 2, 5, 10, 20], "tokens": 128_000,
                          "accuracy": [0.2, 0.5, 0.9, 1.0, 1.0], "n_samples": 64})
    ax = data_axes(plot_memory_size_sweep(table))[0]
    line = next(line for line in ax.get_lines() if len(line.get_xdata()) == 5)
    assert np.allclose(line.get_xdata(), [1, 2, 5, 10, 20]) and np.allclose(line.get_ydata(), table["accuracy"])
    assert ax.get_xscale() == "log" and [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "5", "10", "20"]


def test_accuracy_by_fact_position_one_line_per_quarter_and_a_panel_per_moving_task():
    rows = []
    for tokens, n_seg in ((1_000, 16), (8_000, 128)):
        for last in range(n_seg):
            rows.append({"task": "detect_memorize", "tokens": tokens, "n_segments": n_seg, "last_fact_segment": last,
                         "correct": last < n_seg // 4 or tokens == 1_000})  # only early facts survive the long input
    rows += [{"task": "memorize", "tokens": 1_000, "n_segments": 16, "last_fact_segment": 0, "correct": True}]
    fig = plot_accuracy_by_fact_position(pd.DataFrame(rows))
    (ax,) = data_axes(fig)  # memorize's facts never move: no panel
    lines = [line for line in ax.get_lines() if line.get_marker() == "o"]  # not the chance line
    assert [tuple(line.get_ydata()) for line in lines] == [(1, 1), (1, 0), (1, 0), (1, 0)]  # quarters in order
    assert [t.get_text() for t in fig.legends[0].get_texts()][:4] == [
        "fact in the first quarter", "fact in the second quarter", "fact in the third quarter", "fact in the last quarter"]
    with pytest.raises(ValueError, match="every fact sits in the first segment"):
        plot_accuracy_by_fact_position(pd.DataFrame(rows[-1:]))


def test_accuracy_by_fact_position_a_panel_per_training_length():
    rows = [{"task": "detect_memorize", "tokens": 16_000, "n_segments": 250, "last_fact_segment": last,
             "correct": trained == 32 or last > 125, "trained_segments": trained}
            for trained in (7, 32) for last in range(0, 250, 10)]
    rows += [{"task": "reasoning", "tokens": 16_000, "n_segments": 250, "last_fact_segment": 3, "correct": False,
              "trained_segments": 7}]
    axes = data_axes(plot_accuracy_by_fact_position(pd.DataFrame(rows)))
    assert [ax.get_title().split("\n")[0] for ax in axes] == [
        "Detect & Memorize, trained on 7 segments", "Detect & Memorize, trained on 32 segments", "Reasoning"]
    early = [[line.get_ydata()[0] for line in ax.get_lines() if line.get_marker() == "o"][0] for ax in axes[:2]]
    assert early == [0, 1]  # the 7-segment model lost the facts of the first quarter, the 32-segment one kept them
    held = [{**row, "retention_loss": 100.0} for row in rows if row.get("trained_segments") == 32]
    axes = data_axes(plot_accuracy_by_fact_position(pd.DataFrame(rows + held)))
    assert [ax.get_title().split("\n")[0] for ax in axes][1:3] == [
        "Detect & Memorize, trained on 32 segments",
        "Detect & Memorize, trained on 32 segments + retention loss 100"]


def test_accuracy_by_training_length_a_curve_per_model_of_tasks_with_several():
    rows = [{"task": "detect_memorize", "tokens": tokens, "n_segments": tokens // 64, "accuracy": acc,
             "n_samples": 64, "trained_segments": trained}
            for trained, points in ((7, {16_000: 0.8, 32_000: 0.6}), (32, {16_000: 1.0, 32_000: 0.98}),
                                    (64, {2_048_000: 0.875}))
            for tokens, acc in points.items()]
    rows.append({"task": "memorize", "tokens": 16_000, "n_segments": 250, "accuracy": 1.0, "n_samples": 64,
                 "trained_segments": 7})  # one model only: no panel
    (ax,) = data_axes(plot_accuracy_by_training_length(pd.DataFrame(rows)))
    curves = [line for line in ax.get_lines() if line.get_marker() == "o"]
    assert [tuple(line.get_ydata()) for line in curves] == [(0.8, 0.6), (1.0, 0.98), (0.875,)]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[:3] == ["trained on 7 segments (64 samples a point)", "trained on 32 segments (64 samples a point)",
                          "trained on 64 segments (64 samples a point)"]
    trained_at = sorted(line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == "--")
    assert trained_at == [7 * 64, 32 * 64, 64 * 64]  # where each model's training ended, in tokens
    with pytest.raises(ValueError, match="models of one training length"):
        plot_accuracy_by_training_length(pd.DataFrame(rows[-1:]))


def test_training_curves():
    fig = plot_training_curves(helpers.metrics_table())
    loss, acc = data_axes(fig)
    assert loss.get_yscale() == "log"
    assert acc.get_ylabel() == "validation accuracy"
    stage_lines = [line for line in loss.get_lines() if line.get_linestyle() == ":"]
    assert [line.get_xdata()[0] for line in stage_lines] == [1, 11, 21]


def test_measured_memory_marks_failures_and_skips_skipped():
    fig = plot_measured_memory(helpers.memory_table())
    axes = data_axes(fig)
    assert len(axes) == 4  # memory and throughput, forward and training step
    memory_fwd = axes[0]
    assert memory_fwd.get_yscale() == "log" and "MiB" in memory_fwd.get_ylabel()
    series = {tuple(line.get_xdata()) for line in memory_fwd.get_lines() if line.get_marker() == "o"}
    assert (1000, 2000, 4000, 8000) in series and (1000, 2000) in series  # full attention stops before its oom
    crosses = [line for line in memory_fwd.get_lines() if line.get_marker() == "X"]
    assert [line.get_xdata()[0] for line in crosses] == [4000]
    assert "oom" in [t.get_text() for t in memory_fwd.texts]
    assert "throughput" in axes[2].get_ylabel()  # row-major: forward and train memory, then throughput


def test_read_write_profile_heatmaps():
    trace = helpers.FakeTrace()
    fig = plot_read_write_profile(trace.summaries)
    axes = data_axes(fig)
    assert len(axes) == 3 and axes[0].get_title(loc="left").startswith("read")
    write = axes[1].get_images()[0].get_array()
    assert write.shape == (2, 4)  # layers x segments
    assert np.allclose(write[1], [0.55, 0.55, 0.55, 0.2])  # layer 1 writes where one of the two samples has a fact
    one = data_axes(plot_read_write_profile(trace.summaries, sample=0))[1].get_images()[0].get_array()
    assert np.allclose(one[1], [0.9, 0.2, 0.9, 0.2])  # sample 0: facts in segments 0 and 2
    triangles = [line.get_xdata()[0] for line in axes[0].get_lines() if line.get_marker() == "v"]
    assert triangles == [0, 1, 2]


def test_write_precision_fact_vs_control():
    fig = plot_write_precision(helpers.FakeTrace().summaries)
    ax, by_layer = data_axes(fig)
    assert "precision" in ax.get_ylabel()
    heights = [p.get_height() for p in by_layer.patches]
    assert len(heights) == 4 and heights[3] > heights[1]  # layer 1: fact segments well above the control


def test_memory_trajectory_projection():
    trace = helpers.FakeTrace()
    projection = memory_projection(trace.memory_states(), trace.summaries)
    assert list(projection.columns) == ["segment", "sample", "pc1", "pc2", "has_fact"]
    assert len(projection) == 8 and sum(projection.attrs["explained"]) <= 1 + 1e-9
    assert projection.loc[(projection["segment"] == 2) & (projection["sample"] == 0), "has_fact"].item()
    fig = plot_memory_trajectory(projection)
    ax = data_axes(fig)[0]
    assert "principal component 1" in ax.get_xlabel() and "% of variance" in ax.get_xlabel()


def test_probe_accuracy_by_distance():
    fig = plot_probe_accuracy(helpers.probe_table())
    ax = data_axes(fig)[0]
    line = ax.get_lines()[0]
    assert list(line.get_xdata()) == [-1, 0, 1, 2]
    assert np.allclose(line.get_ydata(), [0.2, 0.9, 0.8, 0.7])
    assert "distance" in ax.get_xlabel()


def test_probe_accuracy_draws_a_panel_per_task_and_per_fact_whose_words_are_probed():
    detect = helpers.probe_table().assign(task="detect_memorize")  # written before targets: the answer's rows
    reasoning = pd.concat([helpers.probe_table().assign(task="reasoning", target=target, accuracy=value)
                           for target, value in (("answer", 0.3), ("fact 1 subject", 0.9), ("fact 1 direction", 0.5),
                                                 ("fact 2 subject", 0.8), ("fact 2 direction", 0.4))])
    panels = data_axes(plot_probe_accuracy(pd.concat([reasoning, detect], ignore_index=True)))
    assert [ax.get_title() for ax in panels] == ["Detect & Memorize", "Reasoning: fact 1", "Reasoning: fact 2"]
    drawn = [{c.get_label(): float(np.mean(c.lines[0].get_ydata())) for c in ax.containers} for ax in panels]
    assert drawn == [{"the answer": pytest.approx(0.65)}, {"subject place": 0.9, "direction word": 0.5},
                     {"the answer": 0.3, "subject place": 0.8, "direction word": 0.4}]
    assert "segment with fact 2" in panels[2].get_xlabel()


@pytest.mark.parametrize("fn, table, missing", [
    (plot_flops, helpers.flops_table().drop(columns="relative_flops"), "relative_flops"),
    (plot_generalization, helpers.generalization_table().drop(columns="eval_segments"), "eval_segments"),
    (plot_long_context, helpers.long_eval_table().drop(columns="peak_mib"), "peak_mib"),
])
def test_missing_columns_are_named(fn, table, missing):
    with pytest.raises(TableError, match=missing):
        fn(table)


def test_empty_table_is_refused():
    with pytest.raises(TableError, match="no rows"):
        plot_generalization(helpers.generalization_table().iloc[:0])


def test_save_writes_png_and_svg_without_timestamps(tmp_path):
    fig = plot_probe_accuracy(helpers.probe_table())
    png, svg = save_figure(fig, tmp_path / "probe")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<dc:date>" not in svg.read_text()
    first = svg.read_bytes()
    save_figure(fig, tmp_path / "probe")
    assert svg.read_bytes() == first  # regenerating an unchanged figure leaves the file unchanged
