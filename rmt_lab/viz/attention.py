"""Attention maps of memory operations: the report's Figure 6, and the views the attention explorer shows.

Everything here reads a recorded trace (`rmt_lab.trace.Trace`, or anything with the same reading
interface: `map_segments`, `segment_info(s)`, `pattern(s, layer)`, `labels(s, sample)`, `summaries`,
`index`). Maps are matrices, not tables: a view is the (queries x keys) array with its labels.

Figure 6 of the report shows, on a 4-segment reasoning sample, queries as rows and keys as columns
over `[CLS] [mem]x10 [SEP]` and the segment's tokens:
  1. "detect fact 1 / write to memory": the memory rows attend to the fact's tokens;
  2. "no fact / retain memory": memory attends to its own previous state (a diagonal in the memory block);
  3. "detect fact 2 / write to memory";
  4. "use memory / answer": the [CLS] row reads the memory.
`memory_operation_panels` finds those segments in a trace (from its fact positions) and, per panel,
the layer where the operation is strongest (from the trace's summaries), unless a layer is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure

from rmt_lab.viz.style import ATTENTION_CMAP, new_figure, styled

REGIONS = ("full", "memory rows", "memory columns", "memory block")
REGION_HELP = {
    "full": "every query (rows) against every key (columns)",
    "memory rows": "what the memory positions attend to: the write (and retain) operation",
    "memory columns": "how much every position reads from the incoming memory",
    "memory block": "memory against memory: retaining the previous state shows as a diagonal",
}
# The attention norm: probabilities in [0, 1], square-root scaled so weak but structured attention shows.
ATTENTION_NORM_GAMMA = 0.5
MEMORY_COLOR = "#d55e00"  # vermillion: memory positions' tick labels and outlines
FACT_COLOR = "#0072b2"  # blue: fact tokens' tick labels


def is_memory_label(label: str) -> bool:
    return label.startswith(("[mem ", "[read ", "[write "))


def is_special_label(label: str) -> bool:
    return label.startswith("[") and label.endswith("]")


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor: viz stays free of torch imports
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


@dataclass(frozen=True)
class AttentionView:
    """One attention map ready to draw: rows are queries, columns keys, both labelled."""

    attention: np.ndarray  # (queries, keys), probabilities
    row_labels: list[str]
    col_labels: list[str]
    title: str = ""
    segment: int | None = None
    layer: int | None = None
    head: int | str = "mean"
    fact_rows: tuple[int, ...] = ()  # indices into row_labels of fact tokens
    fact_cols: tuple[int, ...] = ()
    region: str = "full"
    note: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        shape = (len(self.row_labels), len(self.col_labels))
        if self.attention.shape != shape:
            raise ValueError(f"attention of shape {self.attention.shape} does not match {shape[0]} row labels and "
                             f"{shape[1]} column labels")


def region_indices(labels: list[str], region: str) -> tuple[list[int], list[int]]:
    """Query and key indices of a region of a segment's map (padding dropped)."""
    if region not in REGIONS:
        raise ValueError(f"unknown region {region!r}; regions: {list(REGIONS)}")
    real = [i for i, lab in enumerate(labels) if lab != "[PAD]"]
    memory = [i for i in real if is_memory_label(labels[i])]
    if region != "full" and not memory:
        raise ValueError("these labels hold no memory positions ([mem i], [read i] or [write i])")
    rows = memory if region in ("memory rows", "memory block") else real
    cols = memory if region in ("memory columns", "memory block") else real
    return rows, cols


def fact_label_positions(trace, segment: int, sample: int) -> list[int]:
    """Positions (in the segment's map) of the sample's fact tokens, from the trace's recorded facts."""
    index = getattr(trace, "index", {}) or {}
    facts = index.get("facts")
    if not facts or sample >= len(facts):
        return []
    info = trace.segment_info(segment)
    start, length = int(info["starts"][sample]), int(info["lengths"][sample])
    prefix = int(index.get("prefix_len", 0))
    return sorted(prefix + p - start for p in facts[sample] if start <= p < start + length)


