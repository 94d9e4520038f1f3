"""The attention explorer's data, without a browser: the quantized maps and blocks (error bound, size, labels),
the kernel's answers to the browser (the maps asked for, one message each, from floats it cuts once), the
figures of the current view and the standalone page's contents."""

import base64
import json
import re

import numpy as np
import pytest

from rmt_lab.viz import AttentionExplorer
from rmt_lab.viz.explorer import (
    ESM,
    KERNEL_BLOCKS,
    dequantize,
    encode_block,
    encode_timeline,
    quantization_bound,
    quantize,
    record_command,
)
from tests.viz.helpers import FakeTrace
from tests.viz.synthetic import synthetic_trace

PNG = b"\x89PNG\r\n\x1a\n"


def _rows(rng, k, n, sharpness):
    logits = rng.standard_normal((k, n, n)) * sharpness
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("sharpness", [0.1, 3.0, 12.0])  # near-uniform, peaked, nearly one-hot rows
def test_quantization_stays_within_its_bound(sharpness):
    maps = _rows(np.random.default_rng(1), 3, 200, sharpness)
    q, scales = quantize(maps)
    assert q.dtype == np.uint8 and q.shape == maps.shape and scales.shape == (3,)
    back = dequantize(q, scales)
    bound = quantization_bound(maps, scales[:, None, None])
    assert np.all(np.abs(back - maps) <= bound * (1 + 1e-5) + 1e-9)
    # at most 0.4% of a map's maximum anywhere, and the bound is not loose by orders of magnitude
    assert np.all(bound <= scales[:, None, None] * 0.0040)
    assert np.abs(back - maps).max() > 0.1 * bound.max()
    assert np.all(q.reshape(3, -1).max(1) == 255)  # each map's maximum uses the top level


def test_small_weights_survive_a_strong_maximum():
    # 522 positions of mostly ~1/522 weights under one weight of 1.0: linear 8-bit levels of the maximum round
    # nearly all of them to 0 (relative error 1); the sqrt domain keeps them within about 5%
    maps = _rows(np.random.default_rng(2), 1, 522, 1.0)
    maps[0, 0, 0] = 1.0
    small = maps < 0.01
    relative = lambda back: np.median(np.abs(back[small] - maps[small]) / maps[small])  # noqa: E731
    assert relative(dequantize(*quantize(maps))) < 0.07
    assert relative(np.rint(maps * 255) / 255) > 0.9


def test_all_zero_map_decodes_to_zeros():
    q, scales = quantize(np.zeros((1, 4, 4), dtype=np.float32))
    assert not q.any() and np.all(dequantize(q, scales) == 0)


def test_block_holds_the_mean_then_every_head():
    maps = _rows(np.random.default_rng(3), 4, 30, 2.0)
    q, scales = encode_block(maps)
    assert q.shape == (5, 30, 30) and q.nbytes == 5 * 30 * 30
    np.testing.assert_allclose(dequantize(q[:1], scales[:1])[0], maps.mean(0),
                               atol=float(quantization_bound(maps.mean(0), scales[0]).max()))
    np.testing.assert_array_equal(q[1:], quantize(maps)[0])


def test_block_header_labels_facts_and_size():
    explorer = AttentionExplorer(synthetic_trace(n_positions=60, n_mem=4, heads=3, layers=2, batch=2))
    header, data = explorer.block(sample=0, segment=0, layer=1)
    assert header["n"] == 60 and len(data) == (3 + 1) * 60 * 60
    assert header["labels"][:6] == ["[CLS]", "[mem 0]", "[mem 1]", "[mem 2]", "[mem 3]", "[SEP]"]
    assert header["facts"] == [6 + 3, 6 + 4]  # sample 0's fact tokens, in the map's positions
    assert explorer.block(sample=1, segment=0, layer=1)[0]["facts"] == []
    q = np.frombuffer(data, np.uint8).reshape(4, 60, 60)
    exact = explorer.trace.pattern(0, 1)[0].numpy()
    back = dequantize(q[1:], np.array(header["scales"][1:], dtype=np.float32))
    assert np.all(np.abs(back - exact) <= quantization_bound(exact, np.array(header["scales"][1:])[:, None, None])
                  * (1 + 1e-5) + 1e-9)


def test_block_drops_padding():
    class Padded(FakeTrace):
        def labels(self, segment, sample=0):
            labels = super().labels(segment, sample)
            return labels[:-3] + ["[PAD]"] * 3 if sample == 1 else labels

        def segment_info(self, segment):
            info = super().segment_info(segment)
            return dict(info, labels=[self.labels(segment, b) for b in range(self.BATCH)])

    explorer = AttentionExplorer(Padded())
    assert explorer.block(0, 0, 1)[0]["n"] == 15
    header, data = explorer.block(1, 0, 1)
    assert header["n"] == 12 and "[PAD]" not in header["labels"] and len(data) == 3 * 12 * 12


