"""The standalone page of the attention explorer (`save_html`) in headless Chromium, opened from a file:// URL
with no kernel: hovering a known cell reads out its tokens and its weight (within the quantization bound),
a click pins the row and lists its top keys, the wheel zooms, a drag pans, the head grid draws, the
timeline of a 4,096-segment trace zooms to single segments, reads out their summaries and opens a kept map
or names the command that records one, and the page makes no request at all (every request is intercepted
and counted). Over a scripted model that answers only when the test delivers the kernel's reply, the view's
side of the protocol: it asks for just the maps it draws, merges them into its blocks as they come,
prefetches the rest one map at a time, and paints the grid at once: the heads it holds and a placeholder for
each other head, each filled in as its map comes; a map the kernel cannot send shows why, in its tile or in place
of the map, until choosing the view again brings it.

Needs Debian's chromium (/usr/bin/chromium) and the playwright package, like test_browser.py.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import re

import numpy as np
import pytest

from rmt_lab.viz import AttentionExplorer
from rmt_lab.viz.explorer import ESM, quantization_bound
from tests.viz.synthetic import synthetic_trace
from tests.viz.test_browser import CHROMIUM, CHROMIUM_FLAGS

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None,
                       reason="the playwright package is not installed (pip install -e '.[test]')"),
]

N, HEADS = 60, 3


@pytest.fixture(scope="module")
def trace():
    return synthetic_trace(n_positions=N, n_mem=4, heads=HEADS, layers=2, batch=2)


@pytest.fixture(scope="module")
def page_of(tmp_path_factory, trace):
    """Open a standalone page in Chromium; yields (page, requests made) per call, closing the browser at the end."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)

        def open_page(of=None, own=None, **export):
            """A standalone page of `of` (default: the trace), or `own`, a page that draws when it has data."""
            path = own or AttentionExplorer(of or trace, layer=1).save_html(
                tmp_path_factory.mktemp("page") / "explorer.html", **export)
            page = browser.new_page(viewport={"width": 1200, "height": 1000})
            requests, errors = [], []
            page.route("**/*", lambda route: (requests.append(route.request.url),
                                              route.continue_() if route.request.url == path.as_uri()
                                              else route.abort()))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(path.as_uri())
            page.wait_for_selector(".rmt-explorer[data-drawn]" if own is None else ".rmt-explorer", timeout=20_000)
            return page, requests, errors

        try:
            yield open_page
        finally:
            browser.close()


def _cell_point(page, row, col):
    plot = json.loads(page.get_attribute(".rmt-explorer", "data-plot"))
    box = page.locator("canvas.rmt-overlay").bounding_box()
    cell = plot["size"] / plot["cells"]
    return (box["x"] + plot["x"] + (col - plot["x0"] + 0.5) * cell,
            box["y"] + plot["y"] + (row - plot["y0"] + 0.5) * cell)


def _readout_weight(text):
    return float(re.search(r"weight ([0-9.e+-]+)", text).group(1))


def _printed(exact):  # what 4 significant digits may add to the quantization error
    return 5e-4 * abs(exact) + 1e-12


def test_hover_reads_out_tokens_and_weight(page_of, trace):
    page, requests, errors = page_of()
    page.select_option("select[name=head]", "2")
    page.wait_for_function("document.querySelector('.rmt-explorer').dataset.drawn === '0/0/1/2'")
    row, col = 17, 33  # content tokens s0t11 -> s0t27 (prefix: [CLS], 4 memory slots, [SEP])
    page.mouse.move(*_cell_point(page, row, col))
    text = page.inner_text(".rmt-readout")
    assert text.startswith(f'query {row} "s0t11" → key {col} "s0t27"'), text
    assert "segment 0 · layer 1 · head 2 · sample 0" in text
    exact = float(trace.pattern(0, 1)[0, 2, row, col])
    scale = float(trace.pattern(0, 1)[0, 2].max())
    assert abs(_readout_weight(text) - exact) <= quantization_bound(exact, scale) + _printed(exact)

    page.select_option("select[name=head]", "mean")
    page.mouse.move(*_cell_point(page, 2, 0))
    text = page.inner_text(".rmt-readout")
    exact = float(trace.pattern(0, 1)[0, :, 2, 0].mean())
    assert text.startswith('query 2 "[mem 1]" → key 0 "[CLS]"') and "mean of heads" in text, text
    scale = float(trace.pattern(0, 1)[0].mean(0).max())
    assert abs(_readout_weight(text) - exact) <= quantization_bound(exact, scale) + _printed(exact)
    assert not errors
    assert requests == [page.url]  # the page itself and nothing else
    page.close()


