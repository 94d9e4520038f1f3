"""Beyond the report: what the memory reads, writes and keeps, segment by segment (from trace files).

Inputs are the trace's tidy tables (`rmt_lab.trace`):
  summaries: segment, sample, layer, head, slot, metric, value, has_fact
    attention metrics per (segment, sample, layer, head) with slot = -1: read_content, read_answer,
    retain, write_content, write_span, write_fact, retain_diag, write_precision;
    memory-state metrics with layer = head = -1: mem_norm, mem_delta_l2, mem_delta_cos (per slot, and
    the slot mean at slot = -1), mem_eff_rank.
  probe results (`rmt_lab.trace.probe_targets`): segment, distance, accuracy, n, chance, n_train, and
    target and task where several are probed.
Memory states (segments, batch, M, d) become a tidy 2-D projection with `memory_projection`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from rmt_lab.viz.style import CHANCE_STYLE, SEQUENTIAL, colors, empty_axes, new_figure, styled
from rmt_lab.viz.tables import ordered_tasks, require_columns, task_title

SUMMARY_COLUMNS = ("segment", "sample", "layer", "head", "metric", "value")
PROFILE_METRICS = ("read_content", "write_content", "retain")
METRIC_TITLES = {
    "read_content": "read: content tokens' attention\non the incoming memory",
    "read_answer": "read: the answer position's\nattention on memory",
    "write_content": "write: memory positions' attention\non the segment's tokens",
    "write_fact": "write: memory positions' attention\non fact tokens",
    "retain": "retain: memory positions' attention\non the incoming memory",
    "retain_diag": "retain: each slot's attention\non its own previous state",
    "write_precision": "write precision: share of the write\non the fact places",
}


def _summaries(summaries: pd.DataFrame) -> pd.DataFrame:
    require_columns(summaries, SUMMARY_COLUMNS, "trace summaries (rmt_lab.trace, summaries.parquet)")
    return summaries


def fact_segments(summaries: pd.DataFrame, sample: int | None = None) -> list[int]:
    """Segments holding a fact token (of `sample`, or of any sample)."""
    if "has_fact" not in summaries:
        return []
    s = summaries if sample is None else summaries[summaries["sample"] == sample]
    return sorted(int(v) for v in s.loc[s["has_fact"].astype(bool), "segment"].unique())


def attention_profile(summaries: pd.DataFrame, metrics=PROFILE_METRICS, sample: int | None = None) -> pd.DataFrame:
    """Tidy (metric, segment, layer, value): each attention metric averaged over heads (and samples, unless one)."""
    s = _summaries(summaries)
    s = s[(s["layer"] >= 0) & s["metric"].isin(list(metrics))]
    if sample is not None:
        s = s[s["sample"] == sample]
    out = s.groupby(["metric", "segment", "layer"], observed=True, as_index=False)["value"].mean()
    out["metric"] = out["metric"].astype(str)
    return out


@styled
def plot_read_write_profile(summaries: pd.DataFrame, metrics=PROFILE_METRICS, sample: int | None = None) -> Figure:
    """Memory read / write / retain across segments (x) and layers (y), head-mean, one heatmap per metric.

    Triangles above each panel mark the segments that hold a fact: a memory that stores facts writes
    more from those segments (and retains less of its old state there)."""
    profile = attention_profile(summaries, metrics, sample)
    present = [m for m in metrics if m in set(profile["metric"])]
    if not present:
        raise ValueError(f"the summaries hold none of the metrics {list(metrics)}")
    facts = fact_segments(summaries, sample)
    n_seg = profile["segment"].nunique()
    fig, axes = new_figure(len(present), 1, figsize=(min(max(7.0, 4 + 0.18 * n_seg), 13), 1.3 + 1.7 * len(present)),
                           sharex=True)
    for ax, metric in zip(axes[:, 0], present):
        grid = profile[profile["metric"] == metric].pivot(index="layer", columns="segment", values="value")
        segments = list(grid.columns)
        image = ax.imshow(grid.to_numpy(dtype=float), aspect="auto", cmap=SEQUENTIAL, vmin=0,
                          vmax=max(float(np.nanmax(grid.to_numpy(dtype=float))), 1e-6), interpolation="nearest",
                          extent=(min(segments) - 0.5, max(segments) + 0.5, grid.index.max() + 0.5,
                                  grid.index.min() - 0.5))
        ax.grid(False)
        ax.set_ylabel("layer")
        ax.set_yticks(list(grid.index))
        for f in facts:
            ax.plot(f, 1.02, marker="v", color="#d55e00", markersize=6, transform=ax.get_xaxis_transform(),
                    clip_on=False)
        fig.colorbar(image, ax=ax, label="attention mass", pad=0.01)
        ax.set_title(METRIC_TITLES.get(metric, metric).replace("\n", " "), fontsize="medium", loc="left", pad=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    last = axes[-1, 0]
    last.set_xlabel("segment" + ("  (triangles: segments with a fact)" if facts else ""))
    who = "all samples" if sample is None else f"sample {sample}"
    fig.suptitle(f"Memory read/write profile across segments (mean over heads, {who})")
    return fig


def per_segment(summaries: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Tidy (sample, segment, has_fact, value) of an attention metric averaged over layers and heads."""
    s = _summaries(summaries)
    s = s[(s["layer"] >= 0) & (s["metric"] == metric)]
    keys = ["sample", "segment"] + (["has_fact"] if "has_fact" in s else [])
    out = s.groupby(keys, observed=True, as_index=False)["value"].mean()
    if "has_fact" not in out:
        out["has_fact"] = False
    return out


