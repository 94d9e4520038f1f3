"""The memory dynamics widget draws PNGs into ipywidgets.Image and follows its controls (the attention
explorer's tests are in test_explorer.py)."""

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