def test_click_pins_the_row_and_lists_its_top_keys(page_of, trace):
    page, _requests, errors = page_of()
    page.select_option("select[name=head]", "0")
    page.mouse.click(*_cell_point(page, 9, 9))
    listed = page.locator(".rmt-topkeys tr td:first-child").all_inner_texts()
    expected = np.argsort(-trace.pattern(0, 1)[0, 0, 9].numpy(), kind="stable")[:3]
    assert [int(t.split()[0]) for t in listed[:3]] == expected.tolist()
    assert "query 9 s0t3" in page.inner_text(".rmt-pinned")
    assert not errors
    page.close()


def test_wheel_zooms_and_labels_every_visible_token(page_of):
    page, _requests, errors = page_of()
    before = json.loads(page.get_attribute(".rmt-explorer", "data-plot"))
    assert before["cells"] == N
    x, y = _cell_point(page, 30, 30)
    page.mouse.move(x, y)
    for _ in range(5):
        page.mouse.wheel(0, -300)
    page.wait_for_function(f"JSON.parse(document.querySelector('.rmt-explorer').dataset.plot).cells < {N / 3}")
    after = json.loads(page.get_attribute(".rmt-explorer", "data-plot"))
    assert after["x0"] < 30 < after["x0"] + after["cells"] and after["y0"] < 30 < after["y0"] + after["cells"]
    page.mouse.move(x, y)
    assert page.inner_text(".rmt-readout").startswith('query 30 "s0t24" → key 30 "s0t24"')  # same cell after zoom
    page.click("button.rmt-memory")
    mem = json.loads(page.get_attribute(".rmt-explorer", "data-plot"))
    assert (mem["x0"], mem["y0"], mem["cells"]) == (0, 0, 6)  # [CLS], the 4 slots, [SEP]
    assert not errors
    page.close()


def test_grid_segment_and_layer_changes_draw_from_inlined_blocks(page_of):
    page, requests, errors = page_of(segments=[0, 1], layers=[0, 1], samples=[0, 1])
    assert page.locator("select[name=segment] option").all_inner_texts() == ["0 (fact)", "1"]  # sample 0
    for name, value, drawn in (("head", "grid", "0/0/1/grid"), ("segment", "1", "0/1/1/grid"),
                               ("layer", "0", "0/1/0/grid"), ("sample", "1", "1/1/0/grid")):
        page.select_option(f"select[name={name}]", value)
        page.wait_for_function(f"document.querySelector('.rmt-explorer').dataset.drawn === '{drawn}'",
                               timeout=5_000)
    assert page.locator("select[name=segment] option").all_inner_texts() == ["0", "1 (fact)"]  # sample 1
    page.mouse.move(*_cell_point(page, 7, 8))  # the first tile: head 0
    assert "head 0 · sample 1" in page.inner_text(".rmt-readout")
    assert not errors and requests == [page.url]
    page.close()


def _plot(page):
    return json.loads(page.get_attribute(".rmt-explorer", "data-plot"))


def _cell_under(page, x, y):
    page.mouse.move(x, y)
    match = re.match(r'query (\d+) "([^"]*)" → key (\d+) "([^"]*)"', page.inner_text(".rmt-readout"))
    return int(match.group(1)), match.group(2), int(match.group(3)), match.group(4)