def test_kernel_answers_a_need_with_just_the_maps_asked_for(monkeypatch):
    explorer = AttentionExplorer(FakeTrace())
    sent = []
    monkeypatch.setattr(explorer.widget, "send", lambda content, buffers=None: sent.append((content, buffers)))
    explorer._on_msg(explorer.widget, {"type": "need", "sample": 1, "segment": 2, "layer": 1, "maps": ["1"]}, [])
    (header, buffers), = sent
    assert (header["type"], header["sample"], header["segment"], header["layer"]) == ("maps", 1, 2, 1)
    assert header["maps"] == ["1"] and header["heads"] == [0, 1] and len(header["labels"]) == header["n"] == 15
    assert len(buffers) == 1 and len(buffers[0]) == 15 * 15  # one map, not the block
    exact = FakeTrace().pattern(2, 1)[1, 1]
    back = dequantize(np.frombuffer(buffers[0], np.uint8).reshape(1, 15, 15), np.float32(header["scales"]))[0]
    assert np.all(np.abs(back - exact) <= quantization_bound(exact, header["scales"][0]) * (1 + 1e-5) + 1e-9)

    # several maps (here none named: all of them): one message a map, so the browser can colour each as it comes
    explorer._on_msg(explorer.widget, {"type": "need", "sample": 1, "segment": 2, "layer": 1}, [])
    assert [h["maps"] for h, _b in sent[1:]] == [["mean"], ["0"], ["1"]]
    assert all(len(b) == 1 and len(b[0]) == 15 * 15 for _h, b in sent[1:])
    del sent[:]
    explorer._on_msg(explorer.widget, {"type": "need", "sample": 0, "segment": 9, "layer": 0, "maps": ["mean"]}, [])
    assert "kept no full maps" in sent[-1][0]["error"] and sent[-1][0]["maps"] == ["mean"] and sent[-1][1] is None
    explorer._on_msg(explorer.widget, {"type": "need", "sample": 0, "segment": 0, "layer": 0, "maps": ["7", "1"]}, [])
    (error, _none), (header, buffers) = sent[-2:]  # a head the segment lacks fails alone
    assert "head '7' has no map in segment 0; choose 'mean' or one of [0, 1]" in error["error"]
    assert error["maps"] == ["7"] and header["maps"] == ["1"] and len(buffers[0]) == 15 * 15


def test_kernel_answers_any_failure_with_its_reason(monkeypatch):
    """Not only a map the trace lacks: a failed read would otherwise leave the handler for the kernel's log, and the
    browser would wait for the map forever."""
    explorer = AttentionExplorer(FakeTrace())
    sent = []
    monkeypatch.setattr(explorer.widget, "send", lambda content, buffers=None: sent.append((content, buffers)))
    explorer._on_msg(explorer.widget, {"type": "need", "sample": 0, "segment": 9, "layer": 0, "maps": ["mean"]}, [])
    assert sent[0][0]["error"].startswith("segment 9 kept no full maps")  # a KeyError's message, not its repr
    del sent[:]

    def unreadable(segment, layer):
        raise OSError(f"maps of segment {segment} are unreadable")

    monkeypatch.setattr(explorer.trace, "pattern", unreadable)
    explorer._on_msg(explorer.widget, {"type": "need", "sample": 0, "segment": 2, "layer": 1, "maps": ["mean", "1"]},
                     [])
    assert [(c["maps"], c["error"], b) for c, b in sent] == [
        (["mean"], "OSError: maps of segment 2 are unreadable", None),
        (["1"], "OSError: maps of segment 2 are unreadable", None)]


def test_maps_one_at_a_time_equal_the_rows_of_the_block():
    explorer = AttentionExplorer(synthetic_trace(n_positions=60, n_mem=4, heads=3, layers=2, batch=2))
    header, data = explorer.block(1, 0, 1)
    rows = np.frombuffer(data, np.uint8).reshape(4, 60 * 60)
    for k, name in enumerate(["mean", 0, "1", 2]):  # a head by number or by text
        one, buffers = explorer.maps(1, 0, 1, [name])
        assert one["maps"] == [str(name)] and buffers[0] == rows[k].tobytes()
        assert one["scales"] == [header["scales"][k]]
        assert {k: one[k] for k in ("n", "heads", "labels", "facts")} == \
            {k: header[k] for k in ("n", "heads", "labels", "facts")}
    both, buffers = explorer.maps(1, 0, 1, ["2", "mean"])  # in the order asked
    assert both["maps"] == ["2", "mean"] and buffers == [rows[3].tobytes(), rows[0].tobytes()]


