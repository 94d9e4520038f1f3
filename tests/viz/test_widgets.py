"""The memory dynamics widget draws PNGs into ipywidgets.Image and follows its controls (the attention
explorer's tests are in test_explorer.py)."""

from rmt_lab.viz import AttentionExplorer
from rmt_lab.viz.widgets import MemoryDynamics
from tests.viz.helpers import FakeTrace

PNG = b"\x89PNG\r\n\x1a\n"


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


def test_memory_dynamics_follows_the_explorer_timeline():
    explorer = AttentionExplorer(FakeTrace(segments=[0, 2]), segment=2)
    dynamics = MemoryDynamics(FakeTrace())
    dynamics.follow(explorer)
    assert dynamics.segment.value == 2 and "<b" in dynamics.written.value  # segment 2 holds sample 0's facts
    explorer.widget.picked = 3  # what a click on the timeline sets; segment 3 kept no map, its summaries count
    assert dynamics.segment.value == 3 and "[mem 0]" in dynamics.written.value and "<b" not in dynamics.written.value
    dynamics.segment.value = 1
    assert explorer.widget.picked == 1
