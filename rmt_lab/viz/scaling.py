"""Cost and reach versus input length: the report's Figures 1 and 3, and measured memory/throughput.

- `plot_long_context` (Figure 1): accuracy of the three tasks up to ~2M tokens, with the peak memory
  of each evaluation below it (flat for the RMT: memory does not grow with the input).
- `plot_flops` (Figure 3): forward FLOPs relative to one 512-token pass, full attention against the
  RMT on the same OPT model, two panels (up to 32,000 tokens, and 32,000 to 2,048,000).
- `plot_accuracy_by_fact_position`: Figure 1's long-input accuracy split by where the fact sits in the
  input, which tells forgetting (early facts lost) from failing to write (late facts never stored).
- `plot_accuracy_by_training_length`: Figure 1's long-input accuracy for each model of a task, one curve per
  training length (a curriculum carried on to longer stages), to show the horizon each stage buys.
- `plot_measured_memory`: measured peak memory and throughput versus length, RMT against full
  attention on the same backbone, forward and training step (where full attention runs out).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from rmt_lab.stats import wilson_interval
from rmt_lab.viz.style import CHANCE_STYLE, colors, log_tokens_axis, new_figure, ordered_colors, plain_log_axis, styled
from rmt_lab.viz.tables import MODEL_COLUMNS, N_CLASSES, ordered_tasks, require_columns, task_title

# The models the report draws in Figure 3.
REPORT_OPT_MODELS = ("opt-125m", "opt-1.3b", "opt-6.7b", "opt-30b", "opt-175b")
FLOPS_SPLIT_TOKENS = 32_000  # the report's panel boundary


def _model_size(name: str) -> float:
    """opt-1.3b -> 1.3e9, for ordering models by size."""
    tail = name.rsplit("-", 1)[-1].lower()
    scale = {"m": 1e6, "b": 1e9}.get(tail[-1:], 1.0)
    try:
        return float(tail[:-1]) * scale
    except ValueError:
        return float("inf")


def _model_label(name: str) -> str:
    return name.upper()


@styled
def plot_flops(flops: pd.DataFrame, models: tuple[str, ...] | None = REPORT_OPT_MODELS,
               split_tokens: int = FLOPS_SPLIT_TOKENS) -> Figure:
    """Report Figure 3 from `bench/flops.parquet`: relative forward FLOPs versus input length.

    One colour per OPT model, solid lines for full attention over the whole input, dashed for the RMT
    (segments of `segment_len` tokens plus memory, on the same model). Hollow markers: full attention
    past the model's trained positions (counted as if the position table were extended).
    `models=None` draws every model in the table.
    """
    require_columns(flops, ["model", "method", "tokens", "relative_flops"], "flops table (rmt-lab bench flops)")
    frame = flops
    if "mode" in frame and frame["mode"].nunique() > 1:
        frame = frame[frame["mode"] == "forward"]
    names = sorted(frame["model"].unique(), key=_model_size)
    if models is not None:
        names = [m for m in names if m in set(models)] or names
    frame = frame[frame["model"].isin(names)]
    palette = dict(zip(names, colors(len(names))))
    fig, axes = new_figure(1, 2, figsize=(11, 4.4))
    left, right = axes[0]
    for ax, part in ((left, frame["tokens"] <= split_tokens), (right, frame["tokens"] >= split_tokens)):
        for model in names:
            for method, style in (("full", dict(linestyle="-", marker="o")), ("rmt", dict(linestyle="--", marker="s"))):
                d = frame[part & (frame["model"] == model) & (frame["method"] == method)].sort_values("tokens")
                if d.empty:
                    continue
                ax.plot(d["tokens"], d["relative_flops"], color=palette[model], markersize=4, linewidth=1.6, **style)
                if "extrapolated" in d and d["extrapolated"].any():
                    e = d[d["extrapolated"]]
                    ax.plot(e["tokens"], e["relative_flops"], linestyle="none", marker=style["marker"],
                            markersize=4, markerfacecolor="white", markeredgecolor=palette[model])
        ax.set_yscale("log")
        log_tokens_axis(ax)
        ax.set_xlabel("input length (tokens, log scale)")
    left.set_ylabel("forward FLOPs relative to\none 512-token pass (log scale)")
    left.set_title(f"up to {split_tokens:,} tokens")
    right.set_title(f"{split_tokens:,} to {int(frame['tokens'].max()):,} tokens")
    handles = [Line2D([], [], color=palette[m], linewidth=2, label=_model_label(m)) for m in names]
    seg = frame.loc[frame["method"] == "rmt", "segment_len"].iloc[0] if "segment_len" in frame else None
    handles += [
        Line2D([], [], color="0.2", linestyle="-", marker="o", markersize=4, label="full attention"),
        Line2D([], [], color="0.2", linestyle="--", marker="s", markersize=4,
               label=f"RMT (segment {seg})" if seg is not None else "RMT"),
    ]
    if "extrapolated" in frame and frame["extrapolated"].any():
        handles.append(Line2D([], [], color="0.2", linestyle="none", marker="o", markersize=4,
                              markerfacecolor="white", label="beyond trained positions"))
    right.legend(handles=handles, loc="upper left", fontsize="small", frameon=True)
    rmt_end = frame[(frame["method"] == "rmt") & (frame["tokens"] == frame["tokens"].max())]
    if len(rmt_end) > 1 and rmt_end["relative_flops"].max() / rmt_end["relative_flops"].min() < 1.5:
        right.text(0.98, 0.04, "dashed: the RMT lines of all model sizes overlap\n(linear in length, relative to each model)",
                   transform=right.transAxes, ha="right", va="bottom", fontsize="small", color="0.3")
    fig.suptitle("Forward FLOPs versus input length: full attention against the RMT on the same OPT model")
    return fig


def _memory_source(rows: pd.DataFrame) -> str:
    """What a long evaluation's peak memory measured (e.g. "peak RSS (fresh process), cpu"); "" if unrecorded."""
    parts = [" + ".join(sorted(rows[column].astype(str).unique())) for column in ("memory_source", "device")
             if column in rows]
    return ", ".join(part for part in parts if part)


