"""The memory dynamics widget: step through the segments of a recorded trace and watch the memory.

It draws with matplotlib into PNG bytes shown by an `ipywidgets.Image`, so it needs no JavaScript
beyond the widget manager JupyterLab ships with: no CDN, nothing fetched, it works offline, and the
executed notebook stores the current picture in its widget state. (The attention explorer, whose
maps need hover and zoom at 512+ positions, draws in the browser instead: rmt_lab.viz.explorer.)

    from rmt_lab.viz.widgets import MemoryDynamics
    dynamics = MemoryDynamics(trace, tokenizer)  # step through segments: read/write, slot changes, written tokens
    dynamics.follow(explorer)  # ... and follow the segment clicked on an AttentionExplorer's timeline

`trace` is an `rmt_lab.trace.Trace` (or anything with its reading interface, see viz.attention).
"""

from __future__ import annotations

import html

import ipywidgets as widgets
import numpy as np
import pandas as pd
import traitlets

from rmt_lab.viz.memory import fact_segments, memory_projection
from rmt_lab.viz.style import SEQUENTIAL, colors, figure_bytes, figure_style, new_figure

FACT_MARK = "#d55e00"


class MemoryDynamics:
    """Step through the segments of a trace and watch the memory: per layer, how much it reads, writes
    and retains; per slot, how much its state changes; the tokens each slot writes from; and, with
    memory states in the trace, the memory's path in a 2-D projection.

    A Play button steps the segment slider on its own (linked in the browser with `jslink`).
    `tokenizer` (optional) turns written token ids into text. `follow(explorer)` links the segment to the
    one selected on an AttentionExplorer's timeline.
    """

    def __init__(self, trace, tokenizer=None, sample: int = 0, segment: int = 0, layer: int | None = None,
                 interval_ms: int = 900):
        self.trace = trace
        self.tokenizer = tokenizer
        summaries = trace.summaries
        self.summaries = summaries[summaries["sample"] == sample]
        if self.summaries.empty:
            raise ValueError(f"the trace holds no summaries for sample {sample}")
        self.sample_index = sample
        segments = sorted(self.summaries["segment"].unique())
        layers = sorted(int(v) for v in self.summaries.loc[self.summaries["layer"] >= 0, "layer"].unique())
        self.facts = fact_segments(self.summaries)
        try:
            self.projection = memory_projection(trace.memory_states(), summaries)
            self.projection = self.projection[self.projection["sample"] == sample]
        except (KeyError, AttributeError, ValueError):
            self.projection = None  # recorded without memory states: the timeline of changes stands in
        style = {"description_width": "initial"}
        self.segment = widgets.IntSlider(value=segment, min=min(segments), max=max(segments), description="segment",
                                         continuous_update=False, style=style)
        self.play = widgets.Play(value=segment, min=min(segments), max=max(segments), interval=interval_ms,
                                 description="play")
        widgets.jslink((self.play, "value"), (self.segment, "value"))
        self.layer = widgets.Dropdown(options=layers, value=layer if layer is not None else layers[-1],
                                      description="written tokens, layer", style=style,
                                      layout=widgets.Layout(width="240px"))
        self.image = widgets.Image(format="png", layout=widgets.Layout(max_width="900px", height="auto"))
        self.written = widgets.HTML()
        self.segment.observe(lambda _c: self.update(), names="value")
        self.layer.observe(lambda _c: self.update(), names="value")
        self.widget = widgets.VBox([widgets.HBox([self.play, self.segment, self.layer]), self.image, self.written])
        self.widget.add_class("rmt-memory-dynamics")
        self.update()

    def follow(self, explorer) -> None:
        """Link the segment slider both ways to the segment selected on `explorer`'s timeline (its widget's
        `picked`): a click on the timeline, kept map or not, shows here what that segment reads, writes and
        retains and the tokens each slot writes from; stepping here marks the segment on the timeline. The
        link runs in the kernel (a page without one has no Python to draw the written tokens)."""
        traitlets.link((explorer.widget, "picked"), (self.segment, "value"))

    def update(self) -> None:
        self.image.value = figure_bytes(self.figure(), "png", dpi=85)
        self.written.value = self.written_table()

    def _metric(self, metric: str, segment: int | None = None) -> pd.DataFrame:
        s = self.summaries[self.summaries["metric"] == metric]
        return s if segment is None else s[s["segment"] == segment]

    def figure(self):
        """The current segment's picture: read/write per layer, per-slot change, trajectory or change timeline."""
        seg = self.segment.value
        with figure_style(font_scale=0.85):
            fig, axes = new_figure(1, 3, figsize=(12, 3.6), gridspec_kw={"width_ratios": [1.2, 1, 1.3]})
            ops, slots, path = axes[0]
            cols = colors(3)
            layers = sorted(self.summaries.loc[self.summaries["layer"] >= 0, "layer"].unique())
            width = 0.26
            for k, (metric, label) in enumerate((("read_content", "read"), ("write_content", "write"),
                                                 ("retain", "retain"))):
                d = self._metric(metric, seg).groupby("layer")["value"].mean().reindex(layers)
                ops.bar(np.arange(len(layers)) + (k - 1) * width, d.values, width, color=cols[k], label=label)
            ops.set_xticks(range(len(layers)), [str(v) for v in layers])
            ops.set_ylim(0, 1)
            ops.set_xlabel("layer")
            ops.set_ylabel("attention mass (mean of heads)")
            ops.legend(fontsize="small", loc="upper left", ncols=3)
            fact = " (fact)" if seg in self.facts else ""
            ops.set_title(f"segment {seg}{fact}: read / write / retain", fontsize="medium")
            delta = self._metric("mem_delta_l2", seg)
            delta = delta[delta["slot"] >= 0].sort_values("slot")
            slots.bar(delta["slot"], delta["value"], color=cols[1])
            top = self._metric("mem_delta_l2")
            slots.set_ylim(0, max(float(top.loc[top["slot"] >= 0, "value"].max()), 1e-6) * 1.1)
            slots.set_xlabel("memory slot")
            slots.set_ylabel("change of the slot's state (L2)")
            slots.set_title("how much each slot changed", fontsize="medium")
            slots.set_xticks(delta["slot"].tolist())
            if self.projection is not None:
                p = self.projection.sort_values("segment")
                path.plot(p["pc1"], p["pc2"], color="0.7", linewidth=1)
                path.scatter(p["pc1"], p["pc2"], c=p["segment"], cmap=SEQUENTIAL, s=22, zorder=2)
                if "has_fact" in p:
                    f = p[p["has_fact"]]
                    path.scatter(f["pc1"], f["pc2"], s=90, facecolors="none", edgecolors=FACT_MARK, zorder=3)
                here = p[p["segment"] == seg]
                path.scatter(here["pc1"], here["pc2"], s=160, marker="*", color="black", zorder=4)
                path.set_xlabel("PC 1")
                path.set_ylabel("PC 2")
                path.set_title("memory state path (star: now, circles: facts)", fontsize="medium")
            else:
                mean = self._metric("mem_delta_l2")
                mean = mean[mean["slot"] < 0].sort_values("segment")
                path.plot(mean["segment"], mean["value"], color=cols[1])
                for f in self.facts:
                    path.axvline(f, color=FACT_MARK, linewidth=0.8, linestyle=":")
                path.axvline(seg, color="black", linewidth=1.2)
                path.set_xlabel("segment (dotted: facts)")
                path.set_ylabel("mean change of the memory (L2)")
                path.set_title("memory change over the input", fontsize="medium")
        return fig

    def written_table(self) -> str:
        """HTML table of the top tokens each memory slot writes from in this segment and layer."""
        try:
            written = self.trace.written
        except (AttributeError, FileNotFoundError):
            return ""
        w = written[(written["sample"] == self.sample_index) & (written["segment"] == self.segment.value)
                    & (written["layer"] == self.layer.value)]
        if w.empty:
            return "<i>no written tokens recorded for this segment and layer</i>"
        rows = []
        for slot, d in w.sort_values(["slot", "rank"]).groupby("slot"):
            cells = []
            for _, r in d.iterrows():
                token = self._token(int(r["token_id"]))
                text = f"{html.escape(token)} <small>{r['mass']:.2f}</small>"
                cells.append(f"<b style='color:{FACT_MARK}'>{text}</b>" if r["is_fact"] else text)
            rows.append(f"<tr><td>[mem {slot}]</td><td>{' &nbsp; '.join(cells)}</td></tr>")
        return ("<table style='font-size:12px'><tr><th>slot</th><th>writes from (attention mass; facts in bold)"
                "</th></tr>" + "".join(rows) + "</table>")

    def _token(self, token_id: int) -> str:
        if self.tokenizer is None:
            return f"#{token_id}"
        return self.tokenizer.convert_ids_to_tokens(token_id)

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)
