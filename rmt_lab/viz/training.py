"""Training and generalization: the report's Figure 5 and the curriculum's learning curves.

- `plot_generalization` (Figure 5): models trained on 1..N segments (the curriculum's stages), each
  evaluated on 1..M segments, one panel per task; `plot_generalization_heatmap` is the same matrix
  as a heatmap (trained length on the rows, evaluated length on the columns).
- `plot_training_curves`: loss and validation accuracy over the curriculum, stage boundaries marked.
- `plot_recurrence_ablation`: the last stage's model with and without memory carried between segments.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from rmt_lab.stats import wilson_interval
from rmt_lab.viz.style import CHANCE_STYLE, SEQUENTIAL, colors, empty_axes, new_figure, ordered_colors, styled
from rmt_lab.viz.tables import N_CLASSES, ordered_tasks, require_columns, task_title

GENERALIZATION_COLUMNS = ("task", "trained_segments", "eval_segments", "accuracy")


def _generalization(frame: pd.DataFrame) -> pd.DataFrame:
    require_columns(frame, GENERALIZATION_COLUMNS, "generalization table (rmt-lab eval generalization)")
    if "split" in frame and frame["split"].nunique() > 1:  # the report's figure is on the test split
        frame = frame[frame["split"] == ("test" if "test" in set(frame["split"]) else frame["split"].iloc[0])]
    # one value per cell even if a table was appended twice
    return frame.groupby(["task", "trained_segments", "eval_segments"], as_index=False)["accuracy"].mean()


@styled
def plot_generalization(generalization: pd.DataFrame) -> Figure:
    """Report Figure 5 (lines): accuracy versus evaluated length, one line per trained length, one panel per task.

    A filled marker on each line marks its own training length: left of it the model interpolates,
    right of it it extrapolates to inputs longer than any it saw.
    """
    frame = _generalization(generalization)
    tasks = ordered_tasks(frame["task"])
    trained = sorted(frame["trained_segments"].unique())
    palette = dict(zip(trained, ordered_colors(len(trained))))
    fig, axes = new_figure(1, len(tasks), figsize=(4.6 * len(tasks) + 1.2, 4.2), sharey=True)
    for ax, task in zip(axes[0], tasks):
        t = frame[frame["task"] == task]
        for n in trained:
            d = t[t["trained_segments"] == n].sort_values("eval_segments")
            if d.empty:
                continue
            ax.plot(d["eval_segments"], d["accuracy"], color=palette[n], marker="o", markersize=3.5,
                    markerfacecolor="white", linewidth=1.5, label=f"{n}")
            own = d[d["eval_segments"] == n]
            ax.plot(own["eval_segments"], own["accuracy"], linestyle="none", marker="o", markersize=6, color=palette[n])
        ax.axhline(1 / N_CLASSES, **CHANCE_STYLE)
        ax.set_title(task_title(task))
        ax.set_xlabel("evaluated on (segments)")
        ax.set_xticks(sorted(t["eval_segments"].unique())[:: max(1, len(t["eval_segments"].unique()) // 8)])
        ax.set_ylim(0, 1.04)
    axes[0, 0].set_ylabel("accuracy")
    axes[0, 0].text(0.99, 1 / N_CLASSES + 0.01, "chance", transform=axes[0, 0].get_yaxis_transform(),
                    ha="right", va="bottom", fontsize="small", color="0.45")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), title="trained on\n(segments)", loc="outside right center",
               fontsize="small")
    fig.suptitle("Generalization to other input lengths: trained on N segments, evaluated on M")
    return fig


@styled
def plot_generalization_heatmap(generalization: pd.DataFrame, annotate: bool | None = None) -> Figure:
    """Report Figure 5 (heatmap): accuracy of each (trained, evaluated) length pair, one panel per task.

    Boxed cells are each model's own training length (the diagonal); values are annotated when the
    matrix is small enough to read them (`annotate=None`), or as asked.
    """
    frame = _generalization(generalization)
    tasks = ordered_tasks(frame["task"])
    fig, axes = new_figure(1, len(tasks), figsize=(4.8 * len(tasks) + 1.0, 4.2))
    image = None
    for ax, task in zip(axes[0], tasks):
        grid = frame[frame["task"] == task].pivot(index="trained_segments", columns="eval_segments", values="accuracy")
        rows, cols = list(grid.index), list(grid.columns)
        image = ax.imshow(grid.to_numpy(dtype=float), cmap=SEQUENTIAL, vmin=0, vmax=1, aspect="auto",
                          interpolation="nearest")
        show = annotate if annotate is not None else grid.size <= 160
        if show:
            for i, j in np.ndindex(grid.shape):
                v = grid.iat[i, j]
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.2f}".lstrip("0") if v < 1 else "1", ha="center", va="center", fontsize=6.5,
                            color="white" if v < 0.6 else "black")
        for i, n in enumerate(rows):
            if n in cols:
                ax.add_patch(Rectangle((cols.index(n) - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="#d55e00",
                                       linewidth=1.6))
        ax.set_xticks(range(len(cols)), [str(c) for c in cols], fontsize="small")
        ax.set_yticks(range(len(rows)), [str(r) for r in rows])
        ax.grid(False)
        ax.set_xlabel("evaluated on (segments)")
        ax.set_title(task_title(task))
    axes[0, 0].set_ylabel("trained on (segments)")
    if image is not None:
        fig.colorbar(image, ax=axes[0, :].tolist(), label="accuracy", shrink=0.9)
    fig.suptitle("Generalization matrix (boxed: evaluated at the training length)")
    return fig


@styled
def plot_training_curves(metrics: pd.DataFrame, runs: str = "run") -> Figure:
    """Training loss and validation accuracy over the curriculum, from `runs/<name>/metrics.parquet`.

    `metrics` may hold several runs, told apart by the column named by `runs` (one colour each);
    dotted vertical lines mark where a stage (a longer input) starts.
    """
    require_columns(metrics, ["kind", "n_segments", "global_step", "loss", "accuracy"],
                    "metrics table (rmt-lab train)")
    frame = metrics if runs in metrics else metrics.assign(**{runs: "run"})
    names = list(dict.fromkeys(frame[runs]))
    palette = dict(zip(names, colors(len(names))))
    fig, axes = new_figure(2, 1, figsize=(8, 5.8), sharex=True)
    loss_ax, acc_ax = axes[:, 0]
    for name in names:
        d = frame[frame[runs] == name]
        train = d[(d["kind"] == "train") & d["loss"].notna()].sort_values("global_step")
        val = d[(d["kind"] == "val") & d["accuracy"].notna()].sort_values("global_step")
        loss_ax.plot(train["global_step"], train["loss"], color=palette[name], label=name, linewidth=1.3)
        acc_ax.plot(val["global_step"], val["accuracy"], color=palette[name], marker="o", markersize=3.5, label=name)
        if len(names) == 1:  # stage boundaries of a single run; with several, they would not line up
            starts = d.groupby("n_segments")["global_step"].min().sort_index()
            for n, step in starts.items():
                for ax in (loss_ax, acc_ax):
                    ax.axvline(step, color="0.6", linestyle=":", linewidth=1)
                loss_ax.annotate(f"{n} seg", (step, 1), xycoords=("data", "axes fraction"), xytext=(2, -10),
                                 textcoords="offset points", fontsize="x-small", color="0.35")
    if frame.loc[frame["kind"] == "train", "loss"].notna().sum() == 0:
        empty_axes(loss_ax, "no training loss recorded")
    else:
        loss_ax.set_yscale("log")
    loss_ax.set_ylabel("training loss (cross-entropy, log)")
    acc_ax.axhline(1 / N_CLASSES, **CHANCE_STYLE)
    acc_ax.set_ylim(0, 1.04)
    acc_ax.set_ylabel("validation accuracy")
    acc_ax.set_xlabel("optimizer step (all stages)")
    if len(names) > 1:
        loss_ax.legend(fontsize="small")
    fig.suptitle("Curriculum training: each stage adds one segment to the input"
                 + (f" ({names[0]})" if len(names) == 1 and names[0] != "run" else ""))
    return fig


@styled
def plot_recurrence_ablation(generalization: pd.DataFrame, ablation: pd.DataFrame) -> Figure:
    """Control: the last stage's model with memory carried (its generalization row) against the same model
    with every segment fed the initial memory (`rmt-lab eval ablation`), one panel per task, 95% intervals.

    If the answer comes through memory, the ablated model drops to chance once the fact and the question
    lie in different segments (beyond 1 segment).
    """
    require_columns(ablation, ("task", "trained_segments", "eval_segments", "accuracy", "n_samples"),
                    "no-recurrence table (rmt-lab eval ablation)")
    require_columns(generalization, (*GENERALIZATION_COLUMNS, "n_samples"), "generalization table")
    tasks = ordered_tasks(ablation["task"])
    fig, axes = new_figure(1, len(tasks), figsize=(4.2 * len(tasks) + 1.2, 3.8), sharey=True)
    with_memory, without = colors(2)
    for ax, task in zip(axes[0], tasks):
        a = ablation[ablation["task"] == task].sort_values("eval_segments")
        stage = int(a["trained_segments"].max())
        g = generalization[(generalization["task"] == task) & (generalization["trained_segments"] == stage)
                           & generalization["eval_segments"].isin(a["eval_segments"])].sort_values("eval_segments")
        for d, color, label in ((g, with_memory, "memory carried"), (a, without, "no recurrence")):
            if d.empty:
                continue
            low, high = wilson_interval(d["accuracy"], d["n_samples"])
            ax.fill_between(d["eval_segments"], low, high, color=color, alpha=0.18, linewidth=0)
            ax.plot(d["eval_segments"], d["accuracy"], color=color, marker="o", markersize=4, label=label)
        ax.axhline(1 / N_CLASSES, **CHANCE_STYLE)
        ax.set_title(f"{task_title(task)} (trained on {stage} segments)")
        ax.set_xlabel("evaluated on (segments)")
        ax.set_ylim(0, 1.04)
    axes[0, 0].set_ylabel(f"accuracy (n = {int(ablation['n_samples'].min())}+ per point)")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside right center", fontsize="small")
    fig.suptitle("Control: the same model without recurrence (every segment sees the initial memory)")
    return fig