def _models(rows: pd.DataFrame) -> pd.DataFrame:
    """Each row's model: its training length (NaN where unrecorded) and the weight of the loss that held its
    memory still over noise (0 where unrecorded: tables from before the loss existed)."""
    return pd.DataFrame({"trained_segments": rows.get("trained_segments", pd.Series(np.nan, rows.index)),
                         "retention_loss": rows.get("retention_loss", pd.Series(0.0, rows.index)).fillna(0.0)})


def model_label(trained: float | None, retention: float) -> str:
    """'trained on 64 segments', with ' + retention loss 100' for a model trained to hold memory still."""
    label = "" if trained is None or pd.isna(trained) else f"trained on {int(trained)} segments"
    held = f"retention loss {retention:g}" if retention else ""
    return " + ".join(part for part in (label, held) if part)


def _long_context_curves(long_eval: pd.DataFrame) -> list[tuple[str, float | None, float, pd.DataFrame]]:
    """(task, trained segments or None, retention loss, rows) per curve of Figure 1: one per task and model,
    so a model carried on to longer stages, or trained on to hold its memory still, is drawn beside the one
    its curriculum ended with."""
    curves = []
    for task in ordered_tasks(long_eval["task"]):
        rows = long_eval[long_eval["task"] == task]
        for (trained, retention), d in rows.assign(**_models(rows)).groupby(list(MODEL_COLUMNS), dropna=False):
            curves.append((task, None if pd.isna(trained) else float(trained), float(retention),
                           d.sort_values("tokens")))
    return curves


def _interval(ax, d: pd.DataFrame, color, alpha: float) -> None:
    """95% Wilson intervals of a curve's points (`tokens`, `accuracy`, `n_samples`, sorted by tokens): a band
    over each run of lengths in the curve's usual steps, a bar at a length standing alone past a step more
    than twice the usual ratio, so that no band is drawn across lengths that were never measured (doubling to
    2,048,000 tokens, then 10,240,000)."""
    lo, hi = wilson_interval(d["accuracy"], d["n_samples"])
    tokens = d["tokens"].to_numpy(dtype=float)
    ratios = tokens[1:] / tokens[:-1]
    gaps = ratios > 2 * np.median(ratios) if len(ratios) else ratios.astype(bool)
    run = np.concatenate([[0], np.cumsum(gaps)])
    for r in np.unique(run):
        at = run == r
        if at.sum() > 1:
            ax.fill_between(tokens[at], lo[at], hi[at], color=color, alpha=alpha, linewidth=0)
        else:
            ax.vlines(tokens[at], lo[at], hi[at], color=color, alpha=min(1.0, 3 * alpha), linewidth=3)


