"""What `rmt-lab info --bench` and `demo` print of streaming measurements."""

from rmt_lab.bench.inference import stream_summary, stream_table


def _result(tokens: int, peak_mib: float) -> dict:
    return {"tokens": tokens, "n_segments": tokens // 499 + 1, "seconds": 2.0, "tokens_per_s": tokens / 2.0,
            "peak_mib": peak_mib, "device": "cpu", "threads": 2, "memory_shape": [1, 10, 384]}


def test_stream_table_shows_each_length_when_measured_against_the_first_peak():
    measured = []

    def results():
        for tokens, peak in ((16_000, 400.0), (1_000_000, 404.0)):
            measured.append(tokens)
            yield _result(tokens, peak)

    lines = stream_table(results())
    assert next(lines).startswith("minilm RMT") and next(lines).split()[0] == "tokens" and not measured
    assert next(lines).split()[:2] == ["16,000", "33"] and measured == [16_000]
    assert next(lines).endswith("(1.010x the first length's peak)")


def test_stream_summary_names_the_memory_shape_and_peak():
    text = stream_summary(_result(100_000, 512.4))
    assert text.startswith("201 segments in 2.0 s: 50,000 tokens/s on cpu (2 threads)")
    assert "memory shape (1, 10, 384)" in text and text.endswith("peak memory 512 MiB")