@styled
def plot_write_precision(summaries: pd.DataFrame) -> Figure:
    """Write precision per segment: the share of the memory's write attention that falls on the places
    where facts sit (write_span / write_content), on segments with a fact against segments without one
    (the same places then hold noise: the control). Left: per segment; right: per layer."""
    table = per_segment(summaries, "write_precision")
    table = table[np.isfinite(table["value"])]
    if table.empty:
        raise ValueError("the summaries hold no finite write_precision values (record with facts=...)")
    fact_c, noise_c = colors(2)[::-1]
    fig, axes = new_figure(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [2.2, 1]})
    ax, by_layer = axes[0]
    for has_fact, color, label in ((False, noise_c, "no fact in the segment (control)"),
                                   (True, fact_c, "fact in the segment")):
        d = table[table["has_fact"] == has_fact]
        if d.empty:
            continue
        ax.scatter(d["segment"], d["value"], s=14, alpha=0.55, color=color, label=label, linewidths=0)
        mean = d.groupby("segment")["value"].mean()
        ax.plot(mean.index, mean.values, color=color, linewidth=1.2, alpha=0.9)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("segment")
    ax.set_ylabel("write precision (share of write\nattention on the fact places)")
    ax.set_ylim(0, min(1.02, max(table["value"].max() * 1.15, 0.05)))
    ax.legend(fontsize="small", loc="best")
    s = _summaries(summaries)
    s = s[(s["layer"] >= 0) & (s["metric"] == "write_precision") & np.isfinite(s["value"])]
    layers = sorted(s["layer"].unique())
    width = 0.38
    for k, (has_fact, color) in enumerate(((False, noise_c), (True, fact_c))):
        d = s[s["has_fact"] == has_fact].groupby("layer")["value"].agg(["mean", "sem"]).reindex(layers)
        by_layer.bar(np.arange(len(layers)) + (k - 0.5) * width, d["mean"], width, yerr=d["sem"].fillna(0),
                     color=color, capsize=2)
    by_layer.set_xticks(range(len(layers)), [str(v) for v in layers])
    by_layer.set_xlabel("layer")
    by_layer.set_ylabel("mean write precision")
    by_layer.set_title("per layer (mean over heads, samples)", fontsize="medium")
    fig.suptitle("Write precision: does memory write from where the facts are?")
    return fig