def test_drag_pans_and_hover_names_the_cell_under_the_cursor(page_of):
    page, requests, errors = page_of()
    x, y = _cell_point(page, 30, 30)
    page.mouse.move(x, y)
    for _ in range(5):
        page.mouse.wheel(0, -300)
    page.wait_for_function(f"JSON.parse(document.querySelector('.rmt-explorer').dataset.plot).cells < {N / 3}")
    before = _plot(page)
    cell = before["size"] / before["cells"]
    at = _cell_point(page, 30, 30)
    row, _q, col, _k = _cell_under(page, *at)
    # drag the map 3 cells left and 2 cells up: the cells under a fixed point move 3 right and 2 down
    page.mouse.down()
    page.mouse.move(at[0] - 3 * cell, at[1] - 2 * cell, steps=6)
    page.mouse.up()
    after = _plot(page)
    assert after["cells"] == before["cells"]
    assert abs(after["x0"] - (before["x0"] + 3)) < 0.05 and abs(after["y0"] - (before["y0"] + 2)) < 0.05
    assert _cell_under(page, *at) == (row + 2, f"s0t{row + 2 - 6}", col + 3, f"s0t{col + 3 - 6}")
    assert page.locator(".rmt-topkeys").count() == 0  # the drag's mouseup pinned no row
    assert not errors and requests == [page.url]
    page.close()


@pytest.fixture(scope="module")
def long_trace():
    """4,096 segments of summaries (2,048,000 tokens at 499 a segment), full maps of segments 0 and 2000."""
    return synthetic_trace(n_positions=N, n_mem=4, heads=HEADS, layers=2, batch=2, map_segments=(0, 2000),
                           n_segments=4096)


def _timeline(page):
    return json.loads(page.get_attribute(".rmt-explorer", "data-timeline"))


def _segment_point(page, segment):
    t = _timeline(page)
    box = page.locator("canvas.rmt-timeline").bounding_box()
    return box["x"] + t["x"] + (segment + 0.5 - t["s0"]) / t["span"] * t["width"], box["y"] + t["top"] + 8


def test_timeline_reaches_single_segments_of_a_long_trace(page_of, long_trace):
    page, requests, errors = page_of(long_trace, segments=[0, 2000])
    assert _timeline(page)["n"] == 4096 and _timeline(page)["span"] == 4096
    page.mouse.move(*_segment_point(page, 2001))
    for _ in range(12):
        page.mouse.wheel(0, -400)
    page.wait_for_function("JSON.parse(document.querySelector('.rmt-explorer').dataset.timeline).span <= 40")
    t = _timeline(page)
    assert t["s0"] <= 2001 < t["s0"] + t["span"]

    page.mouse.move(*_segment_point(page, 2001))  # its summaries, as the page holds them (levels of 1/254)
    text = page.inner_text(".rmt-timeline-note")
    assert text.startswith("segment 2001: read ") and text.endswith("no map kept"), text
    s = long_trace.summaries
    for lane, metric in (("read", "read_content"), ("write", "write_content"), ("retain", "retain"),
                         ("write precision", "write_precision")):
        exact = s[(s["sample"] == 0) & (s["segment"] == 2001) & (s["layer"] == 1) & (s["metric"] == metric)]
        shown = float(re.search(rf"{lane} ([0-9.]+)", text).group(1))
        assert abs(shown - exact["value"].mean()) <= 0.5 / 254 + 5e-4, (lane, text)

    page.mouse.click(*_segment_point(page, 2001))  # no map kept: the command that keeps it, the map stays
    text = page.inner_text(".rmt-timeline-note")
    assert "segment 2001 kept no full map" in text and "rmt-lab trace " in text and "--maps '2001'" in text, text
    assert _timeline(page)["picked"] == 2001 and page.get_attribute(".rmt-explorer", "data-drawn") == "0/0/1/mean"

    page.mouse.click(*_segment_point(page, 2000))  # a kept map opens
    page.wait_for_function("document.querySelector('.rmt-explorer').dataset.drawn === '0/2000/1/mean'")
    assert page.input_value("select[name=segment]") == "2000" and _timeline(page)["picked"] == 2000

    before = _timeline(page)  # a drag pans the timeline by the segments it moves over
    x, y = _segment_point(page, 2000)
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 120, y, steps=6)
    page.mouse.up()
    after = _timeline(page)
    assert abs(after["s0"] - (before["s0"] - 120 / before["width"] * before["span"])) < 0.05
    assert after["span"] == before["span"] and after["picked"] == 2000  # a drag picks nothing
    page.locator("canvas.rmt-timeline").dblclick()
    assert _timeline(page)["span"] == 4096
    assert not errors and requests == [page.url]
    page.close()


