"""The recorder's overhead benchmarks on tiny settings: they run, report their threads, restore torch's."""

import torch

from rmt_lab.trace.bench import million_report, overhead_ratio, overhead_report, own_time_share, segment_overhead


def test_overhead_benchmarks_run_and_restore_the_thread_count():
    before = torch.get_num_threads()
    assert overhead_ratio("tiny-bert", n_segments=3, repeats=2, segment_size=32, threads=1)["ratio"] > 0
    paired = segment_overhead("tiny-bert", n_pairs=4, segment_size=32, threads=1)
    assert paired["threads"] == 1 and paired["plain_ms"] > 0 and paired["traced_ms"] > 0
    share = own_time_share("tiny-bert", n_segments=3, repeats=2, segment_size=32)
    assert share["threads"] == before and share["share"] > 0
    assert torch.get_num_threads() == before


def test_overhead_report_shows_each_row_when_it_is_measured():
    measured = []
    row = {"backbone": "tiny-bert", "threads": 1, "load_average": 0.5, "plain_ms_per_segment": 10.0,
           "traced_ms_per_segment": 11.0, "ratio": 1.1, "ratio_min": 1.0, "ratio_max": 1.2, "best_ratio": 1.05,
           "cpu_ratio": 1.1, "cpu_ratio_min": 1.0, "cpu_ratio_max": 1.2, "best_cpu_ratio": 1.05}

    def wall():
        measured.append("wall")
        yield row

    lines = overhead_report({"wall": wall(), "segment": iter([]), "own_time": iter([])}, 40, 7, 30)
    assert "40 segments per run, 7 alternating pairs" in next(lines) and "wall: median" in next(lines)
    assert not measured
    assert next(lines).split() == ["tiny-bert", "1", "0.5", "10.0", "11.0", "1.100", "(1.00-1.20)", "1.050",
                                   "1.100", "(1.00-1.20)", "1.050"]
    assert measured == ["wall"] and any("30 pairs" in line for line in lines)


def test_million_report_names_the_peak_and_the_budget():
    text = million_report({"tokens": 1_000_000, "backbone": "minilm", "n_segments": 2004, "seconds": 300.0,
                           "tokens_per_s": 3333.3, "summary_rows": 24048, "map_segments": [0, 5], "fact_segment": 5,
                           "peak_rss_mib": 900.0, "rss_before_mib": 700.0, "peak_held_mib": 20.5,
                           "budget_mib": 256.0, "trace_folder_mib": 30.0})
    assert text.startswith("1,000,000-token detect_memorize trace on 'minilm' (2,004 segments)")
    assert "peak RSS 900 MiB" in text and "20.5 MiB of the 256 MiB budget" in text
