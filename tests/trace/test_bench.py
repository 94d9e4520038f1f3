"""The recorder's overhead benchmarks on tiny settings: they run, report their threads, restore torch's."""

import torch

from rmt_lab.trace.bench import overhead_ratio, own_time_share, segment_overhead


def test_overhead_benchmarks_run_and_restore_the_thread_count():
    before = torch.get_num_threads()
    assert overhead_ratio("tiny-bert", n_segments=3, repeats=2, segment_size=32, threads=1)["ratio"] > 0
    paired = segment_overhead("tiny-bert", n_pairs=4, segment_size=32, threads=1)
    assert paired["threads"] == 1 and paired["plain_ms"] > 0 and paired["traced_ms"] > 0
    share = own_time_share("tiny-bert", n_segments=3, repeats=2, segment_size=32)
    assert share["threads"] == before and share["share"] > 0
    assert torch.get_num_threads() == before
