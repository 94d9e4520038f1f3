"""Interaction-to-paint of the attention explorer in headless Chromium, at a MiniLM-scale segment.

    .venv/bin/python -m tests.viz.bench_explorer            # 522 positions x 12 heads, 3 segments x 2 layers,
                                                            # a timeline of 4,096 segments
    .venv/bin/python -m tests.viz.bench_explorer --positions 1024 --no-jupyterlab

A benchmark, not a test: it prints figures and asserts nothing about them. It writes the standalone page
(`save_html`) of a synthetic trace and, inside the page, times each interaction from the input event to
the next frame (requestAnimationFrame, then a task: the frame with the change has been produced). Each
kind of interaction is repeated; it reports the median and the range. "first" rows need a block or a
head's image the page has not drawn before (base64 decode, colouring 522^2 cells); "seen" rows redraw
from what is already decoded. In Jupyter a map the browser does not hold also waits for the kernel to
encode and send it: `benchmark_widget` measures that inside JupyterLab (127.0.0.1), from the choice in the
page to the frame drawn with the maps the kernel sent, including far jumps (another sample, a segment two
away) to blocks nothing was prefetched from. The all-heads grid paints at once, with a placeholder for each
head still on its way: its rows give the first paint, the first head's map and the whole grid. It drives
Chromium by bare DevTools calls (`_DevTools`; with --driver playwright, as the browser tests do, every
websocket frame is also copied to the driver). The trace's summaries cover `timeline_segments` segments
(4,096: 2,048,000 tokens at 499 a segment), so the timeline rows time its zoom, pan and hover at that length.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from rmt_lab.viz import AttentionExplorer
from tests.viz.synthetic import synthetic_trace
from tests.viz.test_browser import (
    CHROMIUM, CHROMIUM_FLAGS, LOOPBACK, ROOT, TOKEN, run_all_cells, serve_notebook,
)

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
    kernel: dict[str, list[float]] = {}

    def timed(name, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        kernel.setdefault(name, []).append((time.perf_counter() - t0) * 1000)
        return out

    # at 3 segments x 2 layers, cycling through them misses the kernel's held blocks (KERNEL_BLOCKS = 3)
    blocks = [(s, layer) for s in range(segments) for layer in range(layers)] * 2
    for s, layer in blocks:
        timed("python: the mean, block not held (cut, mean, encode)", explorer.maps, 0, s, layer, ["mean"])
        _header, (one,) = timed("python: a head of the block just held", explorer.maps, 0, s, layer, ["1"])
    for s, layer in blocks:
        _header, data = timed("python: a whole block, not held (save_html)", explorer.block, 0, s, layer)
    # the page is ~30 MB and a folder in /tmp: both go when the browser has closed
    with tempfile.TemporaryDirectory(prefix="rmt_explorer_bench_") as folder:
        path = Path(folder) / "explorer.html"
        explorer.save_html(path, segments=list(range(segments)), layers=list(range(layers)))
        print(f"{positions} positions x {heads} heads (+ their mean): one map {len(one) / 1e3:.0f} KB, a block "
              f"{len(data) / 1e6:.2f} MB ({heads + 1} x {positions}^2 bytes); float32 would be "
              f"{heads * positions ** 2 * 4 / 1e6:.1f} MB")
        print(f"standalone page with {segments} segments x {layers} layers: {path.stat().st_size / 1e6:.1f} MB")
        timeline = explorer.widget.meta["timeline"]
        print(f"timeline of {timeline['n_segments']:,} segments: {len(timeline['samples']['0']['data']) / 1e3:.0f} KB "
              f"of base64 a sample ({len(timeline['lanes'])} lanes x {layers} layers x {timeline['n_segments']:,} "
              "segments, uint8)")
        times: dict[str, list[float]] = dict(kernel)
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


# In JupyterLab: choose a value; ms from the choice to the frame after each moment of the view `expect`, as the
# view marks them on its root (explorer.js): `painted`, its first frame, which in the grid may show placeholders;
# `tile`, the first frame with a map in it (for a view of one map, the first frame); `drawn`, the frame that shows
# the whole view. The kernel's maps may arrive first.
_WIDGET_TIMER = """
window.__choose = (name, value, expect) => new Promise((done) => {
  const root = document.querySelector(".rmt-explorer"), t0 = performance.now(), at = {};
  const frame = (moment) => {
    if (moment in at) return;
    at[moment] = null;
    requestAnimationFrame(() => setTimeout(() => {
      at[moment] = performance.now() - t0;
      if (["painted", "tile", "drawn"].every((m) => at[m] != null)) done(at);
    }, 0));
  };
  const watch = new MutationObserver(() => {
    if (root.dataset.painted !== expect) return;
    frame("painted");
    const tiles = JSON.parse(root.dataset.plot).tiles;
    if (!tiles || JSON.parse(root.dataset.placeholders).length < tiles.length) frame("tile");
    if (root.dataset.drawn === expect) { watch.disconnect(); frame("drawn"); }
  });
  watch.observe(root, {attributes: true, attributeFilter: ["data-painted", "data-placeholders", "data-drawn"]});
  const box = root.querySelector(`select[name=${name}]`);
  box.value = String(value);
  box.dispatchEvent(new Event("change"));
});
true;
"""


class _DevTools:
    """Headless Chromium driven by bare DevTools calls (Page, Runtime, Emulation; never the Network domain).

    Playwright enables the Network domain on every page, and Chromium then copies each websocket frame to the
    driver as base64: with a 272 KB map a change, that added 35-50 ms to each far jump in JupyterLab on this
    machine, a cost no user has. So the JupyterLab rows drive Chromium directly (tornado's websocket client:
    JupyterLab's server needs tornado anyway)."""

    def __init__(self) -> None:
        from tornado.websocket import websocket_connect

        self.profile = Path(tempfile.mkdtemp(prefix="rmt_explorer_chromium_"))
        self.process = subprocess.Popen(
            [str(CHROMIUM), *CHROMIUM_FLAGS, "--remote-debugging-port=0", f"--user-data-dir={self.profile}",
             "--window-size=1400,1200", "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.loop = asyncio.new_event_loop()
        self._id = 0
        try:
            active = self.profile / "DevToolsActivePort"  # Chromium writes the port it chose here
            deadline = time.monotonic() + 60
            while not active.is_file() or not active.read_text().strip():
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("Chromium did not open its DevTools port")
                time.sleep(0.1)
            port = int(active.read_text().split()[0])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=10) as response:
                page = next(t for t in json.load(response) if t["type"] == "page")

            async def connect():  # inside the loop, so tornado binds the connection to it
                return await websocket_connect(page["webSocketDebuggerUrl"], max_message_size=1 << 28)

            self.socket = self.loop.run_until_complete(connect())
            # JupyterLab acts on the notebook that has focus; a headless window never gets it otherwise
            self.call("Emulation.setFocusEmulationEnabled", enabled=True)
        except BaseException:
            self.close()
            raise

    def call(self, method: str, **params) -> dict:
        self._id += 1
        call_id = self._id

        async def exchange():
            await self.socket.write_message(json.dumps({"id": call_id, "method": method, "params": params}))
            while True:
                reply = json.loads(await self.socket.read_message())
                if reply.get("id") == call_id:
                    return reply

        reply = self.loop.run_until_complete(exchange())
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page, a promise awaited."""
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        # Asked to close, Chromium removes the folder of its singleton socket in /tmp (org.chromium.Chromium.*);
        # on SIGTERM it leaves it behind, so the signal is only for a browser that cannot be asked
        asked = False
        if getattr(self, "socket", None) is not None:
            with contextlib.suppress(Exception):  # it may close the connection before it answers
                self.call("Browser.close")
            asked = True
            self.socket.close()
        try:
            self.process.wait(timeout=20 if asked else 0)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            self.process.wait(timeout=20)
        self.loop.close()
        shutil.rmtree(self.profile, ignore_errors=True)


def _wait_for(evaluate, expression: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not evaluate(f"!!({expression})"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout_s:.0f} s for {expression}")
        time.sleep(0.1)


@contextlib.contextmanager
def _lab_devtools(port: int, notebook: str):
    """Open a served notebook and run its cells in Chromium driven by `_DevTools`; yields its `evaluate`."""
    chrome = _DevTools()
    try:
        chrome.call("Page.navigate", url=f"http://{LOOPBACK}:{port}/lab/tree/notebooks/{notebook}?token={TOKEN}")
        panel = "[...window.jupyterapp.shell.widgets('main')].find((w) => w.sessionContext)"
        _wait_for(chrome.evaluate, f"window.jupyterapp && {panel}?.sessionContext.session?.kernel", 90)
        chrome.evaluate(f"window.jupyterapp.shell.activateById({panel}.id);"
                        " window.jupyterapp.commands.execute('notebook:run-all-cells'); true")
        yield chrome.evaluate
    finally:
        chrome.close()


@contextlib.contextmanager
def _lab_playwright(port: int, notebook: str):
    """The same through playwright (as tests/viz/test_browser.py): every websocket frame also goes to its driver."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            run_all_cells(page, port, notebook)
            yield page.evaluate
        finally:
            browser.close()


@contextlib.contextmanager
def _served_notebook(code: str):
    """JupyterLab (`serve_notebook`) over a notebook of one cell of `code`; yields (port, notebook name). Its folder,
    with JupyterLab's settings, runtime files and log, is a temporary one removed once the server has stopped."""
    import nbformat

    with tempfile.TemporaryDirectory(prefix="rmt_explorer_lab_") as folder:
        notebook = Path(folder) / "explorer_bench.ipynb"
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)]), notebook)
        with serve_notebook(Path(folder), notebook) as port:
            yield port, notebook.name