def attention_view(trace, segment: int, layer: int, head: int | str = "mean", sample: int = 0,
                   region: str = "full", title: str | None = None) -> AttentionView:
    """The map of one segment, layer and head (or the mean over the kept heads) of one sample, cut to a region."""
    info = trace.segment_info(segment)
    maps = _numpy(trace.pattern(segment, layer))[sample]  # (kept heads, L, L)
    heads = list(info["heads"])
    if head == "mean":
        matrix = maps.mean(0)
    else:
        if head not in heads:
            raise KeyError(f"head {head} kept no map; kept heads: {heads}")
        matrix = maps[heads.index(head)]
    labels = list(trace.labels(segment, sample))
    rows, cols = region_indices(labels, region)
    facts = set(fact_label_positions(trace, segment, sample))
    head_text = "mean of heads" if head == "mean" else f"head {head}"
    return AttentionView(
        attention=matrix[np.ix_(rows, cols)],
        row_labels=[labels[i] for i in rows],
        col_labels=[labels[i] for i in cols],
        title=title if title is not None else f"segment {segment}, layer {layer}, {head_text}",
        segment=segment, layer=layer, head=head,
        fact_rows=tuple(k for k, i in enumerate(rows) if i in facts),
        fact_cols=tuple(k for k, i in enumerate(cols) if i in facts),
        region=region,
    )


def tick_positions(labels: list[str], keep: tuple[int, ...] = (), max_ticks: int = 48) -> list[int]:
    """Which positions get a tick label: every one when few; else special and fact tokens, then evenly spaced."""
    n = len(labels)
    if n <= max_ticks:
        return list(range(n))
    chosen = {i for i, lab in enumerate(labels) if is_special_label(lab)} | set(keep)
    room = max(max_ticks - len(chosen), 0)
    if room:
        chosen |= set(np.linspace(0, n - 1, room, dtype=int).tolist())
    return sorted(chosen)


def draw_attention(ax, view: AttentionView, max_ticks: int = 48, colorbar: bool = False):
    """Draw a view on `ax`: square-root colour scale, memory positions in vermillion, fact tokens in blue."""
    image = ax.imshow(view.attention, cmap=ATTENTION_CMAP, norm=PowerNorm(ATTENTION_NORM_GAMMA, vmin=0, vmax=1),
                      aspect="auto", interpolation="nearest")
    ax.grid(False)
    for axis, labels, facts, setter in (
        ("x", view.col_labels, view.fact_cols, ax.set_xticks),
        ("y", view.row_labels, view.fact_rows, ax.set_yticks),
    ):
        ticks = tick_positions(labels, facts, max_ticks)
        size = 7 if len(ticks) <= 24 else (5.5 if len(ticks) <= 40 else 4.5)
        setter(ticks, [labels[i] for i in ticks], fontsize=size, rotation=90 if axis == "x" else 0)
        for tick, i in zip(ax.get_xticklabels() if axis == "x" else ax.get_yticklabels(), ticks):
            if is_memory_label(labels[i]):
                tick.set_color(MEMORY_COLOR)
            elif i in facts:
                tick.set_color(FACT_COLOR)
                tick.set_fontweight("bold")
    ax.tick_params(length=2, pad=1)
    mem_rows = [i for i, lab in enumerate(view.row_labels) if is_memory_label(lab)]
    mem_cols = [i for i, lab in enumerate(view.col_labels) if is_memory_label(lab)]
    if view.region == "full" and mem_rows and mem_cols:  # outline the memory block
        from matplotlib.patches import Rectangle

        ax.add_patch(Rectangle((min(mem_cols) - 0.5, min(mem_rows) - 0.5), len(mem_cols), len(mem_rows),
                               fill=False, edgecolor=MEMORY_COLOR, linewidth=1.0, linestyle="--"))
    ax.set_xlabel("keys (attended to)")
    ax.set_ylabel("queries")
    if view.title:
        ax.set_title(view.title, fontsize="medium")
    return image


@styled
def plot_attention(view: AttentionView, max_ticks: int = 48, size: float = 6.5) -> Figure:
    """One attention map with a colour bar (the explorer's current view, and what it exports)."""
    aspect = len(view.row_labels) / max(len(view.col_labels), 1)
    fig, axes = new_figure(1, 1, figsize=(size, max(2.2, min(size * aspect, size * 1.4)) + 0.8))
    image = draw_attention(axes[0, 0], view, max_ticks)
    fig.colorbar(image, ax=axes[0, 0], label="attention (sqrt scale)", shrink=0.8)
    return fig


# ---------------------------------------------------------------- Figure 6
OPERATIONS = {  # panel -> (title, summary metric whose layer maximum picks the layer, fallback metric)
    "write 1": ("detect fact 1 / write to memory", "write_fact", "write_content"),
    "retain": ("no fact / retain memory", "retain_diag", "retain"),
    "write 2": ("detect fact 2 / write to memory", "write_fact", "write_content"),
    "read": ("use memory / answer", "read_answer", "read_content"),
}


