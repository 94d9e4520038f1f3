"""The widgets draw PNGs into ipywidgets.Image, follow their controls and export the current view."""

import pytest

from rmt_lab.viz.widgets import AttentionExplorer, MemoryDynamics
from tests.viz.helpers import FakeTrace

PNG = b"\x89PNG\r\n\x1a\n"


def test_explorer_renders_and_follows_controls(tmp_path):
    explorer = AttentionExplorer(FakeTrace(), out_dir=tmp_path)
    assert explorer.image.value[:8] == PNG and explorer.sparkline.value[:8] == PNG
    assert [label for label, _ in explorer.segment.options] == ["0 (fact)", "1", "2 (fact)", "3"]
    assert explorer.head.options[0] == ("mean of heads", "mean")
    first = explorer.image.value
    explorer.region.value = "memory block"
    assert explorer.view().attention.shape == (4, 4)
    assert explorer.image.value != first
    explorer.segment.value = 3
    explorer.head.value = 1
    view = explorer.view()
    assert (view.segment, view.head) == (3, 1)
    explorer.sample.value = 1
    assert [label for label, _ in explorer.segment.options] == ["0", "1 (fact)", "2", "3"]
    assert explorer.segment.value == 3


def test_explorer_exports_png_and_svg(tmp_path):
    explorer = AttentionExplorer(FakeTrace(), out_dir=tmp_path)
    explorer.filename.value = "view"
    explorer.save_png.click()
    explorer.save_svg.click()
    assert (tmp_path / "view.png").read_bytes()[:8] == PNG
    assert "<svg" in (tmp_path / "view.svg").read_text()
    assert "saved" in explorer.status.value
    with pytest.raises(ValueError, match="png or .svg"):
        explorer.save(tmp_path / "view.gif")


def test_explorer_needs_maps():
    with pytest.raises(ValueError, match="no full attention maps"):
        AttentionExplorer(FakeTrace(segments=[]))


def test_memory_dynamics_steps_through_segments():
    dynamics = MemoryDynamics(FakeTrace())
    assert dynamics.image.value[:8] == PNG
    assert (dynamics.segment.min, dynamics.segment.max) == (0, 3)
    before = dynamics.image.value
    dynamics.segment.value = 2
    assert dynamics.image.value != before
    assert "[mem 0]" in dynamics.written.value and "<b" in dynamics.written.value  # fact tokens in bold
    assert dynamics.projection is not None and len(dynamics.projection) == 4


def test_memory_dynamics_without_memory_states():
    class NoStates(FakeTrace):
        def memory_states(self):
            raise KeyError("this trace kept no memory states")

    dynamics = MemoryDynamics(NoStates(), sample=1)
    assert dynamics.projection is None and dynamics.image.value[:8] == PNG
