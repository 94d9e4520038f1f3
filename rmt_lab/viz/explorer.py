"""The attention explorer: a trace's full attention maps drawn on a canvas in the browser.

    from rmt_lab.viz import AttentionExplorer
    explorer = AttentionExplorer(trace)     # in Jupyter: shows the widget
    explorer.save_html("view.html")         # one standalone page: opens offline, no kernel
    explorer.save("view.svg")               # publication figure of the current view (matplotlib, PNG or SVG)

The heatmap is drawn client-side (rmt_lab/viz/explorer.js, an anywidget ES module shipped in the package:
no CDN, works offline), so hover, zoom and pan never wait for the kernel. Hover reads out query token,
key token, weight, segment, layer and head; a click pins a query row and lists its top keys; the wheel
zooms around the cursor and a drag pans, so 512+ positions stay legible (labels never overlap; memory,
[CLS]/[SEP] and fact positions are marked by a coloured strip at any zoom). "all heads (grid)" shows
every head of the layer as small multiples.

A timeline over all segments of the trace (from its summaries, so every segment, kept map or not) shows
four lanes for the shown sample and layer, mean of heads: memory read (read_content), write
(write_content), retain, and write precision (write_span / write_content), with fact segments marked. The
wheel zooms it and a drag pans it, so a 4,096-segment trace (2,048,000 tokens) can be narrowed to single
segments; zoomed out, each pixel column draws the range and mean of the segments it covers. A click selects
a segment (`widget.picked`, which MemoryDynamics.follow links to): a segment with a kept map opens it, any
other names the `rmt-lab trace` command that keeps its map (`record_command`).

Data sent to the browser, one *map* at a time: one head of one (sample, segment, layer), or the mean of its
heads, quantized to uint8 in the square-root domain with its own scale (`quantize`): q = round(255 sqrt(a /
scale)), scale = the map's maximum. The colour scale is the same square root, so the 256 levels are exactly
the colour levels. Weights read back within scale * (2 sqrt(a / scale) + 1/510) / 510 (`quantization_bound`):
at most 0.4% of the map's maximum, and far less for the small weights that fill most of a map. A map is
positions^2 bytes: 272 KB at 522 positions (float32 would be 1.1 MB; a PNG of the view 0.3 MB but with no
values). The browser asks for the maps it must draw, {"type": "need", "sample", "segment", "layer", "maps":
["mean" | head, ...]}: the shown head or the mean, or in grid mode every head and the mean. The kernel answers
with one binary message a map (`maps`), whose header carries the block's labels, fact positions and heads, and
the browser merges the maps into *blocks*, all (heads + 1) maps of a (sample, segment, layer): 13 x 522^2 =
3.5 MB (`block`, `encode_block`: the same bytes). It keeps the last 8 blocks; the kernel keeps the float maps
of its last `KERNEL_BLOCKS` (13 MB each at 12 heads x 522 positions), so the other maps of a block are cut
from the trace once. While a view is shown, the browser fills in what the next change probably draws, one map
a request (the kernel answers messages in order, so a change the user makes waits behind one map at most):
the other maps of the shown block, then the shown map of the neighbouring segments and layers, then their
other maps. A change draws from maps already in the browser when it can; otherwise it waits for the maps it
draws: for a far jump (another sample, a distant segment) one map, 272 KB, a 13th of its block. The grid
waits for none: it paints the heads held and a placeholder for each other, filled in as its map comes. A map
the kernel cannot send (the trace lacks it, reading it failed) is answered with the reason, which the browser
draws in the map's place, a grid tile or the map, until the view is chosen again and the map asked for again. A
standalone page inlines whole blocks (base64) and answers the same `need` from them. The timeline travels
once, with the widget: per sample, uint8 levels of 1/254 (`encode_timeline`), 4 x map layers x segments bytes,
e.g. 16 KB for one layer of a 4,096-segment trace, base64 in the widget state.

`trace` is an `rmt_lab.trace.Trace` (or anything with its reading interface, see viz.attention).
"""