# explorer.js with a model that records what the view asks for and answers only when the test delivers the
# kernel's reply, so each step of the protocol can be checked: what is asked, when, and what is drawn. Text drawn
# on the map's canvas is recorded too (window.__texts: [text, x, y], CSS pixels), as a canvas cannot be read back.
_HARNESS = """<!DOCTYPE html><html><head><meta charset="utf-8"></head><body><div id="app"></div>
<script type="module">
window.__texts = [];
const fillText = CanvasRenderingContext2D.prototype.fillText;
CanvasRenderingContext2D.prototype.fillText = function (text, x, y, ...rest) {{
  if (this.canvas.classList.contains("rmt-heatmap")) window.__texts.push([String(text), x, y]);
  return fillText.call(this, text, x, y, ...rest);
}};
{esm}
const state = {state}, listeners = {{}};
window.__sent = [];
const model = {{
  get: (name) => state[name],
  set: (name, value) => {{ state[name] = value; }},
  save_changes: () => {{}},
  on: (event, fn) => {{ (listeners[event] = listeners[event] || []).push(fn); }},
  send: (msg) => window.__sent.push(msg),
}};
window.__base64Slice = base64Slice;
window.__deliver = (header, data) =>
  (listeners["msg:custom"] || []).forEach((fn) => fn(header, data.map((b) => new DataView(base64Bytes(b).buffer))));
render({{ model, el: document.getElementById("app") }});
</script></body></html>
"""


@pytest.fixture
def harness(page_of, trace, tmp_path):
    """A page running explorer.js over a scripted model; yields (page, the explorer whose `maps` answer it)."""
    explorer = AttentionExplorer(trace, layer=1)
    w = explorer.widget
    state = {"meta": w.meta, "sample": w.sample, "segment": w.segment, "layer": w.layer, "head": w.head,
             "window": [], "picked": w.picked}
    path = tmp_path / "harness.html"
    path.write_text(_HARNESS.format(esm=ESM.read_text(encoding="utf-8"), state=json.dumps(state)), encoding="utf-8")
    page, _requests, errors = page_of(own=path)
    yield page, explorer
    assert not errors
    page.close()


def _sent(page):
    return page.evaluate("window.__sent")


def _deliver(page, explorer, need):
    header, buffers = explorer.maps(need["sample"], need["segment"], need["layer"], need["maps"])
    page.evaluate("([h, d]) => window.__deliver(h, d)", [header, [base64.b64encode(b).decode() for b in buffers]])


def _drawn(page):
    return page.get_attribute(".rmt-explorer", "data-drawn")


def _need(segment, layer, maps, sample=0):
    return {"type": "need", "sample": sample, "segment": segment, "layer": layer, "maps": maps}