@styled
def plot_long_context(long_eval: pd.DataFrame) -> Figure:
    """Report Figure 1 from the runs' long evaluations: accuracy versus input length for each task
    (95% Wilson intervals from the samples per length), and below it the peak memory of each length.

    A task evaluated with models trained on different lengths (`trained_segments`, e.g. a curriculum
    carried on to longer stages) gets a curve per model, the longer-trained ones dash-dotted with open
    markers; a dashed vertical line marks each training length. A model's lengths measured on different
    devices get a memory line per device, each named by what it measured.
    """
    require_columns(long_eval, ["task", "tokens", "accuracy", "n_samples", "peak_mib"],
                    "long evaluation table (rmt-lab eval long)")
    tasks = ordered_tasks(long_eval["task"])
    palette = dict(zip(tasks, colors(len(tasks))))
    markers = dict(zip(tasks, "osD^v<>"))
    fig, axes = new_figure(2, 1, figsize=(9.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [2.2, 1]})
    acc_ax, mem_ax = axes[:, 0]
    curves = _long_context_curves(long_eval)
    several = {task for task in tasks if sum(c[0] == task for c in curves) > 1}
    sources = {}  # per (curve label, memory source): that source, its longest length's row, the task
    for task, trained, retention, d in curves:
        first = not retention and (
            trained is None or trained == min(c[1] for c in curves if c[0] == task and c[1] is not None))
        label = task_title(task) + (f", {model_label(trained, retention)}" if task in several else "")
        # a model held still over noise: a thin cross, seen inside the open marker of the model it came from
        style = dict(marker="x" if retention else markers[task], color=palette[task],
                     linestyle="-" if first else ":" if retention else "-.",
                     markerfacecolor=None if first else "white", label=label)
        if retention:
            style.update(markeredgewidth=2, markersize=10)
        _interval(acc_ax, d, palette[task], alpha=0.15 if first else 0.08)
        acc_ax.plot(d["tokens"], d["accuracy"], **style)
        # A model's lengths measured on different devices (CUDA allocations, a process's RSS) are not one
        # quantity: a memory line per source, never one line joining them.
        columns = [c for c in ("memory_source", "device") if c in d]
        for _, part in d.groupby(columns, sort=False, dropna=False) if columns else [(None, d)]:
            source = _memory_source(part)
            sources[label, source] = (source, part.iloc[-1], task)
            mem_ax.plot(part["tokens"], part["peak_mib"], **style)
    trained, per_segment = [], None
    if {"trained_segments", "n_segments"} <= set(long_eval.columns):
        per_segment = (long_eval["tokens"] / long_eval["n_segments"]).median()
        trained = sorted(long_eval["trained_segments"].dropna().unique())
    for x in trained:
        for ax in (acc_ax, mem_ax):
            ax.axvline(x * per_segment, color="0.3", linestyle="--", linewidth=1)
    acc_ax.axhline(1 / N_CLASSES, **CHANCE_STYLE, label=f"chance (1/{N_CLASSES})")
    acc_ax.set_ylim(0, 1.04)
    acc_ax.set_ylabel("accuracy")
    # below both panels, where long model names take the figure's width and leave the axes theirs
    fig.legend(*acc_ax.get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize="small")
    acc_ax.set_title("Accuracy versus input length: each model evaluated far past its training length",
                     fontsize="medium")
    mem_ax.set_ylabel("peak memory (MiB)")
    measures = {source for source, _, _ in sources.values()}
    if len(measures) == 1:
        if measures != {""}:
            mem_ax.text(0.01, 0.06, f"measured: {measures.pop()}", transform=mem_ax.transAxes, fontsize="small",
                        color="0.35")
    else:  # curves measured on different devices: CUDA allocations and a process's RSS are not one quantity
        for source in dict.fromkeys(source for source, _, _ in sources.values()):  # each named once
            sharing = [v for v in sources.values() if v[0] == source]
            last = max((row for _, row, _ in sharing), key=lambda row: row["tokens"])
            shared_by = {task for _, _, task in sharing}
            color = palette[shared_by.pop()] if len(shared_by) == 1 else "0.35"
            # below its line's last point: the memory lines of other sources lie above or far below it
            mem_ax.annotate(source or "source not recorded", (last["tokens"], last["peak_mib"]),
                            xytext=(0, -6), textcoords="offset points", ha="right", va="top", fontsize="x-small",
                            color=color)
    mem_ax.set_ylim(0, long_eval["peak_mib"].max() * 1.25)
    log_tokens_axis(mem_ax)
    mem_ax.set_xlabel("input length (tokens, log scale)")
    if trained:
        # Named on an axis of their own above the panel, where no curve or interval runs under the text; made
        # after the log scale, which a secondary axis does not follow once made.
        top = acc_ax.secondary_xaxis("top")
        # short labels: training lengths may lie a doubling apart
        top.set_xticks([x * per_segment for x in trained], [f"{int(x)}" for x in trained])
        top.tick_params(which="both", labelsize="x-small", labelcolor="0.3", length=0)
        top.set_xlabel("trained on (segments; dashed lines)", fontsize="x-small", color="0.3")
    return fig