from __future__ import annotations

import base64
import html
import json
import shlex
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import anywidget
import numpy as np
import traitlets

from rmt_lab.viz.attention import (
    ATTENTION_NORM_GAMMA, AttentionView, _numpy, draw_attention, fact_label_positions, plot_attention,
)
from rmt_lab.viz.style import ATTENTION_CMAP, figure_style, new_figure, save_figure

ESM = Path(__file__).with_name("explorer.js")
LEVELS = 255
# Lane name in the browser -> summary metric; every one is a share of attention mass, so each lane's scale is 0..1.
TIMELINE_METRICS = {"read": "read_content", "write": "write_content", "retain": "retain",
                    "write precision": "write_precision"}
TIMELINE_LEVELS = 254  # 255 marks a segment with no value (the sample had no tokens there, or no fact places)
SEGMENT_SLOT = "{segment}"  # where the browser puts the clicked segment into the record command
# Blocks the kernel holds as floats: the shown one and the one the browser is filling in, so asking for a block's
# maps one at a time cuts it from the trace once. 12 heads x 522^2 float32 = 13 MB each.
KERNEL_BLOCKS = 3


# ------------------------------------------------------------------ encoding
def quantize(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(k, L, L) attention probabilities -> uint8 in the sqrt domain and one float32 scale per map."""
    maps = np.clip(np.asarray(maps, dtype=np.float32), 0.0, None)
    scales = maps.reshape(len(maps), -1).max(axis=1)
    scales = np.where(scales > 0, scales, 1.0).astype(np.float32)  # an all-zero map decodes to zeros with any scale
    q = np.rint(LEVELS * np.sqrt(maps / scales[:, None, None]))
    return q.astype(np.uint8), scales


def dequantize(q: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """The inverse of `quantize` (what the browser computes for the readout)."""
    v = q.astype(np.float32) / LEVELS
    return np.asarray(scales, dtype=np.float32)[:, None, None] * v * v


def quantization_bound(a: np.ndarray, scale: float) -> np.ndarray:
    """Largest |a - dequantize(quantize(a))| for weights `a` of a map with maximum `scale`: rounding moves
    sqrt(a / scale) by at most 1/510, which moves a by scale * (2 sqrt(a / scale) + 1/510) / 510."""
    step = 0.5 / LEVELS
    return scale * step * (2 * np.sqrt(np.asarray(a) / scale) + step)


def encode_block(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One layer's kept heads (heads, L, L) -> uint8 (heads + 1, L, L) and scales; index 0 is the mean of heads
    (averaged before quantizing, so it is as exact as any single head)."""
    maps = np.asarray(maps, dtype=np.float32)
    return quantize(np.concatenate([maps.mean(0, keepdims=True), maps]))


def encode_timeline(values: np.ndarray) -> np.ndarray:
    """Shares of attention mass in [0, 1] (NaN: no value) -> uint8 levels of 1/254, 255 for no value. A lane
    18 px high shows 14 px of range, so 254 levels lose nothing visible; the readout prints 3 decimals."""
    values = np.asarray(values, dtype=np.float64)
    q = np.rint(np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0) * TIMELINE_LEVELS)
    return np.where(np.isfinite(values), q, TIMELINE_LEVELS + 1).astype(np.uint8)