def test_view_asks_for_the_maps_it_draws_then_prefetches_one_map_at_a_time(harness, trace):
    page, explorer = harness
    assert _sent(page) == [_need(0, 1, ["mean"])] and _drawn(page) is None  # only the shown map, not the block
    assert page.inner_text(".rmt-note") == "loading…"
    _deliver(page, explorer, _sent(page)[0])
    assert _drawn(page) == "0/0/1/mean"
    # then, while the user looks, the rest of the shown block, one map a request and the next only once it came
    page.wait_for_function("window.__sent.length === 2")
    page.wait_for_timeout(300)
    assert _sent(page)[1:] == [_need(0, 1, ["0"])]

    page.select_option("select[name=head]", "2")  # a head not here yet: asked for at once, alone
    assert _sent(page)[2:] == [_need(0, 1, ["2"])] and _drawn(page) == "0/0/1/mean"  # the last frame stays
    _deliver(page, explorer, _sent(page)[2])
    assert _drawn(page) == "0/0/1/2"
    page.mouse.move(*_cell_point(page, 17, 33))  # the merged map reads out within the quantization bound
    exact = float(trace.pattern(0, 1)[0, 2, 17, 33])
    scale = float(trace.pattern(0, 1)[0, 2].max())
    assert abs(_readout_weight(page.inner_text(".rmt-readout")) - exact) <= (quantization_bound(exact, scale)
                                                                             + _printed(exact))

    expected = [_need(0, 1, ["1"]),  # the shown block's last map
                _need(1, 1, ["2"]), _need(0, 0, ["2"]),  # the neighbours' shown head (next segment, other layer)
                _need(1, 1, ["mean"]), _need(1, 1, ["0"])]  # then the neighbours' other maps
    _deliver(page, explorer, _sent(page)[1])
    for k, need in enumerate(expected):
        page.wait_for_function(f"window.__sent.length === {4 + k}")
        assert _sent(page)[-1] == need
        _deliver(page, explorer, need)

    page.select_option("select[name=segment]", "1")  # prefetched: drawn at once, its map not asked for again
    assert _drawn(page) == "0/1/1/2"
    assert not [n for n in _sent(page)[3 + len(expected):] if n["segment"] == 1 and "2" in n["maps"]]


def test_grid_asks_for_the_heads_it_lacks_in_one_need(harness):
    page, explorer = harness
    _deliver(page, explorer, _sent(page)[0])  # the mean
    page.wait_for_function("window.__sent.length === 2")  # head 0, prefetched
    page.select_option("select[name=head]", "grid")
    assert _sent(page)[2:] == [_need(0, 1, ["1", "2"])]  # head 0 is on its way already
    for need in _sent(page)[1:]:
        _deliver(page, explorer, need)
    assert _drawn(page) == "0/0/1/grid"
    page.mouse.move(*_cell_point(page, 7, 8))
    assert "head 0 · sample 0" in page.inner_text(".rmt-readout")


def _painted(page):
    """The view of the last frame and the heads it shows as placeholders."""
    return (page.get_attribute(".rmt-explorer", "data-painted"),
            json.loads(page.get_attribute(".rmt-explorer", "data-placeholders")))


_PLACEHOLDER = "236,236,236,255"  # explorer.js, PLACEHOLDER


def _tile_pixels(page):
    """Per grid tile, the canvas pixel just inside its top-left corner, as "r,g,b,a"."""
    return page.evaluate("""() => {
      const canvas = document.querySelector("canvas.rmt-heatmap"), ctx = canvas.getContext("2d");
      const scale = canvas.width / canvas.getBoundingClientRect().width;
      return JSON.parse(document.querySelector(".rmt-explorer").dataset.plot).tiles.map((r) =>
        Array.from(ctx.getImageData(Math.round((r.x + 2) * scale), Math.round((r.y + 2) * scale), 1, 1).data).join());
    }""")


def _hover_tile(page, k):
    tile = _plot(page)["tiles"][k]
    box = page.locator("canvas.rmt-overlay").bounding_box()
    page.mouse.move(box["x"] + tile["x"] + tile["size"] / 2, box["y"] + tile["y"] + tile["size"] / 2)
    return page.inner_text(".rmt-readout")


