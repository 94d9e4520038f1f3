"""The standalone page of the attention explorer (`save_html`) in headless Chromium, opened from a file:// URL
with no kernel: hovering a known cell reads out its tokens and its weight (within the quantization bound),
a click pins the row and lists its top keys, the wheel zooms, the head grid draws, and the page makes no
request at all (every request is intercepted and counted).

Needs Debian's chromium (/usr/bin/chromium) and the playwright package, like test_browser.py.
"""

from __future__ import annotations

import importlib.util
import json
import re

import numpy as np
import pytest

from rmt_lab.viz import AttentionExplorer
from rmt_lab.viz.explorer import quantization_bound
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

        def open_page(**export):
            path = AttentionExplorer(trace, layer=1).save_html(tmp_path_factory.mktemp("page") / "explorer.html",
                                                               **export)
            page = browser.new_page(viewport={"width": 1200, "height": 1000})
            requests, errors = [], []
            page.route("**/*", lambda route: (requests.append(route.request.url),
                                              route.continue_() if route.request.url == path.as_uri()
                                              else route.abort()))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(path.as_uri())
            page.wait_for_selector(".rmt-explorer[data-drawn]", timeout=20_000)
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