def record_command(trace, segment: int | str, recorded_with: str | None = None) -> str:
    """The `rmt-lab trace` command that records `trace` again with the full maps of `segment` kept as well.

    With `recorded_with` (the command that recorded the trace), that command with `segment` added to its
    --maps. Otherwise the command is rebuilt from what the trace holds (model, length, batch, what it kept);
    a trace does not hold its task or seed, nor whether its RMT was trained: those stand as TASK and SEED,
    and a trained RMT needs --checkpoint in place of --backbone/--num-mem/--segment-size."""
    config = getattr(trace, "config", None) or trace.index.get("config", {})
    kept = config.get("segments", "none")
    maps = str(segment) if kept in ("none", "") else f"{kept},{segment}"
    if recorded_with is not None:
        words = [w for word in shlex.split(recorded_with)
                 for w in (word.split("=", 1) if word.startswith("--maps=") else [word])]
        if "--maps" in words[:-1]:
            words[words.index("--maps") + 1] = maps
        else:  # the command ran with the default selection, which the trace holds as `kept`
            words += ["--maps", maps]
        if "--overwrite" not in words:
            words.append("--overwrite")  # the new trace replaces the old one in the same folder
        return shlex.join(words)
    index, model = trace.index, trace.index.get("model", {})
    words = ["rmt-lab", "trace", "--backbone", model.get("backbone", "BACKBONE"), "--num-mem",
             index.get("num_mem_tokens", model.get("num_mem_tokens", "M"))]
    if index.get("segment_size") is not None:
        words += ["--segment-size", index["segment_size"]]
    words += ["--task", "TASK", "--seed", "SEED", "--segments", getattr(trace, "n_segments", "N"),
              "--samples", getattr(trace, "batch", 1), "--maps", maps]
    for option in ("layers", "heads"):
        if config.get(option):
            words += [f"--{option}", *config[option]]
    if config.get("map_dtype", "float32") != "float32":
        words += ["--map-dtype", config["map_dtype"]]
    if config.get("keep_memory"):
        words.append("--keep-memory")
    words += ["--out", "TRACE_FOLDER"]
    return shlex.join(str(w) for w in words)


def _colormap() -> list[list[int]]:
    """The figures' attention colormap as 256 RGB triples, indexed by round(255 sqrt(a))."""
    import matplotlib

    cmap = matplotlib.colormaps.get(ATTENTION_CMAP)
    if cmap is None:  # seaborn registers mako_r on import
        import seaborn  # noqa: F401

        cmap = matplotlib.colormaps[ATTENTION_CMAP]
    rgb = cmap(np.linspace(0, 1, 256))[:, :3]
    return np.rint(rgb * 255).astype(int).tolist()


# ------------------------------------------------------------------ the widget
class _ExplorerWidget(anywidget.AnyWidget):
    _esm = ESM
    meta = traitlets.Dict().tag(sync=True)  # segments, layers, heads, samples, colormap, timeline
    sample = traitlets.Int(0).tag(sync=True)
    segment = traitlets.Int(0).tag(sync=True)
    layer = traitlets.Int(0).tag(sync=True)
    head = traitlets.Unicode("mean").tag(sync=True)  # "mean", "grid" or a head index
    window = traitlets.List([]).tag(sync=True)  # [row0, row1, col0, col1] shown, set by the browser on zoom
    picked = traitlets.Int(0).tag(sync=True)  # the segment selected on the timeline (kept map or not)


@dataclass
class _FloatBlock:
    """One (sample, segment, layer) as the trace holds it, cut to the sample's real positions."""

    segment: int
    maps: np.ndarray  # (heads, n, n) float32, read-only
    labels: list[str]  # n position labels
    facts: list[int]  # indices of fact tokens among them
    heads: list[int]  # the kept heads, in the order of `maps`
    _mean: np.ndarray | None = field(default=None, repr=False)

    def names(self) -> list[str]:
        """Every map's name in a block's order: the mean of heads, then each head."""
        return ["mean", *(str(h) for h in self.heads)]

    def map(self, name: str | int) -> np.ndarray:
        """(n, n): the mean of heads for "mean", else the named head's map."""
        if name == "mean":
            if self._mean is None:
                self._mean = self.maps.mean(0)  # as encode_block averages, so both encode the same bytes
                self._mean.setflags(write=False)
            return self._mean
        try:
            return self.maps[self.heads.index(int(name))]
        except ValueError:
            raise ValueError(f"head {name!r} has no map in segment {self.segment}; choose 'mean' or one of "
                             f"{self.heads}") from None