@styled
def plot_accuracy_by_training_length(long_eval: pd.DataFrame) -> Figure:
    """Long-input accuracy versus input length for each model of a task, one curve per training length
    (`trained_segments`: the curriculum's last stage, or a stage it was carried on to), 95% Wilson intervals,
    a panel per task with more than one model and a dashed line where each model's training ended.

    It shows how far past its training length a model holds a fact: the horizon each longer stage buys."""
    require_columns(long_eval, ["task", "tokens", "n_segments", "accuracy", "n_samples", "trained_segments"],
                    "long evaluation tables of models trained on different lengths (rmt-lab eval long)")
    tasks = [t for t in ordered_tasks(long_eval["task"])
             if long_eval.loc[long_eval["task"] == t, "trained_segments"].nunique() > 1]
    if not tasks:
        raise ValueError("every task has models of one training length: nothing to compare")
    fig, axes = new_figure(1, len(tasks), figsize=(7.5 * len(tasks), 4.6), sharey=True)
    # one colour per training length across the panels, so that panels compare at a glance
    every_length = sorted(long_eval.loc[long_eval["task"].isin(tasks), "trained_segments"].unique())
    color_of = dict(zip(every_length, ordered_colors(len(every_length))))
    for ax, task in zip(axes[0], tasks):
        rows = long_eval[long_eval["task"] == task]
        per_segment = (rows["tokens"] / rows["n_segments"]).median()
        for trained in sorted(rows["trained_segments"].unique()):
            color = color_of[trained]
            d = rows[rows["trained_segments"] == trained].sort_values("tokens")
            _interval(ax, d, color, alpha=0.15)
            least, most = int(d["n_samples"].min()), int(d["n_samples"].max())
            samples = f"{least}" if least == most else f"{least}-{most}"
            ax.plot(d["tokens"], d["accuracy"], marker="o", color=color,
                    label=f"trained on {int(trained)} segments ({samples} samples a point)")
            ax.axvline(trained * per_segment, color=color, linestyle="--", linewidth=1.2)
        ax.axhline(1 / N_CLASSES, **CHANCE_STYLE, label=f"chance (1/{N_CLASSES})")
        ax.set_title(f"{task_title(task)}: dashed lines mark each model's training length", fontsize="medium")
        log_tokens_axis(ax)
        ax.set_xlabel("input length (tokens, log scale)")
        ax.set_ylim(0, 1.04)
        ax.legend(loc="lower left", fontsize="small")
    axes[0, 0].set_ylabel("accuracy")
    fig.suptitle("How far past its training length each model holds the fact", fontsize="medium")
    return fig


def _memory_series(frame: pd.DataFrame) -> pd.Series:
    """A readable name for each row's method: 'RMT', 'RMT, BPTT 2 segments', 'full attention (eager)'."""
    def name(row) -> str:
        if row["method"] == "rmt":
            depth = row.get("bptt_depth", -1)
            if row.get("mode") == "train" and depth is not None and depth > 0:
                return f"RMT, BPTT {int(depth)} segments"
            return "RMT"
        attn = row.get("attn")
        return f"full attention ({attn})" if isinstance(attn, str) and attn else "full attention"

    return frame.apply(name, axis=1)


