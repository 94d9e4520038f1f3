"""Figure 6 and the attention views: the right segments, layers, regions and labels from a trace."""

import numpy as np
import pytest

from rmt_lab.viz import attention_view, memory_operation_panels, plot_attention, plot_memory_operations
from rmt_lab.viz.attention import operation_segments, region_indices, tick_positions
from tests.viz.helpers import FakeTrace


def test_operations_found_from_the_facts():
    trace = FakeTrace()
    assert operation_segments(trace, 0) == {"write 1": 0, "write 2": 2, "retain": 1, "read": 3}
    assert operation_segments(trace, 1) == {"write 1": 1, "retain": 2, "read": 3}  # one fact only


def test_figure6_panels_in_the_reports_order_with_the_strongest_layer():
    trace = FakeTrace()
    panels = memory_operation_panels(trace)  # sample chosen automatically: 0 has all four operations
    titles = [p.title.split("\n")[0] for p in panels]
    assert titles == ["detect fact 1 / write to memory", "no fact / retain memory", "detect fact 2 / write to memory",
                      "use memory / answer"]
    assert [p.segment for p in panels] == [0, 1, 2, 3]
    assert {p.layer for p in panels} == {1}  # the layer where the fake trace's memory operates
    write = panels[0]
    assert write.row_labels[:6] == ["[CLS]", "[mem 0]", "[mem 1]", "[mem 2]", "[mem 3]", "[SEP]"]
    assert [write.col_labels[i] for i in write.fact_cols] == ["w0_1", "w0_2"]
    memory_rows = write.attention[1:5]
    assert np.allclose(memory_rows[:, list(write.fact_cols)].sum(1), 0.98 + 2 * 0.02 / 15, atol=1e-5)
    retain = panels[1].attention[1:5, 1:5]
    assert np.all(np.diag(retain) > 0.9)  # memory keeps its own previous state: a diagonal
    read = panels[3].attention[0, 1:5]
    assert read.sum() > 0.9  # [CLS] reads the memory


def test_figure6_draws_labelled_axes():
    fig = plot_memory_operations(memory_operation_panels(FakeTrace(), layer=1))
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(axes) == 4
    ticks = [t.get_text() for t in axes[0].get_yticklabels()]
    assert ticks[:3] == ["[CLS]", "[mem 0]", "[mem 1]"]
    assert axes[0].get_xlabel() == "keys (attended to)" and axes[0].get_ylabel() == "queries"
    assert np.allclose(axes[0].get_images()[0].get_array(), FakeTrace().pattern(0, 1)[0].mean(0))


def test_regions_and_heads():
    trace = FakeTrace()
    block = attention_view(trace, 1, 1, head=0, region="memory block")
    assert block.attention.shape == (4, 4) and block.row_labels == [f"[mem {i}]" for i in range(4)]
    rows = attention_view(trace, 1, 1, region="memory rows")
    assert rows.attention.shape == (4, 15) and np.allclose(rows.attention.sum(1), 1, atol=1e-5)
    cols = attention_view(trace, 1, 1, region="memory columns")
    assert cols.attention.shape == (15, 4)
    with pytest.raises(KeyError, match="kept heads"):
        attention_view(trace, 1, 1, head=7)
    with pytest.raises(ValueError, match="unknown region"):
        region_indices(trace.labels(0), "diagonal")
    fig = plot_attention(block)
    assert fig.axes[0].get_title() == "segment 1, layer 1, head 0"


def test_padding_is_dropped_and_long_labels_are_thinned():
    labels = ["[CLS]", "[mem 0]", "[SEP]"] + [f"t{i}" for i in range(200)] + ["[SEP]", "[PAD]", "[PAD]"]
    rows, cols = region_indices(labels, "full")
    assert len(rows) == len(cols) == 204
    ticks = tick_positions(labels[:204], keep=(50,), max_ticks=30)
    assert {0, 1, 2, 50, 203} <= set(ticks) and len(ticks) <= 36


def test_a_trace_without_maps_says_how_to_get_them():
    with pytest.raises(ValueError, match="segments='all'"):
        memory_operation_panels(FakeTrace(segments=[]))
