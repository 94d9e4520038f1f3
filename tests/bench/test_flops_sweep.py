"""Figure 3 data: the tidy sweep, the full / RMT ratio table, resuming, and bad sweeps."""

import math

import pandas as pd
import pytest

from rmt_lab.bench.flops_sweep import FIGURE3_LENGTHS, FlopsSweepConfig, flops_ratio_table, flops_sweep
from rmt_lab.config import ConfigError, from_dict


@pytest.fixture(scope="module")
def frame():
    return flops_sweep(FlopsSweepConfig())


def test_grid_and_columns(frame):
    assert FIGURE3_LENGTHS[0] == 512 and 32_000 in FIGURE3_LENGTHS and FIGURE3_LENGTHS[-1] == 2_048_000
    assert len(frame) == 9 * len(FIGURE3_LENGTHS) * 2
    assert set(frame["method"]) == {"full", "rmt"}
    for column in ("model", "method", "tokens", "flops", "relative_flops", "torch", "transformers", "cpu"):
        assert column in frame
    assert frame["measured_flops"].isna().all()  # not measured unless asked


def test_relative_to_one_512_token_forward(frame):
    full512 = frame[(frame["method"] == "full") & (frame["tokens"] == 512)]
    assert (full512["relative_flops"] == 1.0).all()
    # One RMT segment costs a little more: 20 memory positions on top of 512 tokens.
    rmt512 = frame[(frame["method"] == "rmt") & (frame["tokens"] == 512)]
    assert ((rmt512["relative_flops"] > 1.0) & (rmt512["relative_flops"] < 1.1)).all()


def test_rmt_linear_full_superlinear(frame):
    for _, rows in frame.groupby("model"):
        rmt = rows[rows["method"] == "rmt"].set_index("tokens")["flops"]
        full = rows[rows["method"] == "full"].set_index("tokens")["flops"]
        assert rmt[2_048_000] == 2 * rmt[1_024_000]
        assert full[2_048_000] > 3 * full[1_024_000]
        full_rows = rows[rows["method"] == "full"]
        assert (full_rows["extrapolated"] == (full_rows["tokens"] > 2048)).all()


def test_ratio_table_by_hand(frame):
    table = flops_ratio_table(frame)
    assert list(table["model"]) == ["opt-125m", "opt-350m", "opt-1.3b", "opt-2.7b", "opt-6.7b", "opt-13b",
                                    "opt-30b", "opt-66b", "opt-175b"]
    # OPT-175B by hand: full attention over L, against 4000 segments of 532 positions; logits on L tokens.
    l, h, V, L, P = 96, 12288, 50272, 2_048_000, 532
    full = l * (24 * L * h * h + 4 * L * L * h) + 2 * L * h * V
    rmt = 4000 * l * (24 * P * h * h + 4 * P * P * h) + 2 * L * h * V
    last = table.iloc[-1]
    assert last["full_flops"] == pytest.approx(full, rel=1e-12)
    assert last["full_over_rmt"] == pytest.approx(full / rmt, rel=1e-12)
    assert round(last["full_over_rmt"], 1) == 27.4
    # The saving shrinks with model size: attention is a smaller share of a wider model.
    assert table["full_over_rmt"].iloc[2:].is_monotonic_decreasing
    assert table["full_over_rmt"].iloc[0] > 250


def test_measured_points_match_and_resume(monkeypatch):
    config = FlopsSweepConfig(models=("opt-125m",), lengths=(512, 5000), ratio_tokens=5000, measure=True)
    measured = flops_sweep(config)
    assert (measured["measured_flops"] == measured["flops"]).all()  # 5000 = 9 segments + a short one
    # Resuming: every point is already there, so nothing may be counted again.
    import rmt_lab.bench.measured as m

    monkeypatch.setattr(m.PassCounter, "count", lambda *a, **k: pytest.fail("re-measured a known point"))
    again = flops_sweep(config, previous=measured)
    pd.testing.assert_series_equal(again["measured_flops"], measured["measured_flops"])
    # A sweep without --measure keeps earlier measurements rather than dropping them.
    kept = flops_sweep(from_dict(FlopsSweepConfig, {**config.__dict__, "measure": False}), previous=measured)
    assert not kept["measured_flops"].isna().any()


def test_train_mode_relative_to_forward():
    config = FlopsSweepConfig(models=("opt-125m",), lengths=(512,), ratio_tokens=512, mode="train")
    row = flops_sweep(config).query("method == 'full'").iloc[0]
    assert row["relative_flops"] == 3.0


def test_unknown_model_lists_known_names():
    with pytest.raises(ConfigError, match=r"unknown model\(s\) \['opt-7b'\] in the sweep; known models: \['opt-125m'"):
        FlopsSweepConfig(models=("opt-125m", "opt-7b"))


def test_length_shorter_than_a_segment_rejected():
    with pytest.raises(ConfigError, match=r"length\(s\) \[256\] are shorter than one segment of 512 tokens"):
        FlopsSweepConfig(lengths=(256, 512, 2_048_000))


def test_ratio_length_must_be_swept():
    with pytest.raises(ConfigError, match="ratio_tokens=1000 is not among the lengths"):
        FlopsSweepConfig(ratio_tokens=1000)


def test_ratio_table_missing_length():
    small = flops_sweep(FlopsSweepConfig(models=("opt-125m",), lengths=(512,), ratio_tokens=512))
    with pytest.raises(ConfigError, match="no rows at 2048000 tokens"):
        flops_ratio_table(small)
    assert not math.isnan(flops_ratio_table(small, 512)["full_over_rmt"].iloc[0])