class AttentionExplorer:
    """Explore one trace's full attention maps in the browser (see the module docstring).

    `explorer.widget` is the anywidget; its traitlets `sample`, `segment`, `layer`, `head` ("mean", "grid" or
    a head index as text), `window` and `picked` (the segment selected on the timeline) follow the browser
    and can be set from Python. `view()` is the current view as data, `figure()` / `save(path)` a
    matplotlib figure of it, `save_html(path)` a standalone page. `recorded_with`: the command that recorded
    the trace, if known, so a click on a segment without a map names that command (see `record_command`).
    """

    def __init__(self, trace, sample: int = 0, segment: int | None = None, layer: int | None = None,
                 head: int | str = "mean", max_ticks: int = 48, width: int = 760, recorded_with: str | None = None):
        if not trace.map_segments:
            raise ValueError("this trace kept no full attention maps: record with TraceConfig(segments=...) set")
        self.trace = trace
        self.max_ticks = max_ticks
        first = trace.segment_info(trace.map_segments[0])
        self.layers = [int(v) for v in first["layers"]]
        self.heads = [int(v) for v in first["heads"]]
        samples = list(range(len(first["has_fact"])))
        segment = trace.map_segments[0] if segment is None else segment
        layer = self.layers[-1] if layer is None else layer
        for name, value, allowed in (("sample", sample, samples), ("segment", segment, trace.map_segments),
                                     ("layer", layer, self.layers), ("head", head, ["mean", "grid", *self.heads])):
            if value not in allowed:
                raise ValueError(f"{name} {value!r} has no map in this trace; choose one of {allowed}")
        self.widget = _ExplorerWidget(meta=self._meta(samples, width, recorded_with), sample=sample,
                                      segment=segment, layer=layer, head=str(head), picked=segment)
        self.widget.add_class("rmt-attention-explorer")
        self._held: OrderedDict[tuple[int, int, int], _FloatBlock] = OrderedDict()  # most recently used last
        self.widget.on_msg(self._on_msg)

    # -------------------------------------------------------------- data for the browser
    def _meta(self, samples: list[int], width: int, recorded_with: str | None) -> dict:
        segments = [int(s) for s in self.trace.map_segments]
        fact_segments = {str(b): [s for s in segments if self.trace.segment_info(s)["has_fact"][b]] for b in samples}
        return {"segments": segments, "fact_segments": fact_segments, "layers": self.layers, "heads": self.heads,
                "samples": samples,
                "cmap": _colormap(), "width": width, "timeline": self._timeline(samples),
                "record_command": record_command(self.trace, SEGMENT_SLOT, recorded_with)}

    def _timeline(self, samples: list[int]) -> dict | None:
        """Per sample, the timeline lanes (`TIMELINE_METRICS`, mean of heads) of every map layer over every segment
        of the trace, encoded by `encode_timeline` as one (lanes, layers, segments) uint8 array in base64, and
        the sample's fact segments; None when the trace has no summaries."""
        try:
            s = self.trace.summaries
        except (AttributeError, FileNotFoundError):
            return None
        n_segments = int(getattr(self.trace, "n_segments", int(s["segment"].max()) + 1 if len(s) else 0))
        lanes = list(TIMELINE_METRICS)
        s = s[s["metric"].isin(list(TIMELINE_METRICS.values())) & s["layer"].isin(self.layers)
              & s["sample"].isin(samples)]
        # write_precision is 0/0 where a segment has no fact places: no value, not an infinite one
        means = (s.assign(value=s["value"].replace([np.inf, -np.inf], np.nan))
                 .groupby(["sample", "metric", "layer", "segment"], observed=True)["value"].mean().reset_index())
        values = np.full((len(samples), len(lanes), len(self.layers), n_segments), np.nan)
        metric_index = {m: k for k, m in enumerate(TIMELINE_METRICS.values())}
        values[means["sample"].map({b: k for k, b in enumerate(samples)}).to_numpy(),
               means["metric"].astype(str).map(metric_index).to_numpy(),
               means["layer"].map({v: k for k, v in enumerate(self.layers)}).to_numpy(),
               means["segment"].to_numpy()] = means["value"].to_numpy()
        facts = s[s["has_fact"].astype(bool)].groupby("sample")["segment"].unique() if "has_fact" in s else {}
        return {"n_segments": n_segments, "lanes": lanes, "layers": self.layers, "samples": {
            str(b): {"facts": sorted(int(v) for v in facts.get(b, [])),
                     "data": base64.b64encode(encode_timeline(values[k]).tobytes()).decode("ascii")}
            for k, b in enumerate(samples)}}

    def _floats(self, sample: int, segment: int, layer: int) -> _FloatBlock:
        """One sample's kept heads of one layer cut to its real positions (padding dropped), held for the next
        requests (`KERNEL_BLOCKS`)."""
        key = (sample, segment, layer)
        if key in self._held:
            self._held.move_to_end(key)
            return self._held[key]
        labels = list(self.trace.labels(segment, sample))
        real = [i for i, lab in enumerate(labels) if lab != "[PAD]"]
        n = len(real)
        maps = _numpy(self.trace.pattern(segment, layer)[sample])  # (heads, L, L)
        # a copy either way, so the held block never keeps a whole loaded batch alive; slicing when the padding
        # is a tail (the usual layout) takes a third of the time of gathering
        maps = np.array(maps[:, :n, :n]) if real == list(range(n)) else maps.take(real, axis=1).take(real, axis=2)
        maps.setflags(write=False)  # view() hands out slices of it
        facts = set(fact_label_positions(self.trace, segment, sample))
        block = _FloatBlock(segment=segment, maps=maps, labels=[labels[i] for i in real],
                            facts=[k for k, i in enumerate(real) if i in facts],
                            heads=[int(h) for h in self.trace.segment_info(segment)["heads"]])
        self._held[key] = block
        while len(self._held) > KERNEL_BLOCKS:
            self._held.popitem(last=False)
        return block

    def maps(self, sample: int, segment: int, layer: int,
             maps: list[str | int] | None = None) -> tuple[dict, list[bytes]]:
        """The kernel's answer to the browser's `need`: the header of one (sample, segment, layer) and one buffer per
        map named in `maps` ("mean" or a kept head; default: the mean, then every head), each quantized on its
        own by `quantize`, so each equals its row of `block()`."""
        block = self._floats(sample, segment, layer)
        names = block.names() if maps is None else [str(m) for m in maps]
        encoded = [quantize(block.map(name)[None]) for name in names]
        header = {"type": "maps", "sample": sample, "segment": segment, "layer": layer, "n": len(block.labels),
                  "heads": block.heads, "labels": block.labels, "facts": block.facts, "maps": names,
                  "scales": [float(scales[0]) for _q, scales in encoded]}
        return header, [q.tobytes() for q, _scales in encoded]

    def block(self, sample: int, segment: int, layer: int) -> tuple[dict, bytes]:
        """The header and the bytes of a whole (sample, segment, layer), as a standalone page inlines it: every
        kept head and the mean of heads, quantized by `encode_block` (index 0 the mean, 1 + k head k)."""
        block = self._floats(sample, segment, layer)
        q, scales = encode_block(block.maps)
        header = {"type": "block", "sample": sample, "segment": segment, "layer": layer, "n": len(block.labels),
                  "heads": block.heads, "labels": block.labels, "facts": block.facts, "scales": scales.tolist()}
        return header, q.tobytes()

    def _on_msg(self, _widget, content, _buffers) -> None:
        if not isinstance(content, dict) or content.get("type") != "need":
            return
        key = {k: int(content[k]) for k in ("sample", "segment", "layer")}
        # Any failure is answered, not only a map the trace lacks: an exception that left this handler would only
        # reach the kernel's log, and the browser would show "loading…" forever. It shows the reason instead.
        try:
            names = content.get("maps") or self._floats(**key).names()
        except Exception as err:  # noqa: BLE001 - answered with the reason, see above
            self.widget.send({"type": "maps", **key, "maps": [], "error": _reason(err)})
            return
        for name in names:  # one message a map: the browser colours each while the next travels
            try:
                header, buffers = self.maps(**key, maps=[name])
            except Exception as err:  # noqa: BLE001 - answered with the reason, see above
                self.widget.send({"type": "maps", **key, "maps": [name], "error": _reason(err)})
                continue
            self.widget.send(header, buffers=buffers)

    # -------------------------------------------------------------- the current view in Python
    def _window(self, n: int) -> tuple[int, int, int, int]:
        """The zoom window the browser reported, clamped to the map: rows r0:r1, columns c0:c1."""
        r0, r1, c0, c1 = self.widget.window if len(self.widget.window) == 4 else (0, n, 0, n)
        r0, c0 = min(max(0, int(r0)), n - 1), min(max(0, int(c0)), n - 1)
        return r0, min(n, max(int(r1), r0 + 1)), c0, min(n, max(int(c1), c0 + 1))

    def view(self) -> AttentionView:
        """The current view as data, from the trace's exact maps (not the quantized bytes): the shown head or the
        mean of heads (also in grid mode), cut to the zoom window."""
        w = self.widget
        head = "mean" if w.head in ("mean", "grid") else int(w.head)
        block = self._floats(w.sample, w.segment, w.layer)
        matrix, labels, facts = block.map(head), block.labels, block.facts
        r0, r1, c0, c1 = self._window(len(labels))
        head_text = "mean of heads" if head == "mean" else f"head {head}"
        return AttentionView(
            attention=matrix[r0:r1, c0:c1], row_labels=labels[r0:r1], col_labels=labels[c0:c1],
            title=f"segment {w.segment}, layer {w.layer}, {head_text}", segment=w.segment, layer=w.layer, head=head,
            fact_rows=tuple(k - r0 for k in facts if r0 <= k < r1),
            fact_cols=tuple(k - c0 for k in facts if c0 <= k < c1),
        )

    def figure(self):
        """A matplotlib figure of the current view; in grid mode, every head of the layer as small multiples."""
        if self.widget.head != "grid":
            return plot_attention(self.view(), self.max_ticks)
        w = self.widget
        base = self.view()
        block = self._floats(w.sample, w.segment, w.layer)
        maps, heads = block.maps, block.heads
        r0, r1, c0, c1 = self._window(len(block.labels))
        cols = int(np.ceil(np.sqrt(len(heads))))
        rows = int(np.ceil(len(heads) / cols))
        with figure_style(font_scale=0.7):
            fig, axes = new_figure(rows, cols, figsize=(2.6 * cols, 2.6 * rows))
            for ax in axes.flat[len(heads):]:
                ax.set_visible(False)
            for ax, k, h in zip(axes.flat, range(len(heads)), heads):
                view = AttentionView(attention=maps[k, r0:r1, c0:c1], row_labels=base.row_labels,
                                     col_labels=base.col_labels, title=f"head {h}", fact_rows=base.fact_rows,
                                     fact_cols=base.fact_cols)
                draw_attention(ax, view, max_ticks=12)
            fig.suptitle(f"segment {w.segment}, layer {w.layer}, all heads (sqrt colour scale, gamma "
                         f"{ATTENTION_NORM_GAMMA})")
        return fig

    def save(self, path: str | Path) -> Path:
        """Write the current view to `path` (.png or .svg by its suffix)."""
        path = Path(path)
        fmt = path.suffix.lstrip(".").lower() or "png"
        if fmt not in ("png", "svg"):
            raise ValueError(f"cannot save a view as {fmt!r}; use .png or .svg")
        return save_figure(self.figure(), path.with_suffix(""), (fmt,))[0]

    # -------------------------------------------------------------- the standalone page
    def save_html(self, path: str | Path, segments: list[int] | None = None, layers: list[int] | None = None,
                  samples: list[int] | None = None) -> Path:
        """One HTML file with the explorer's script and the blocks of the chosen samples, segments and layers
        inlined (default: the current ones; all heads always); it opens offline in a browser, no kernel. Each
        block is (heads + 1) x positions^2 bytes, base64 in the page (4/3 of that)."""
        w = self.widget
        samples = [w.sample] if samples is None else list(samples)
        segments = [w.segment] if segments is None else list(segments)
        layers = [w.layer] if layers is None else list(layers)
        blocks = []
        for b in samples:
            for s in segments:
                for layer in layers:
                    header, data = self.block(b, s, layer)
                    blocks.append({**header, "data": base64.b64encode(data).decode("ascii")})
        meta = dict(w.meta, samples=samples, segments=segments, layers=layers,
                    fact_segments={str(b): w.meta["fact_segments"][str(b)] for b in samples})
        if meta.get("timeline"):
            meta["timeline"] = dict(meta["timeline"], samples={str(b): meta["timeline"]["samples"][str(b)]
                                                               for b in samples})
        state = {"meta": meta, "sample": samples[0] if w.sample not in samples else w.sample,
                 "segment": segments[0] if w.segment not in segments else w.segment,
                 "layer": layers[0] if w.layer not in layers else w.layer, "head": w.head, "window": []}
        title = f"attention explorer: segment {state['segment']}, layer {state['layer']}"
        page = _PAGE.format(title=html.escape(title),
                            data=_script_json({"state": state, "blocks": blocks}), esm=ESM.read_text(encoding="utf-8"))
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
        return path

    def _ipython_display_(self):  # shown when the explorer is the cell's value
        from IPython.display import display

        display(self.widget)


