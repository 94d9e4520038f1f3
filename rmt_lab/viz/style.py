"""One look for every figure: seaborn's whitegrid, colour-blind-safe palettes, readable in print.

Figures are built on `matplotlib.figure.Figure` directly, never through pyplot's global state, so
drawing many of them (the `figures` command, the widgets redrawing on every slider step) leaks
nothing and needs no display. Notebooks still show a returned Figure inline.
"""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import Iterator
from pathlib import Path

import matplotlib
import numpy as np
import seaborn as sns
from cycler import cycler
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

# Okabe-Ito based: distinguishable under the common colour-vision deficiencies and in greyscale order.
PALETTE = "colorblind"
# Ordered quantities (trained segments, segment index) and heatmaps: perceptually uniform, CVD-safe.
SEQUENTIAL = "viridis"
# Attention probabilities: white for zero, so sparse maps read like ink on paper.
ATTENTION_CMAP = "mako_r"
CHANCE_STYLE = dict(color="0.45", linestyle=":", linewidth=1.2)


def colors(n: int) -> list[tuple[float, float, float]]:
    """n categorical colours (the colour-blind palette, repeated past its 10 colours)."""
    base = sns.color_palette(PALETTE)
    return [base[i % len(base)] for i in range(n)]


def ordered_colors(n: int) -> list[tuple[float, float, float]]:
    """n colours along the sequential map for an ordered quantity, avoiding its palest end."""
    return sns.color_palette(SEQUENTIAL, n) if n > 1 else [sns.color_palette(SEQUENTIAL, 3)[1]]


@contextlib.contextmanager
def figure_style(font_scale: float = 1.0) -> Iterator[None]:
    """The rc settings every figure is drawn under (local: the caller's matplotlib state is left alone)."""
    rc = {
        **sns.axes_style("whitegrid"),
        **sns.plotting_context("paper", font_scale=1.25 * font_scale),
        "axes.prop_cycle": cycler(color=colors(10)),
        "svg.hashsalt": "rmt_lab",  # stable ids in SVG output: regenerated figures diff cleanly in git
        "figure.dpi": 100,
        "savefig.dpi": 150,
        "image.cmap": SEQUENTIAL,
    }
    with matplotlib.rc_context(rc):
        yield


def styled(fn):
    """Decorator: draw the figure under `figure_style()`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with figure_style():
            return fn(*args, **kwargs)

    return wrapper


def new_figure(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float], **kwargs) -> tuple[Figure, np.ndarray]:
    """A pyplot-free Figure with a constrained layout and its axes as a 2-D array."""
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes


def format_tokens(x: float, _pos=None) -> str:
    """Tick label for token counts: 512, 32k, 1M, 2.05M."""
    if x >= 1e6:
        return f"{x / 1e6:.3g}M"
    if x >= 1e3:
        return f"{x / 1e3:.3g}k"
    return f"{x:.0f}"


TOKENS_FORMATTER = FuncFormatter(format_tokens)


def log_tokens_axis(ax, axis: str = "x") -> None:
    """A log-scaled token axis with 32k / 1M style labels."""
    if axis == "x":
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(TOKENS_FORMATTER)
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda *_: ""))
    else:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(TOKENS_FORMATTER)


def plain_log_axis(ax, axis: str = "y") -> None:
    """A log axis labelled 200, 500, 1,000 rather than 2x10^2 (MiB and tokens/s read better that way)."""
    target = ax.yaxis if axis == "y" else ax.xaxis
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    target.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    target.set_minor_formatter(NullFormatter())


def label_figure(fig: Figure, text: str) -> None:
    """A line above the figure saying what it was drawn from (e.g. which model configuration)."""
    fig.text(0.0, 1.0, text, ha="left", va="bottom", fontsize=8, color="0.3", transform=fig.transFigure)


def save_figure(fig: Figure, stem: str | Path, formats: tuple[str, ...] = ("png", "svg")) -> list[Path]:
    """Write `stem.png` and `stem.svg` (no timestamps inside, so unchanged figures stay unchanged in git)."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        metadata = {"Date": None} if fmt == "svg" else {"Software": None}
        with figure_style():
            fig.savefig(path, format=fmt, metadata=metadata, bbox_inches="tight")
        written.append(path)
    return written


def figure_bytes(fig: Figure, fmt: str = "png", dpi: int | None = None) -> bytes:
    """The figure rendered to PNG/SVG bytes (what the widgets put into an ipywidgets.Image)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=dpi, metadata={"Date": None} if fmt == "svg" else {"Software": None})
    return buffer.getvalue()


def empty_axes(ax, message: str) -> None:
    """An axes that says why it holds no data, instead of an empty frame."""
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="0.4", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