@styled
def plot_measured_memory(memory: pd.DataFrame) -> Figure:
    """Measured peak memory (top) and throughput (bottom) versus input length, from `bench/memory.parquet`:
    the RMT against full attention on the same backbone, one column per mode (forward, training step).

    Each point is one fresh process. Where full attention ran out of memory or time, a cross marks the
    length it failed at, labelled with the reason; the longer lengths were not attempted.
    """
    require_columns(memory, ["method", "tokens", "status", "peak_mib"], "memory table (rmt-lab bench memory)")
    frame = memory.copy()
    if "mode" not in frame:
        frame["mode"] = "forward"
    frame["series"] = _memory_series(frame)
    modes = [m for m in ("forward", "train") if m in set(frame["mode"])] or sorted(frame["mode"].unique())
    series = sorted(frame["series"].unique(), key=lambda s: (not s.startswith("RMT"), s))
    palette = dict(zip(series, colors(len(series))))
    has_speed = "tokens_per_s" in frame and frame["tokens_per_s"].notna().any()
    fig, axes = new_figure(2 if has_speed else 1, len(modes), figsize=(5.5 * len(modes), 7.5 if has_speed else 4.2),
                           sharex="col")
    metric = frame["memory_metric"].dropna().iloc[0] if "memory_metric" in frame and frame["memory_metric"].notna().any() else ""
    unit = {"peak_rss": "process peak RSS", "cuda_max_allocated": "CUDA max allocated"}.get(metric, metric.replace("_", " "))
    for col, mode in enumerate(modes):
        ax = axes[0, col]
        marked = 0  # failure labels on this axis: alternately below and above their cross, so neighbours don't collide
        for name in series:
            d = frame[(frame["mode"] == mode) & (frame["series"] == name)].sort_values("tokens")
            ok = d[d["status"] == "ok"]
            if ok.empty and d.empty:
                continue
            ax.plot(ok["tokens"], ok["peak_mib"], marker="o", markersize=4, color=palette[name], label=name)
            if has_speed:
                axes[1, col].plot(ok["tokens"], ok["tokens_per_s"], marker="o", markersize=4, color=palette[name])
            failed = d[~d["status"].isin(["ok", "skipped"])]
            for _, row in failed.iterrows():  # the failure's own peak says little (the allocation failed): mark the length
                ax.plot(row["tokens"], 0.93, marker="X", markersize=9, color=palette[name], linestyle="none",
                        transform=ax.get_xaxis_transform(), clip_on=False)
                ax.annotate(f"{row['status']}", (row["tokens"], 0.93), xycoords=ax.get_xaxis_transform(),
                            xytext=(0, -14 if marked % 2 == 0 else 8), textcoords="offset points", ha="center",
                            fontsize="small", color=palette[name])
                marked += 1
        plain_log_axis(ax)
        log_tokens_axis(ax)
        title = {"forward": "forward pass", "train": "training step (forward + backward)"}.get(mode, mode)
        ax.set_title(title)
        ax.set_ylabel("peak memory (MiB, log scale)")
        bottom = axes[-1, col]
        if has_speed:
            plain_log_axis(axes[1, col])
            axes[1, col].set_ylabel("throughput (tokens/s, log scale)")
        log_tokens_axis(bottom)
        bottom.set_xlabel("input length (tokens, log scale)")
    handles = [Line2D([], [], color=palette[n], marker="o", markersize=4, label=n) for n in series]
    handles.append(Line2D([], [], color="0.3", marker="X", markersize=8, linestyle="none",
                          label="ran out of memory/time here (longer lengths not run)"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 3), fontsize="small")
    where = [str(memory[c].dropna().iloc[0]) for c in ("backbone", "device") if c in memory and memory[c].notna().any()]
    note = f"; memory: {unit}" if unit else ""
    fig.suptitle("Measured memory and throughput versus length, RMT against full attention"
                 + (f" ({', '.join(where)}{note})" if where else ""))
    return fig