def test_grid_paints_what_it_holds_at_once_and_fills_in_each_head_as_it_comes(harness):
    page, explorer = harness
    _deliver(page, explorer, _sent(page)[0])  # the mean
    page.wait_for_function("window.__sent.length === 2")  # head 0, prefetched
    _deliver(page, explorer, _sent(page)[1])
    page.wait_for_function("window.__sent.length === 3")  # head 1, prefetched: still on its way
    page.select_option("select[name=head]", "grid")
    # at once: head 0's map, a placeholder for heads 1 and 2, and a need for the head not asked for yet
    assert _sent(page)[3:] == [_need(0, 1, ["2"])]
    assert _painted(page) == ("0/0/1/grid", ["1", "2"]) and _drawn(page) == "0/0/1/mean"
    pixels = _tile_pixels(page)
    assert pixels[0] != _PLACEHOLDER and pixels[1:] == [_PLACEHOLDER] * 2
    assert _hover_tile(page, 2) == "" and "head 0 · sample 0" in _hover_tile(page, 0)
    _deliver(page, explorer, _sent(page)[2])  # head 1: its tile is filled in, head 2 still waits
    assert _painted(page) == ("0/0/1/grid", ["2"]) and _drawn(page) == "0/0/1/mean"
    assert _tile_pixels(page)[1] != _PLACEHOLDER and _tile_pixels(page)[2] == _PLACEHOLDER
    assert "head 1 · sample 0" in _hover_tile(page, 1)
    _deliver(page, explorer, _sent(page)[3])
    assert _painted(page) == ("0/0/1/grid", []) and _drawn(page) == "0/0/1/grid"
    assert _PLACEHOLDER not in _tile_pixels(page) and "head 2 · sample 0" in _hover_tile(page, 2)

    page.select_option("select[name=sample]", "1")  # nothing of the new block here: every tile a placeholder
    need = _sent(page)[-1]
    assert need == _need(0, 1, ["0", "1", "2", "mean"], sample=1)  # the heads first, as the kernel answers in order
    assert _painted(page) == ("1/0/1/grid", ["0", "1", "2"]) and _drawn(page) == "0/0/1/grid"
    assert _tile_pixels(page) == [_PLACEHOLDER] * 3 and _hover_tile(page, 0) == ""
    for k, name in enumerate(need["maps"]):  # one message a map, as the kernel sends them
        _deliver(page, explorer, _need(0, 1, [name], sample=1))
        assert _painted(page) == ("1/0/1/grid", ["0", "1", "2"][k + 1:])
        assert _drawn(page) == ("1/0/1/grid" if name == "mean" else "0/0/1/grid")  # the mean: a pinned row's list
    assert _PLACEHOLDER not in _tile_pixels(page) and "head 2 · sample 1" in _hover_tile(page, 2)


_FAILED = "251,228,220,255"  # explorer.js, FAILED


def _answer(page, explorer, need, monkeypatch):
    """Answer `need` as the kernel does (`_on_msg`, failures included), delivering each message it sends."""
    sent = []
    monkeypatch.setattr(explorer.widget, "send", lambda content, buffers=None: sent.append((content, buffers or [])))
    explorer._on_msg(explorer.widget, need, [])
    for header, buffers in sent:
        page.evaluate("([h, d]) => window.__deliver(h, d)", [header, [base64.b64encode(b).decode() for b in buffers]])


def _text_in(page, r):
    """The text drawn inside the square `r` since window.__texts was last emptied, its lines joined by spaces."""
    return " ".join(t for t, x, y in page.evaluate("window.__texts")
                    if r["x"] <= x < r["x"] + r["size"] and r["y"] <= y < r["y"] + r["size"])


def _failed(page):
    return json.loads(page.get_attribute(".rmt-explorer", "data-failed"))