def test_kernel_cuts_a_block_from_the_trace_once(monkeypatch):
    trace = FakeTrace()
    explorer = AttentionExplorer(trace)
    loads = []
    pattern = trace.pattern
    monkeypatch.setattr(trace, "pattern", lambda segment, layer: loads.append((segment, layer))
                        or pattern(segment, layer))
    for name in ("mean", "0", "1"):  # the browser fills a block in one map at a time
        explorer.maps(0, 1, 1, [name])
    explorer.view()
    assert loads == [(1, 1), (0, 1)]  # the view's block (segment 0, layer 1) and the one asked for
    for segment in (2, 3, 0):  # held: the most recent KERNEL_BLOCKS, so memory stays bounded
        explorer.maps(0, segment, 1, ["mean"])
    explorer.maps(0, 1, 1, ["0"])
    assert loads[-1] == (1, 1) and len(explorer._held) == KERNEL_BLOCKS
    for head in ("mean", "1"):  # view() hands out the held floats
        explorer.widget.head = head
        with pytest.raises(ValueError, match="read-only"):
            explorer.view().attention[0, 0] = 1.0


def test_meta_segments_facts_and_timeline():
    explorer = AttentionExplorer(FakeTrace())
    meta = explorer.widget.meta
    assert meta["segments"] == [0, 1, 2, 3] and meta["layers"] == [0, 1] and meta["heads"] == [0, 1]
    assert meta["fact_segments"] == {"0": [0, 2], "1": [1]}
    assert len(meta["cmap"]) == 256 and meta["cmap"][0] != meta["cmap"][-1]
    timeline = meta["timeline"]
    assert timeline["n_segments"] == 4 and timeline["samples"]["0"]["facts"] == [0, 2]
    assert timeline["lanes"] == ["read", "write", "retain", "write precision"] and timeline["layers"] == [0, 1]
    levels = np.frombuffer(base64.b64decode(timeline["samples"]["0"]["data"]), np.uint8).reshape(4, 2, 4)
    # FakeTrace's strong layer 1 writes facts precisely (0.85 / 0.9) and retains on noise (0.9)
    np.testing.assert_array_equal(levels[:, 1], np.rint(254 * np.array(
        [[0.1] * 4, [0.9, 0.2, 0.9, 0.2], [0.1, 0.9, 0.1, 0.9], [0.85 / 0.9, 0.25, 0.85 / 0.9, 0.25]])))


def test_timeline_levels_mark_missing_values():
    q = encode_timeline(np.array([0.0, 0.5, 1.0, 1.7, -0.1, np.nan, 0.1234]))
    assert q.dtype == np.uint8 and q.tolist() == [0, 127, 254, 254, 0, 255, 31]
    assert abs(31 / 254 - 0.1234) <= 0.5 / 254


def test_timeline_covers_every_segment_of_a_long_trace():
    # 4,096 segments of summaries (2,048,000 tokens at 499 a segment), maps of three; a no-fact segment's
    # write precision (0 / 0) is no value, not an infinite one
    trace = synthetic_trace(n_positions=40, n_mem=4, heads=2, layers=2, batch=2, map_segments=(0, 9, 4095),
                            n_segments=4096)
    summaries = trace.summaries
    rows = (summaries["segment"] == 7) & (summaries["metric"] == "write_precision")
    summaries.loc[rows, "value"] = np.where(summaries.loc[rows, "head"] == 0, np.inf, np.nan)
    timeline = AttentionExplorer(trace).widget.meta["timeline"]
    assert timeline["n_segments"] == 4096 and timeline["samples"]["1"]["facts"] == [1]
    levels = np.frombuffer(base64.b64decode(timeline["samples"]["0"]["data"]), np.uint8).reshape(4, 2, 4096)
    assert levels.nbytes == 4 * 2 * 4096 and levels[3, :, 7].tolist() == [255, 255]
    assert (levels[:, :, 8] < 255).all()
    expect = summaries[(summaries["sample"] == 0) & (summaries["layer"] == 1) & (summaries["metric"] == "retain")]
    expect = expect.groupby("segment")["value"].mean().to_numpy()
    assert np.abs(levels[2, 1] / 254 - expect).max() <= 0.5 / 254 + 1e-6