@styled
def plot_memory_size_sweep(sweep: pd.DataFrame) -> Figure:
    """Accuracy at one long input length versus the number of memory tokens the model was trained with
    (one line per task and length, 95% Wilson intervals): how much memory the task needs."""
    require_columns(sweep, ["task", "num_mem_tokens", "tokens", "accuracy", "n_samples"],
                    "memory-size sweep table (long evaluations of models with other memory sizes)")
    fig, axes = new_figure(1, 1, figsize=(6.5, 4.0))
    ax = axes[0, 0]
    groups = list(sweep.groupby(["task", "tokens"]))
    for color, ((task, tokens), d) in zip(colors(len(groups)), groups):
        d = d.sort_values("num_mem_tokens")
        lo, hi = wilson_interval(d["accuracy"], d["n_samples"])
        ax.errorbar(d["num_mem_tokens"], d["accuracy"], yerr=[d["accuracy"] - lo, hi - d["accuracy"]], marker="o",
                    color=color, capsize=3, label=f"{task_title(task)}, {int(tokens):,} tokens")
    ax.axhline(1 / N_CLASSES, **CHANCE_STYLE, label=f"chance (1/{N_CLASSES})")
    ax.set_xscale("log", base=2)
    ticks = sorted(sweep["num_mem_tokens"].unique())
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("memory tokens")
    ax.set_ylabel(f"accuracy (n = {int(sweep['n_samples'].min())}+ per point)")
    ax.set_ylim(0, 1.04)
    ax.legend(fontsize="small", loc="lower right")
    fig.suptitle("How many memory tokens does the task need? (one long input length)")
    return fig



FACT_QUARTERS = ("first quarter", "second quarter", "third quarter", "last quarter")


@styled
def plot_accuracy_by_fact_position(samples: pd.DataFrame) -> Figure:
    """Long-input accuracy versus input length, one line per quarter of the input in which the sample's
    last fact sits (95% Wilson intervals), a panel per task whose facts move (`with_fact_positions` rows),
    and per model (training length `trained_segments`, `retention_loss`) where a task has several.

    A model that forgets loses the early facts first; one whose memory drifts out of the states it was
    trained from over long noise fails on the late facts, however close to the question."""
    require_columns(samples, ["task", "tokens", "n_segments", "correct", "last_fact_segment"],
                    "per-sample long evaluation with fact positions (rmt_lab.train.evaluate.with_fact_positions)")
    moving = [t for t in ordered_tasks(samples["task"]) if samples.loc[samples["task"] == t, "last_fact_segment"].any()]
    if not moving:
        raise ValueError("every fact sits in the first segment (memorize): there is no position to split by")
    models = _models(samples)
    # a panel per task and model, as Figure 1 draws a curve per model
    panels = [(task, trained, retention) for (task, trained, retention), _ in
              samples.assign(**models)[samples["task"].isin(moving)].groupby(["task", *MODEL_COLUMNS], dropna=False)]
    panels.sort(key=lambda p: (moving.index(p[0]), pd.isna(p[1]), 0 if pd.isna(p[1]) else p[1], p[2]))
    several = {task for task in moving if sum(p[0] == task for p in panels) > 1}
    fig, axes = new_figure(1, len(panels), figsize=(5.2 * len(panels), 4.2), sharex=True, sharey=True)
    quarter = (4 * samples["last_fact_segment"] // samples["n_segments"]).clip(0, 3)
    palette = colors(4)
    for ax, (task, trained, retention) in zip(axes[0], panels):
        same_length = models["trained_segments"].isna() if pd.isna(trained) else models["trained_segments"] == trained
        chosen = (samples["task"] == task) & same_length & (models["retention_loss"] == retention)
        d = samples[chosen].assign(quarter=quarter)
        table = d.groupby(["quarter", "tokens"])["correct"].agg(["mean", "size"]).reset_index()
        for q, rows in table.groupby("quarter"):
            lo, hi = wilson_interval(rows["mean"], rows["size"])
            ax.fill_between(rows["tokens"], lo, hi, color=palette[q], alpha=0.12, linewidth=0)
            ax.plot(rows["tokens"], rows["mean"], marker="o", color=palette[q],
                    label=f"fact in the {FACT_QUARTERS[q]}")
        ax.axhline(1 / N_CLASSES, **CHANCE_STYLE, label=f"chance (1/{N_CLASSES})")
        per_point = table["size"]
        model = f", {model_label(trained, retention)}" if task in several else ""
        ax.set_title(f"{task_title(task)}{model}\n({int(per_point.min())}-{int(per_point.max())} samples a point)",
                     fontsize="medium")
        log_tokens_axis(ax)
        ax.set_xlabel("input length (tokens, log scale)")
        ax.set_ylim(0, 1.04)
    axes[0, 0].set_ylabel("accuracy")
    fig.legend(*axes[0, -1].get_legend_handles_labels(), loc="outside lower center", ncol=5, fontsize="small")
    fig.suptitle("Where the fact sits: forgetting early facts, or failing to store late ones", fontsize="medium")
    return fig
