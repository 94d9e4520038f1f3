"""The long-trace benchmark runs in its own process and reports that process's peak memory."""

import pytest

from rmt_lab.trace.bench import million_in_subprocess


def test_a_long_trace_in_a_fresh_process():
    r = million_in_subprocess(n_tokens=3000, backbone="tiny-bert", segment_size=32, num_mem_tokens=2)
    assert r["n_segments"] == 94 and r["summary_rows"] > 0 and r["peak_rss_mib"] >= r["rss_before_mib"] > 0
    with pytest.raises(RuntimeError, match="million-token trace failed: ValueError: unknown backbone"):
        million_in_subprocess(n_tokens=3000, backbone="no-such-model")