def _reason(err: Exception) -> str:
    """Why a map could not be sent, as the browser shows it in the map's place: a lookup's own message (the trace
    names what it kept; KeyError's without the quotes str() adds), anything else after its type, so that a failed
    read says what kind of failure it was."""
    if isinstance(err, KeyError) and len(err.args) == 1:
        return str(err.args[0])
    if isinstance(err, (IndexError, ValueError)):
        return str(err)
    return f"{type(err).__name__}: {err}"


def _script_json(value) -> str:
    """JSON safe inside <script>: '</' cannot end the element early (token labels are arbitrary text)."""
    return json.dumps(value, separators=(",", ":")).replace("</", "<\\/")


# The page's model stands in for the anywidget model: the same get/set/on/send calls, a `need` answered from the
# inlined blocks (explorer.js, answerNeed), so the module runs unchanged. Each map is decoded from base64 when first
# asked for (base64Slice), not its whole block, which at 522 positions is 4.7 MB of base64: 10-17 ms in Chromium on
# this machine against ~1 ms for one map, spent before the first frame of a far jump.
_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data: blob:">
</head><body style="margin:16px">
<div id="rmt-explorer-app"></div>
<script type="application/json" id="rmt-explorer-data">{data}</script>
<script type="module">
{esm}
const inlined = JSON.parse(document.getElementById("rmt-explorer-data").textContent);
const state = inlined.state, listeners = {{}};
const byKey = new Map(inlined.blocks.map((b) => [blockKey(b.sample, b.segment, b.layer), b]));
const decoded = new Map(); // "sample/segment/layer/i" -> map i of that block
const model = {{
  get: (name) => state[name],
  set: (name, value) => {{ state[name] = value; }},
  save_changes: () => {{}},
  on: (event, fn) => {{ (listeners[event] = listeners[event] || []).push(fn); }},
  send: (msg) => {{
    const key = blockKey(msg.sample, msg.segment, msg.layer), b = byKey.get(key);
    const mapBytes = (i) => {{
      const at = `${{key}}/${{i}}`;
      if (!decoded.has(at)) decoded.set(at, base64Slice(b.data, i * b.n * b.n, b.n * b.n));
      return decoded.get(at);
    }};
    const reply = answerNeed(msg, b, mapBytes);
    queueMicrotask(() => (listeners["msg:custom"] || []).forEach((fn) => fn(...reply)));
  }},
}};
render({{ model, el: document.getElementById("rmt-explorer-app") }});
</script></body></html>
"""