def memory_projection(states, summaries: pd.DataFrame | None = None) -> pd.DataFrame:
    """2-D PCA of memory states (segments, batch, M, d): tidy (segment, sample, pc1, pc2[, has_fact]).

    Each memory (all M slots, flattened) is one point; the components are fit on every segment and
    sample together. `frame.attrs["explained"]` holds the two components' explained variance ratios.
    """
    if hasattr(states, "detach"):
        states = states.detach().float().cpu().numpy()
    states = np.asarray(states, dtype=np.float64)
    if states.ndim != 4:
        raise ValueError(f"memory states must be (segments, batch, M, d), got shape {states.shape}")
    n_seg, batch = states.shape[:2]
    x = states.reshape(n_seg * batch, -1)
    x = x - x.mean(0)
    _, sv, vt = np.linalg.svd(x, full_matrices=False)
    k = min(2, vt.shape[0])
    coords = x @ vt[:k].T
    if k < 2:
        coords = np.concatenate([coords, np.zeros((len(coords), 2 - k))], 1)
    var = sv**2
    explained = (var[:2] / var.sum()).tolist() if var.sum() > 0 else [0.0, 0.0]
    seg, sample = np.divmod(np.arange(n_seg * batch), batch)
    frame = pd.DataFrame({"segment": seg, "sample": sample, "pc1": coords[:, 0], "pc2": coords[:, 1]})
    if summaries is not None and "has_fact" in summaries:
        facts = summaries.groupby(["segment", "sample"])["has_fact"].any().rename("has_fact").reset_index()
        frame = frame.merge(facts, on=["segment", "sample"], how="left")
        frame["has_fact"] = frame["has_fact"].fillna(False).astype(bool)
    frame.attrs["explained"] = explained + [0.0] * (2 - len(explained))
    return frame


@styled
def plot_memory_trajectory(projection: pd.DataFrame, max_samples: int = 8) -> Figure:
    """Memory state trajectories in 2-D (from `memory_projection`): one path per sample, points coloured
    by segment, memories written by a segment with a fact circled."""
    require_columns(projection, ["segment", "sample", "pc1", "pc2"], "memory projection (viz.memory_projection)")
    fig, axes = new_figure(1, 1, figsize=(6.8, 5.4))
    ax = axes[0, 0]
    samples = sorted(projection["sample"].unique())[:max_samples]
    n_seg = projection["segment"].max() + 1
    points = None
    for b in samples:
        d = projection[projection["sample"] == b].sort_values("segment")
        ax.plot(d["pc1"], d["pc2"], color="0.6", linewidth=0.8, zorder=1)
        points = ax.scatter(d["pc1"], d["pc2"], c=d["segment"], cmap=SEQUENTIAL, vmin=0, vmax=max(n_seg - 1, 1),
                            s=28, zorder=2, edgecolors="none")
        if "has_fact" in d:
            f = d[d["has_fact"]]
            ax.scatter(f["pc1"], f["pc2"], s=110, facecolors="none", edgecolors="#d55e00", linewidths=1.5, zorder=3)
        first = d.iloc[0]
        ax.annotate(f"{b}", (first["pc1"], first["pc2"]), xytext=(3, 3), textcoords="offset points",
                    fontsize="x-small", color="0.3")
    if points is not None:
        bar = fig.colorbar(points, ax=ax, label="segment")
        bar.locator = MaxNLocator(integer=True)
        bar.update_ticks()
    ev = projection.attrs.get("explained", [np.nan, np.nan])
    ax.set_xlabel(f"principal component 1 ({ev[0]:.0%} of variance)")
    ax.set_ylabel(f"principal component 2 ({ev[1]:.0%} of variance)")
    handles = [Line2D([], [], color="0.6", linewidth=0.8, label="one sample's memory, segment by segment")]
    if "has_fact" in projection:
        handles.append(Line2D([], [], marker="o", linestyle="none", markersize=9, markerfacecolor="none",
                              markeredgecolor="#d55e00", label="memory after a segment with a fact"))
    ax.legend(handles=handles, fontsize="small", loc="best")
    fig.suptitle("Memory state trajectory (PCA of the memory after each segment; labels: sample index)",
                 fontsize="medium")
    return fig