def benchmark_widget(positions: int = 522, heads: int = 12, layers: int = 2, segments: int = 3,
                     repeats: int = 10, samples: int = 10, grid_jumps: int = 4,
                     driver: str = "devtools") -> dict[str, list[float]]:
    """Print and return ms from a choice to its frame, with the explorer widget in JupyterLab: a block the view
    does not hold waits for the kernel's maps (encode, websocket, decode); a held one draws at once. Samples 2
    and up are each visited once by far jumps, so nothing of theirs was prefetched: samples 2 to `samples` - 1
    with the mean shown, then `grid_jumps` more in grid mode. The grid paints at once with a placeholder for each
    head it lacks: its rows give the first paint, the first head's map and the whole grid. `driver`: "devtools"
    (`_DevTools`) or "playwright"."""
    code = (f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n"
            "from tests.viz.synthetic import synthetic_trace\nfrom rmt_lab.viz import AttentionExplorer\n"
            f"explorer = AttentionExplorer(synthetic_trace(n_positions={positions}, n_mem=10, layers={layers}, "
            f"heads={heads}, map_segments=tuple(range({segments})), n_segments={max(segments, 4)}, "
            f"batch={samples + grid_jumps}), "
            "layer=0)\n"
            "explorer.widget")
    times: dict[str, list[float]] = {}
    lab = {"devtools": _lab_devtools, "playwright": _lab_playwright}[driver]
    with _served_notebook(code) as (port, notebook):
        t0 = time.perf_counter()
        with lab(port, notebook) as evaluate:
            _wait_for(evaluate, "document.querySelector('.rmt-explorer[data-drawn]')", 300)
            times["run cell to first map (kernel start, trace, map)"] = [(time.perf_counter() - t0) * 1000]
            evaluate(_WIDGET_TIMER)

            def choose(label, name, value, state, moments=None):
                """Choose; record under `label` ms to the frame of the whole view, or under `label: text` ms to each
                moment in `moments` ({moment: text}, see _WIDGET_TIMER)."""
                expect = "{sample}/{segment}/{layer}/{head}".format(**state)
                at = evaluate(f"window.__choose({json.dumps(name)}, {json.dumps(str(value))}, {json.dumps(expect)})")
                if label:
                    for moment, text in (moments or {"drawn": None}).items():
                        times.setdefault(f"{label}: {text}" if text else label, []).append(at[moment])

            grid = {"painted": "first paint", "tile": "first head drawn", "drawn": f"complete ({heads} heads)"}

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
            far = segments - 1  # from the first segment to the last and back: not a neighbour when segments > 2
            for b in range(2, samples):  # far jumps: samples and segments nothing was prefetched from
                looked = b % 2 == 0
                when = "after 1.5 s looking" if looked else "right after the previous change"
                time.sleep(1.5 if looked else 0.0)
                state["sample"] = b
                choose(f"far jump, cold: sample change, {when}", "sample", b, state)
                time.sleep(1.5)
                state["segment"] = far if state["segment"] == 0 else 0
                choose("far jump, cold: segment 2+ away, after 1.5 s looking", "segment", state["segment"], state)
                state["head"] = "grid"  # every head of a block the kernel has just begun to send
                choose("all heads (grid) right after a far jump", "head", "grid", state, grid)
                state["head"] = "mean"
                choose(None, "head", "mean", state)
            state["head"] = "grid"
            choose(None, "head", "grid", state)
            for b in range(samples, samples + grid_jumps):  # in grid mode, to a sample nothing was prefetched from
                time.sleep(1.5)
                state["sample"] = b
                choose("grid: far jump to another sample, after 1.5 s looking", "sample", b, state, grid)
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
    parser.add_argument("--samples", type=int, default=10,
                        help="samples in the JupyterLab trace (far jumps: 2 and up)")
    parser.add_argument("--driver", choices=("devtools", "playwright"), default="devtools",
                        help="how the JupyterLab rows drive Chromium (see _DevTools)")
    parser.add_argument("--no-jupyterlab", action="store_true", help="only the standalone page")
    args = parser.parse_args()
    benchmark_explorer(args.positions, args.heads, args.layers, args.segments, args.repeats, args.timeline_segments)
    if not args.no_jupyterlab:
        print(f"\nthe widget in JupyterLab (kernel on this machine; Chromium driven by {args.driver}):")
        benchmark_widget(args.positions, args.heads, args.layers, args.segments, args.repeats // 2, args.samples,
                         driver=args.driver)


if __name__ == "__main__":
    main()