def _fact_segments(trace, sample: int) -> list[int]:
    return [s for s in trace.map_segments if trace.segment_info(s)["has_fact"][sample]]


def operation_segments(trace, sample: int) -> dict[str, int]:
    """Segments of the four memory operations for one sample: first and second fact segments, a noise
    segment after the first fact (before the answer), and the last segment (where the answer is read)."""
    kept = trace.map_segments
    if not kept:
        raise ValueError("the trace kept no full attention maps; record with TraceConfig(segments='all') or "
                         "segments='facts,last' plus a noise segment")
    last = max(kept)
    facts = [s for s in _fact_segments(trace, sample) if s != last]
    chosen: dict[str, int] = {}
    if facts:
        chosen["write 1"] = facts[0]
    if len(facts) > 1:
        chosen["write 2"] = facts[1]
    noise = [s for s in kept if s not in facts and s != last and (not facts or s > facts[0])]
    if noise:
        chosen["retain"] = noise[0]
    chosen["read"] = last
    return chosen


def choose_sample(trace) -> int:
    """The sample that shows the most operations (two distinct fact segments and a noise segment first)."""
    batch = len(trace.segment_info(trace.map_segments[0])["has_fact"]) if trace.map_segments else 1
    scores = [len(operation_segments(trace, b)) for b in range(batch)]
    return int(np.argmax(scores))


def _strongest_layer(summaries: pd.DataFrame | None, segment: int, sample: int, metrics: tuple[str, ...],
                     layers: list[int]) -> int:
    if summaries is None or summaries.empty:
        return layers[-1]
    s = summaries[(summaries["segment"] == segment) & (summaries["sample"] == sample) & (summaries["layer"] >= 0)
                  & summaries["layer"].isin(layers)]
    for metric in metrics:
        values = s[s["metric"] == metric].groupby("layer", observed=True)["value"].mean()
        values = values[np.isfinite(values)]
        if not values.empty and values.max() > 0:
            return int(values.idxmax())
    return layers[-1]


def memory_operation_panels(trace, sample: int | None = None, layer: int | str = "auto", head: int | str = "mean",
                            region: str = "full") -> list[AttentionView]:
    """The panels of Figure 6 from a trace: one AttentionView per memory operation found, in segment order.

    layer="auto": per panel, the kept layer where that operation's summary metric is largest
    (write_fact for writes, retain_diag for retain, read_answer for the read); or a fixed layer index.
    """
    sample = choose_sample(trace) if sample is None else sample
    chosen = operation_segments(trace, sample)
    summaries = getattr(trace, "summaries", None)
    panels = []
    for op, segment in sorted(chosen.items(), key=lambda kv: (kv[1], kv[0] == "read")):
        title, *metrics = OPERATIONS[op]
        layers = list(trace.segment_info(segment)["layers"])
        lay = _strongest_layer(summaries, segment, sample, tuple(metrics), layers) if layer == "auto" else int(layer)
        head_text = "mean of heads" if head == "mean" else f"head {head}"
        view = attention_view(trace, segment, lay, head, sample, region,
                              title=f"{title}\nsegment {segment}, layer {lay}, {head_text}")
        panels.append(view)
    return panels


@styled
def plot_memory_operations(panels: list[AttentionView], max_ticks: int = 40) -> Figure:
    """Report Figure 6: attention maps of memory operations, one panel per operation (2 x 2 for four)."""
    if not panels:
        raise ValueError("no panels to draw: memory_operation_panels found no segment with full maps")
    ncols = 2 if len(panels) > 1 else 1
    nrows = -(-len(panels) // ncols)
    fig, axes = new_figure(nrows, ncols, figsize=(6.2 * ncols, 6.0 * nrows + 0.6))
    image = None
    for ax, view in zip(axes.ravel(), panels):
        image = draw_attention(ax, view, max_ticks)
    for ax in axes.ravel()[len(panels):]:
        ax.set_visible(False)
    fig.colorbar(image, ax=axes.ravel().tolist(), label="attention probability (sqrt scale)", shrink=0.6)
    fig.suptitle("Attention of memory operations (queries as rows, keys as columns; memory positions in vermillion,"
                 " fact tokens in bold blue; dashed box: the memory block)", fontsize="medium")
    return fig
