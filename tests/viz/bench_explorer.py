"""Interaction-to-paint of the attention explorer in headless Chromium, at a MiniLM-scale segment.

    .venv/bin/python -m tests.viz.bench_explorer            # 522 positions x 12 heads, 3 segments x 2 layers,
                                                            # a timeline of 4,096 segments
    .venv/bin/python -m tests.viz.bench_explorer --positions 1024 --no-jupyterlab

A benchmark, not a test: it prints figures and asserts nothing about them. It writes the standalone page
(`save_html`) of a synthetic trace and, inside the page, times each interaction from the input event to
the next frame (requestAnimationFrame, then a task: the frame with the change has been produced). Each
kind of interaction is repeated; it reports the median and the range. "first" rows need a block or a
head's image the page has not drawn before (base64 decode, colouring 522^2 cells); "seen" rows redraw
from what is already decoded. In Jupyter the first visit of a block also waits for the kernel to encode
and send it: `benchmark_widget` measures that inside JupyterLab (127.0.0.1), from the choice in the page
to the frame drawn with the block the kernel sent. The trace's summaries cover `timeline_segments` segments
(4,096: 2,048,000 tokens at 499 a segment), so the timeline rows time its zoom, pan and hover at that length.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from rmt_lab.viz import AttentionExplorer
from tests.viz.synthetic import synthetic_trace
from tests.viz.test_browser import CHROMIUM, CHROMIUM_FLAGS, ROOT, run_all_cells, serve_notebook

# In the page: run an action, wait for the frame that shows it; ms from the event to that frame.
_TIMER = """
window.__paint = (action) => new Promise((done) => {
  const t0 = performance.now();
  action();
  requestAnimationFrame(() => setTimeout(() => done(performance.now() - t0), 0));
});
window.__choose = (name, value) => window.__paint(() => {
  const box = document.querySelector(`select[name=${name}]`);
  box.value = String(value);
  box.dispatchEvent(new Event("change"));
});
// on the canvas `target` (rmt-overlay: the map, rmt-timeline: the timeline), at x, y inside it
window.__hover = (target, x, y, buttons = 0) => window.__paint(() => {
  const o = document.querySelector(`canvas.${target}`), r = o.getBoundingClientRect();
  o.dispatchEvent(new MouseEvent("mousemove", {clientX: r.left + x, clientY: r.top + y, buttons, bubbles: true}));
});
window.__wheel = (target, x, y, dy) => window.__paint(() => {
  const o = document.querySelector(`canvas.${target}`), r = o.getBoundingClientRect();
  o.dispatchEvent(new WheelEvent("wheel", {clientX: r.left + x, clientY: r.top + y, deltaY: dy, bubbles: true,
                                           cancelable: true}));
});
window.__press = (target, x, y) => {
  const o = document.querySelector(`canvas.${target}`), r = o.getBoundingClientRect();
  o.dispatchEvent(new MouseEvent("mousedown", {clientX: r.left + x, clientY: r.top + y, buttons: 1, bubbles: true}));
};
true;  // playwright calls an expression whose value is a function: end on a plain value
"""


def _summary(name: str, values: list[float]) -> str:
    return (f"{name:<44} median {statistics.median(values):7.1f} ms   range {min(values):6.1f} .. {max(values):6.1f} ms"
            f"   n={len(values)}")


def benchmark_explorer(positions: int = 522, heads: int = 12, layers: int = 2, segments: int = 3,
                       repeats: int = 20, timeline_segments: int = 4096) -> dict[str, list[float]]:
    """Print and return interaction-to-paint times (ms) per kind of interaction on the standalone page."""
    from playwright.sync_api import sync_playwright

    trace = synthetic_trace(n_positions=positions, n_mem=10, layers=layers, heads=heads,
                            map_segments=tuple(range(segments)), n_segments=max(segments, timeline_segments))
    explorer = AttentionExplorer(trace)
    encode = []
    for _ in range(5):
        t0 = time.perf_counter()
        header, data = explorer.block(0, 0, 0)
        encode.append((time.perf_counter() - t0) * 1000)
    path = Path(tempfile.mkdtemp(prefix="rmt_explorer_bench_")) / "explorer.html"
    explorer.save_html(path, segments=list(range(segments)), layers=list(range(layers)))
    print(f"{positions} positions x {heads} heads (+ their mean): block {len(data) / 1e6:.2f} MB "
          f"({heads + 1} x {positions}^2 bytes); float32 would be {heads * positions ** 2 * 4 / 1e6:.1f} MB")
    print(f"standalone page with {segments} segments x {layers} layers: {path.stat().st_size / 1e6:.1f} MB "
          f"({path})")
    timeline = explorer.widget.meta["timeline"]
    print(f"timeline of {timeline['n_segments']:,} segments: {len(timeline['samples']['0']['data']) / 1e3:.0f} KB "
          f"of base64 a sample ({len(timeline['lanes'])} lanes x {layers} layers x {timeline['n_segments']:,} "
          "segments, uint8)")
    times: dict[str, list[float]] = {"python: encode a block": encode}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1000})
            t0 = time.perf_counter()
            page.goto(path.as_uri())
            page.wait_for_selector(".rmt-explorer[data-drawn]", timeout=120_000)
            times["open page to first map"] = [(time.perf_counter() - t0) * 1000]
            page.evaluate(_TIMER)
            last = layers - 1

            def record(name, script, *args):
                times.setdefault(name, []).append(page.evaluate(script, list(args)))

            choose = "([n, v]) => window.__choose(n, v)"
            for s in range(1, segments):  # blocks not decoded yet
                record("segment change (first)", choose, "segment", s)
            for layer in range(layers):
                if layer != last:
                    record("layer change (first)", choose, "layer", layer)
            record("layer change (first)", choose, "layer", last)
            for h in range(heads):  # each head's image coloured for the first time
                record("head change (first)", choose, "head", h)
            record("head: mean of heads", choose, "head", "mean")
            for k in range(repeats):
                record("segment change (seen)", choose, "segment", k % segments)
                record("layer change (seen)", choose, "layer", k % layers)
                record("head change (seen)", choose, "head", k % 2)
            record("head: grid of all heads (first)", choose, "head", "grid")
            for k in range(repeats):
                record("head: grid of all heads (seen)", choose, "head", "grid" if k % 2 else 0)
            page.evaluate(choose, ["head", "mean"])
            page.evaluate(choose, ["segment", 0])
            for k in range(repeats * 3):
                x = 100 + (k * 37) % 640
                y = 100 + (k * 53) % 640
                record("hover (readout + crosshair)", "([x, y]) => window.__hover('rmt-overlay', x, y)", x, y)
            for k in range(repeats):
                record("wheel zoom step", "([x, y, d]) => window.__wheel('rmt-overlay', x, y, d)", 400, 400,
                       -120 if k % 2 else 120)
            n = f"{timeline['n_segments']:,} segments"
            for k in range(repeats):  # all segments in view, then down to ~10 and back
                record(f"timeline: wheel zoom step ({n})", "([x, y, d]) => window.__wheel('rmt-timeline', x, y, d)",
                       400, 30, -600 if k < repeats // 2 else 600)
            for k in range(repeats):
                record(f"timeline: hover readout ({n})", "([x, y]) => window.__hover('rmt-timeline', x, y)",
                       120 + (k * 29) % 600, 30)
            for _ in range(3):  # ~280 segments in view, so a drag has somewhere to go
                page.evaluate("window.__wheel('rmt-timeline', 400, 30, -600)")
            page.evaluate("window.__press('rmt-timeline', 400, 30)")
            for k in range(repeats):
                record(f"timeline: drag-pan step ({n})", "([x, y]) => window.__hover('rmt-timeline', x, y, 1)",
                       400 + 10 * (k + 1), 30)
        finally:
            browser.close()
    for name, values in times.items():
        print(_summary(name, values))
    return times


# In JupyterLab: choose a value, resolve on the frame after the view drew `expect` (the kernel's block may
# arrive first; the view marks what it drew in data-drawn).
_WIDGET_TIMER = """
window.__choose = (name, value, expect) => new Promise((done) => {
  const root = document.querySelector(".rmt-explorer"), t0 = performance.now();
  const finish = () => requestAnimationFrame(() => setTimeout(() => done(performance.now() - t0), 0));
  const watch = new MutationObserver(() => { if (root.dataset.drawn === expect) { watch.disconnect(); finish(); } });
  watch.observe(root, {attributes: true, attributeFilter: ["data-drawn"]});
  const box = root.querySelector(`select[name=${name}]`);
  box.value = String(value);
  box.dispatchEvent(new Event("change"));
});
true;
"""


def benchmark_widget(positions: int = 522, heads: int = 12, layers: int = 2, segments: int = 3,
                     repeats: int = 10) -> dict[str, list[float]]:
    """Print and return ms from a segment or layer choice to its frame, with the explorer widget in JupyterLab:
    "first" waits for the kernel's block (encode, websocket, decode), "seen" draws a block the view holds."""
    import nbformat
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="rmt_explorer_lab_"))
    notebook = tmp / "explorer_bench.ipynb"
    code = (f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n"
            "from tests.viz.synthetic import synthetic_trace\nfrom rmt_lab.viz import AttentionExplorer\n"
            f"explorer = AttentionExplorer(synthetic_trace(n_positions={positions}, n_mem=10, layers={layers}, "
            f"heads={heads}, map_segments=tuple(range({segments})), n_segments={max(segments, 4)}, batch=2), "
            "layer=0)\n"
            "explorer.widget")
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)]), notebook)
    times: dict[str, list[float]] = {}
    with serve_notebook(tmp, notebook) as port, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            t0 = time.perf_counter()
            run_all_cells(page, port, notebook.name)
            page.wait_for_selector(".rmt-explorer[data-drawn]", timeout=300_000)
            times["run cell to first map (kernel start, trace, block)"] = [(time.perf_counter() - t0) * 1000]
            page.evaluate(_WIDGET_TIMER)

            def choose(label, name, value, state):
                expect = "{sample}/{segment}/{layer}/{head}".format(**state)
                times.setdefault(label, []).append(page.evaluate("([n, v, e]) => window.__choose(n, v, e)",
                                                                 [name, str(value), expect]))

            state = {"sample": 0, "segment": 0, "layer": 0, "head": "mean"}

            def snake(label, pause_s):  # every (segment, layer) block of the sample once, each step one change
                for s in (range(segments) if state["segment"] == 0 else reversed(range(segments))):
                    for layer in (range(layers) if state["layer"] == 0 else reversed(range(layers))):
                        if (s, layer) == (state["segment"], state["layer"]):
                            continue
                        name = "segment" if s != state["segment"] else "layer"
                        state.update(segment=s, layer=layer)
                        time.sleep(pause_s)
                        choose(f"{name} change, {label}", name, s if name == "segment" else layer, state)

            snake("right after the previous", 0.0)
            state["sample"] = 1  # another sample: none of its blocks held yet
            choose("sample change (block from the kernel)", "sample", 1, state)
            snake("after 1.5 s looking (neighbours prefetched)", 1.5)
            for k in range(repeats):
                state["segment"] = k % segments
                choose("segment change, block held", "segment", state["segment"], state)
                state["layer"] = k % layers
                choose("layer change, block held", "layer", state["layer"], state)
        finally:
            browser.close()
    for name, values in times.items():
        print(_summary(name, values))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--positions", type=int, default=522)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--segments", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--timeline-segments", type=int, default=4096)
    parser.add_argument("--no-jupyterlab", action="store_true", help="only the standalone page")
    args = parser.parse_args()
    benchmark_explorer(args.positions, args.heads, args.layers, args.segments, args.repeats, args.timeline_segments)
    if not args.no_jupyterlab:
        print("\nthe widget in JupyterLab (kernel on this machine):")
        benchmark_widget(args.positions, args.heads, args.layers, args.segments, args.repeats // 2)


if __name__ == "__main__":
    main()