def test_a_map_the_kernel_cannot_send_shows_why_until_a_later_request_brings_it(harness, monkeypatch):
    page, explorer = harness
    unreadable, real = {"2"}, explorer.maps

    def read(sample, segment, layer, maps=None):  # _on_msg asks for one map at a time
        if maps and maps[0] in unreadable:
            raise OSError(f"[Errno 5] Input/output error: 'maps/segment_{segment}.safetensors'")
        return real(sample, segment, layer, maps)

    monkeypatch.setattr(explorer, "maps", read)
    why = "OSError: [Errno 5] Input/output error: 'maps/segment_0.safetensors'"
    _answer(page, explorer, _sent(page)[0], monkeypatch)  # the mean
    page.wait_for_function("window.__sent.length === 2")  # head 0, prefetched
    page.select_option("select[name=head]", "grid")
    assert _sent(page)[2:] == [_need(0, 1, ["1", "2"])]
    _answer(page, explorer, _sent(page)[1], monkeypatch)
    page.evaluate("window.__texts = []")
    _answer(page, explorer, _sent(page)[2], monkeypatch)  # head 1 comes, head 2 fails

    # head 2's tile says why, on the canvas and in the note; it is no placeholder, and the grid is not drawn whole
    assert _painted(page) == ("0/0/1/grid", []) and _failed(page) == {"2": why} and _drawn(page) == "0/0/1/mean"
    pixels = _tile_pixels(page)
    assert pixels[2] == _FAILED and not {_PLACEHOLDER, _FAILED} & set(pixels[:2])
    assert _text_in(page, _plot(page)["tiles"][2]) == f"could not load this map: {why}"
    assert page.inner_text(".rmt-note") == why and _hover_tile(page, 2) == ""
    page.wait_for_function("window.__sent.length === 4")  # prefetching goes on, without asking for head 2 again
    assert _sent(page)[3] == _need(1, 1, ["0"])

    page.select_option("select[name=head]", "2")  # choosing it again asks again; failing, it shows why in its place
    assert _sent(page)[4:] == [_need(0, 1, ["2"])]
    page.evaluate("window.__texts = []")
    _answer(page, explorer, _sent(page)[4], monkeypatch)
    assert _painted(page) == ("0/0/1/2", []) and _failed(page) == {"2": why} and _drawn(page) == "0/0/1/mean"
    assert _text_in(page, _plot(page)) == f"could not load this map: {why}"
    assert page.inner_text(".rmt-note") == why

    unreadable.clear()  # the next request succeeds: the grid asks for head 2 again and its map replaces the reason
    page.select_option("select[name=head]", "grid")
    assert _sent(page)[5:] == [_need(0, 1, ["2"])]
    assert _painted(page) == ("0/0/1/grid", ["2"]) and _failed(page) == {}  # on its way again
    _answer(page, explorer, _sent(page)[5], monkeypatch)
    assert _painted(page) == ("0/0/1/grid", []) and _failed(page) == {} and _drawn(page) == "0/0/1/grid"
    assert _FAILED not in _tile_pixels(page) and _PLACEHOLDER not in _tile_pixels(page)
    assert "head 2 · sample 0" in _hover_tile(page, 2) and page.inner_text(".rmt-note") == ""


def test_a_slice_of_base64_decodes_to_just_those_bytes(harness):
    """A standalone page decodes one map of an inlined block (base64Slice); at 61 positions the maps start and end
    inside the 3-byte groups of base64."""
    page, _explorer = harness
    data = np.random.default_rng(0).integers(0, 256, 4 * 61 * 61, dtype=np.uint8).tobytes()
    text = base64.b64encode(data).decode()
    for start, length in [(k * 61 * 61, 61 * 61) for k in range(4)] + [(0, 1), (1, 1), (2, 5), (len(data) - 1, 1)]:
        got = page.evaluate("([t, s, n]) => Array.from(window.__base64Slice(t, s, n))", [text, start, length])
        assert bytes(got) == data[start:start + length], (start, length)


def test_standalone_page_answers_each_need_from_its_inlined_blocks(page_of):
    page, requests, errors = page_of(segments=[0, 1], layers=[1])
    page.select_option("select[name=layer]", "1")
    for segment, head in (("1", "2"), ("0", "grid"), ("1", "mean")):
        page.select_option("select[name=segment]", segment)
        page.select_option("select[name=head]", head)
        page.wait_for_function(f"document.querySelector('.rmt-explorer').dataset.drawn === '0/{segment}/1/{head}'")
    assert page.inner_text(".rmt-note") == ""
    assert not errors and requests == [page.url]
    page.close()