def test_record_command_keeps_the_segment_map():
    trace = synthetic_trace(n_positions=40, n_mem=4, heads=2, layers=2, map_segments=(0,), n_segments=6)
    trace.index["config"] = {"segments": "facts,last", "layers": [1], "heads": None, "map_dtype": "float16"}
    trace.index["segment_size"] = 35
    command = record_command(trace, 4)
    assert command == ("rmt-lab trace --backbone synthetic --num-mem 4 --segment-size 35 --task TASK --seed SEED "
                       "--segments 6 --samples 1 --maps facts,last,4 --layers 1 --map-dtype float16 --out TRACE_FOLDER")
    # the browser fills in the clicked segment
    assert "--maps 'facts,last,{segment}'" in AttentionExplorer(trace).widget.meta["record_command"]
    given = "rmt-lab trace --checkpoint runs/x/stage-7 --task reasoning --segments 6 --out 'my trace'"
    assert record_command(trace, 4, given) == given + " --maps facts,last,4 --overwrite"
    assert record_command(trace, 2, "rmt-lab trace --maps=last --out t --overwrite") == \
        "rmt-lab trace --maps facts,last,2 --out t --overwrite"
    meta = AttentionExplorer(trace, recorded_with=given).widget.meta
    assert meta["record_command"].startswith("rmt-lab trace --checkpoint runs/x/stage-7")


def test_explorer_checks_its_starting_view():
    with pytest.raises(ValueError, match="no full attention maps"):
        AttentionExplorer(FakeTrace(segments=[]))
    with pytest.raises(ValueError, match="layer 5 has no map"):
        AttentionExplorer(FakeTrace(), layer=5)


def test_view_follows_the_widget_and_its_zoom_window(tmp_path):
    explorer = AttentionExplorer(FakeTrace(), segment=2, head=1)
    view = explorer.view()
    assert (view.segment, view.layer, view.head, view.attention.shape) == (2, 1, 1, (15, 15))
    np.testing.assert_allclose(view.attention, FakeTrace().pattern(2, 1)[0, 1])  # exact, not quantized
    assert view.fact_cols == (6 + 1, 6 + 2)  # sample 0's facts at content 17, 18 = segment 2 offsets 1, 2
    explorer.widget.window = [1, 5, 5, 9]  # what the browser reports after zooming to the memory rows
    explorer.widget.head = "mean"
    view = explorer.view()
    assert view.row_labels == ["[mem 0]", "[mem 1]", "[mem 2]", "[mem 3]"]
    assert view.col_labels == ["[SEP]", "w2_0", "w2_1", "w2_2"] and view.fact_cols == (2, 3)
    np.testing.assert_allclose(view.attention, FakeTrace().pattern(2, 1)[0].mean(0)[1:5, 5:9])


def test_explorer_exports_png_svg_and_grid(tmp_path):
    explorer = AttentionExplorer(FakeTrace())
    assert explorer.save(tmp_path / "view.png").read_bytes()[:8] == PNG
    assert "<svg" in explorer.save(tmp_path / "view.svg").read_text()
    explorer.widget.head = "grid"
    fig = explorer.figure()
    assert [ax.get_title() for ax in fig.axes if ax.get_visible() and ax.get_title()] == ["head 0", "head 1"]
    with pytest.raises(ValueError, match="png or .svg"):
        explorer.save(tmp_path / "view.gif")


def _page_data(path):
    text = path.read_text()
    match = re.search(r'<script type="application/json" id="rmt-explorer-data">(.*?)</script>', text, re.S)
    return text, json.loads(match.group(1))


def test_standalone_page_inlines_script_and_blocks(tmp_path):
    explorer = AttentionExplorer(FakeTrace())
    path = explorer.save_html(tmp_path / "explorer.html", segments=[0, 2], layers=[0, 1])
    text, data = _page_data(path)
    assert ESM.read_text() in text
    # nothing to load from anywhere
    assert not re.search(r"(src|href)\s*=|https?://|@import|\bfetch\(|XMLHttpRequest|WebSocket", text)
    assert "default-src 'none'" in text  # and the page forbids it
    blocks = {(b["sample"], b["segment"], b["layer"]): b for b in data["blocks"]}
    assert sorted(blocks) == [(0, 0, 0), (0, 0, 1), (0, 2, 0), (0, 2, 1)]
    header, raw = explorer.block(0, 2, 1)
    assert base64.b64decode(blocks[(0, 2, 1)]["data"]) == raw
    assert blocks[(0, 2, 1)]["labels"] == header["labels"]
    assert data["state"]["meta"]["segments"] == [0, 2] and data["state"]["segment"] == 0


def test_standalone_page_escapes_token_text(tmp_path):
    class Hostile(FakeTrace):
        def labels(self, segment, sample=0):
            labels = super().labels(segment, sample)
            labels[7] = "</script><script>alert(1)</script>"
            return labels

    path = AttentionExplorer(Hostile()).save_html(tmp_path / "explorer.html")
    text, data = _page_data(path)
    assert data["blocks"][0]["labels"][7] == "</script><script>alert(1)</script>"
    assert text.count("</script>") == 2  # the data element's and the module's own