def _probe_panels(probe: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """(task, fact, rows) per panel of the probe figure: a panel per task, and per fact of a task whose
    facts' parts are probed ("fact <k> <part>" targets); the answer, read from the last fact on, shares the
    last fact's panel."""
    fact = probe["target"].str.extract(r"^(fact \d+) ", expand=False)
    last = fact.groupby(probe["task"]).transform(lambda f: f.dropna().max() if f.notna().any() else "")
    probe = probe.assign(fact=fact.fillna(last))
    tasks = ordered_tasks(probe["task"]) if probe["task"].ne("").all() else [""]
    return [(task, f, rows) for task in tasks for f, rows in probe[probe["task"] == task].groupby("fact", sort=True)]


@styled
def plot_probe_accuracy(probe: pd.DataFrame) -> Figure:
    """Linear-probe accuracy of decoding from the memory, versus distance (in segments) from the segment
    holding the fact; negative distances are before the fact (the probe can only guess there). A line per
    probe target (`target`: the answer, from the last fact's segment; for reasoning each stated word of each
    fact, from that fact's segment), a panel per task (`task`) and per fact whose words are probed. Error
    bars: standard error over the test samples at each distance."""
    require_columns(probe, ["distance", "accuracy", "n"], "probe results (rmt_lab.trace.probe_memory)")
    from rmt_lab.trace.probe import ANSWER

    # tables written before targets were probed hold the answer's rows only
    probe = probe.assign(**{c: probe[c].fillna(v) if c in probe else v for c, v in (("target", ANSWER), ("task", ""))})
    parts = list(dict.fromkeys(probe["target"].str.replace(r"^fact \d+ ", "", regex=True)))
    palette = dict(zip(parts, colors(len(parts))))
    several = len(parts) > 1
    panels = _probe_panels(probe)
    fig, axes = new_figure(1, len(panels), figsize=(max(7.0, 5.2 * len(panels)), 4.4), sharey=True)
    for ax, (task, fact, rows) in zip(axes[0], panels):
        for target in dict.fromkeys(rows["target"]):
            part = target.removeprefix(f"{fact} ") if fact else target
            t = rows[rows["target"] == target]
            d = t.assign(hits=t["accuracy"] * t["n"]).groupby("distance", as_index=False)[["hits", "n"]].sum()
            d["accuracy"] = d["hits"] / d["n"]
            d["se"] = np.sqrt(d["accuracy"] * (1 - d["accuracy"]) / d["n"].clip(lower=1))
            label = {ANSWER: "the answer" if several else "linear probe on the memory state",
                     "subject": "subject place", "direction": "direction word", "object": "object place"}.get(part, part)
            ax.errorbar(d["distance"], d["accuracy"], yerr=d["se"], marker="o", markersize=4, capsize=3,
                        color=palette[part], label=label)
        for chance in sorted(rows["chance"].unique()) if "chance" in rows else []:
            ax.axhline(float(chance), **CHANCE_STYLE, label=f"chance (1/{round(1 / chance)})")
        ax.axvline(0, color="#d55e00", linestyle="--", linewidth=1,
                   label=f"segment with {fact}" if fact.startswith("fact") else "segment with the (last) fact")
        ax.set_ylim(0, 1.04)
        ax.set_xlabel(f"distance from the segment with {fact} (segments)" if fact.startswith("fact")
                      else "distance from the fact segment (segments)")
        title = ": ".join(x for x in (task_title(task) if task else "", fact if fact.startswith("fact") else "") if x)
        ax.set_title(title, fontsize="medium")
        ax.legend(fontsize="x-small" if several else "small", loc="best")
    axes[0, 0].set_ylabel("probe accuracy (held-out samples)")
    trained = sorted(probe["n_train"].unique()) if "n_train" in probe else []
    fig.suptitle(("How long does each fact survive in memory?" if several else
                  "How long does the answer survive in memory?")
                 + (f" (probes fit on {' or '.join(f'{int(n):,}' for n in trained)} samples a segment)" if trained
                    else ""))
    if probe.empty:
        empty_axes(axes[0, 0], "no probe results")
    return fig
