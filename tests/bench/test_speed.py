"""The speed sweep: points and their FLOPs, the speed table and its ratios, bad input."""

import math

import pandas as pd
import pytest

from rmt_lab.bench.flops import forward_pass_flops, rmt_flops, total
from rmt_lab.bench.speed import SpeedSweepConfig, speed_points, speed_sweep, speed_table
from rmt_lab.bench.sweep import KEY_COLUMNS, backbone_shape
from rmt_lab.config import ConfigError, from_dict
from tests.bench.fakes import FakeRunner

TINY = dict(backbone="tiny-bert", batches=(1, 4), segments=3, matmul_n=256, matmul_repeats=3)


def test_points_count_the_flops_the_task_needs():
    points = speed_points(SpeedSweepConfig(**TINY))
    assert [(p.key["batch"], p.key["method"]) for p in points] == [
        (b, m) for b in (1, 4) for m in ("rmt", "rmt-compiled", "backbone", "rmt-naive", "rmt-plain")] + [
        (b, m) for size in (64, 499) for b in (8, 32) for m in ("rmt-train", "rmt-train-ckpt", "rmt-train-compiled")
    ]  # the training steps: their own batches, whatever the forward batches
    shape = backbone_shape("tiny-bert")
    by = {(p.key["batch"], p.key["method"]): p for p in points}
    assert by[4, "rmt"].known["flops"] == total(rmt_flops(shape, 3 * 499, 499, 10, 4, head="none"))
    assert by[4, "rmt-plain"].known["flops"] == by[4, "rmt"].known["flops"]  # the plain loop computes no logits
    assert by[4, "rmt-plain"].params["plain"] and by[4, "rmt-plain"].params["paired_peak"]
    assert not by[4, "rmt-plain"].params["paired_plain"] and not by[4, "rmt"].params["plain"]
    assert by[4, "rmt"].params["paired_plain"] and by[4, "rmt-compiled"].params["paired_plain"]
    assert by[4, "rmt-naive"].known["flops"] > by[4, "rmt"].known["flops"]  # the naive loop adds the LM head
    # The bare backbone over the same 512 positions, once per segment: equal FLOPs for full segments.
    assert by[4, "backbone"].known["flops"] == 3 * total(forward_pass_flops(shape, 512, 4))
    assert by[4, "backbone"].known["flops"] == by[4, "rmt"].known["flops"]
    assert by[1, "backbone"].params["positions"] == 512 and by[1, "rmt-naive"].params["keep_outputs"]
    assert by[1, "rmt"].params["paired_backbone"] and not by[1, "rmt-naive"].params["paired_backbone"]
    assert all(p.params["matmul_repeats"] == 3 for p in points)  # every process measures its own peak
    assert by[1, "rmt"].params["paired_peak"] and not by[1, "rmt"].params["compile"]
    assert by[1, "rmt-compiled"].params["compile"] == "default" and by[1, "rmt-compiled"].params["paired_backbone"]
    assert by[1, "rmt-compiled"].known["flops"] == by[1, "rmt"].known["flops"]
    assert all(p.key["dtype"] == "float32" and p.params["dtype"] == "float32" for p in points)


def test_training_points_at_every_batch_and_segment_size():
    points = [p for p in speed_points(SpeedSweepConfig(**TINY)) if p.key["mode"] == "train"]
    by = {(p.key["method"], p.key["segment_size"], p.key["batch"]): p for p in points}
    short = by["rmt-train", 64, 32]
    assert short.key["tokens"] == 4 * 64 and short.params["segment_size"] == 64 and short.params["batch"] == 32
    assert short.known["positions"] == 64 + 13  # [CLS] mem x 10 [SEP] tokens [SEP]
    shape = backbone_shape("tiny-bert")
    assert short.known["flops"] == total(rmt_flops(shape, 4 * 64, 64, 10, 32, head="cls", mode="train"))
    one = speed_points(SpeedSweepConfig(**TINY, train_batch=2, train_segment_sizes=(499,)))
    assert [(p.key["method"], p.key["batch"]) for p in one if p.key["mode"] == "train"] == [
        ("rmt-train", 2), ("rmt-train-ckpt", 2), ("rmt-train-compiled", 2)]
    assert by["rmt-train-compiled", 64, 8].params["compile"] == "default" and not short.params["compile"]
    assert all(p.params["paired_peak"] for p in points)  # every step against the peak of its own moment
    assert [m for (m, *_), p in by.items() if p.params["paired_plain"]] == ["rmt-train"] * 4  # the eager step only  # --train-batch: one batch in place of train_batches


def test_training_points_are_a_full_bptt_step():
    points = speed_points(SpeedSweepConfig(**TINY, train_batch=2, train_segment_sizes=(499,)))
    train = {p.key["method"]: p for p in points if p.key["mode"] == "train"}
    plain, ckpt = train["rmt-train"], train["rmt-train-ckpt"]
    assert plain.key["tokens"] == 4 * 499 and plain.key["batch"] == 2 and plain.key["bptt_depth"] == -1
    assert plain.params["mode"] == "train" and plain.params["bptt_depth"] == -1
    assert not plain.params["checkpoint_segments"] and ckpt.params["checkpoint_segments"]
    shape = backbone_shape("tiny-bert")
    needed = total(rmt_flops(shape, 4 * 499, 499, 10, 2, head="cls", mode="train"))
    assert plain.known["flops"] == ckpt.known["flops"] == needed  # recomputation is not needed work


def test_training_table_shows_the_checkpointing_trade(tmp_path):
    from rmt_lab.bench.speed import train_table

    config = SpeedSweepConfig(**TINY, train_batch=2, train_segment_sizes=(499,))
    frame = speed_sweep(config, tmp_path / "speed.parquet", progress=False, runner=FakeRunner())
    row = train_table(frame).iloc[0]
    assert row["batch"] == 2 and row["tokens_per_sample"] == 4 * 499
    assert row["tokens_per_s"] == pytest.approx(2 * 4 * 499 / 2.0)
    assert row["ckpt_time_ratio"] == pytest.approx(2.5 / 2.0)
    assert row["ckpt_memory_ratio"] == pytest.approx(300.0 / row["peak_mib"])


def test_speed_table_ratios(tmp_path):
    frame = speed_sweep(SpeedSweepConfig(**TINY), tmp_path / "speed.parquet", progress=False, runner=FakeRunner())
    table = speed_table(frame).set_index("batch")
    assert list(table.index) == [1, 4]
    row = table.loc[4]
    assert row["tokens_per_s"] == pytest.approx(4 * 3 * 499 / 2.0)
    assert row["fraction_of_peak"] == pytest.approx(row["gflops_per_s"] / 100.0)
    assert row["rmt_segment_over_backbone"] == 1.04  # the paired median, not a ratio of separate runs
    assert row["paired_backbone_ms"] == pytest.approx(95.0) and row["backbone_segment_ms"] == pytest.approx(95.0)
    assert row["rmt_over_naive"] == pytest.approx(1.0)
    assert row["rmt_over_plain"] == pytest.approx(1.1) and row["rmt_over_plain_paired"] == 1.12
    assert row["plain_paired_fraction"] == 0.75 and row["compiled_over_plain_paired"] == 1.12
    assert row["cpu_capability"] == "AVX512" and row["segment_size"] == 499
    assert row["paired_fraction"] == 0.75  # the median of per-segment ratios, as the workload reports it
    assert row["compiled_over_eager"] == pytest.approx(1.0) and row["compiled_paired_fraction"] == 0.75
    assert set(pd.read_parquet(tmp_path / "speed.parquet")["sweep"]) == {"speed"}


def test_speed_table_without_baselines_leaves_them_out(tmp_path):
    frame = speed_sweep(SpeedSweepConfig(**{**TINY, "methods": ("rmt",)}), tmp_path / "s.parquet",
                        progress=False, runner=FakeRunner())
    table = speed_table(frame)
    assert "rmt_over_naive" not in table and "backbone_segment_ms" not in table
    assert not math.isnan(table["tokens_per_s"].iloc[0]) and table["rmt_segment_over_backbone"].iloc[0] == 1.04


@pytest.mark.parametrize("override, message", [
    ({"backbone": "gpt-5"}, "unknown backbone 'gpt-5'; available backbones"),
    ({"batches": (0,)}, "batches item must be a positive integer"),
    ({"methods": ("rmt", "official")}, r"methods='official' is not allowed; allowed values"),
    ({"dtype": "fp8"}, r"dtype='fp8' is not allowed; allowed values"),
    ({"compile": "fast"}, r"compile='fast' is not allowed; allowed values"),
    ({"train_batch": 0}, "SpeedSweepConfig.train_batch must be a positive integer"),
    ({"segments": 0}, "SpeedSweepConfig.segments must be a positive integer"),
    ({"num_mem": 40}, "exceeds the model's 512 positions"),
    ({"train_dropout": 1.0}, r"train_dropout must be a probability in \[0, 1\), got 1.0"),
    ({"train_dropout": -0.1}, r"train_dropout must be a probability in \[0, 1\)"),
])
def test_bad_configs_fail_clearly(override, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(SpeedSweepConfig, {**TINY, **override})


def test_speed_table_missing_fields_names_them():
    with pytest.raises(ConfigError, match=r"speed table input is missing column\(s\)"):
        speed_table(pd.DataFrame({"batch": [1]}))


def test_report_names_the_machine_and_both_baselines(tmp_path):
    from rmt_lab.bench.speed import speed_report

    frame = speed_sweep(SpeedSweepConfig(**TINY), tmp_path / "speed.parquet", progress=False, runner=FakeRunner())
    text = speed_report(frame)
    assert "AVX512" in text and "measured on" in text
    assert "RMT / plain loop tokens/s" in text and "1.100x" in text and "RMT / naive loop tokens/s" in text


@pytest.mark.parametrize("backbone", ["tiny-bert", "tiny-gpt2"])
def test_plain_loop_is_the_rmts_computation(backbone):
    """The baseline must run what the RMT runs: the same memory after every segment."""
    import torch

    from rmt_lab.bench.workloads import PlainLoop, _rmt_model, random_segments

    torch.manual_seed(0)
    model = _rmt_model(backbone, 4, 30, 0, False, torch.device("cpu"))
    segments = list(random_segments(90, 30, batch=2))
    with torch.inference_mode():
        rmt = model.stream(segments)
        loop = PlainLoop(model, 2)
        for ids, expected in zip(segments, model.stream(segments, keep=["memory"]).segments):
            torch.testing.assert_close(loop.step(ids), expected["memory"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loop.memory, rmt.memory, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backbone", ["tiny-bert", "tiny-gpt2"])
def test_plain_loop_trains_what_the_rmt_trains(backbone):
    """The published-style training baseline, on HF's sdpa: the same loss and the same gradients as the RMT's step."""
    import torch

    from rmt_lab.bench.workloads import _rmt_model, hf_default_attention, plain_training_loss, random_segments

    torch.manual_seed(0)
    model = _rmt_model(backbone, 4, 30, -1, True, torch.device("cpu"))
    segments, labels = list(random_segments(90, 30, batch=2)), torch.tensor([1, 4])
    rmt = model.stream(segments, n_segments=3, labels=labels).loss
    rmt.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    with hf_default_attention(model):
        plain = plain_training_loss(model, segments, labels)
    plain.backward()
    # The RMT's attention is rmt_lab's kernel, the plain loop's sdpa: equal up to fp32 rounding, not bitwise.
    torch.testing.assert_close(plain, rmt, rtol=1e-5, atol=1e-6)
    got = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert got.keys() == expected.keys() and "memory" in " ".join(got)  # the memory is trained through the loop
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-5, msg=name)


@pytest.fixture
def attention_calls(monkeypatch):
    """Which attention ran, call by call: "kernel" (rmt_lab's fused kernel with a gradient, the RMT's own) or
    "sdpa" (torch's, reached through HF's sdpa attention)."""
    import torch

    from rmt_lab.model import kernels

    seen = []
    kernel, sdpa = kernels.cpu_attention_with_lse, torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(kernels, "cpu_attention_with_lse", lambda *a: seen.append("kernel") or kernel(*a))
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **k: seen.append("sdpa") or sdpa(*a, **k))
    return seen


@pytest.mark.parametrize("dropout", [0.0, 0.1])
@pytest.mark.parametrize("backbone", ["tiny-bert", "tiny-gpt2"])
def test_paired_training_runs_the_kernel_for_the_rmt_and_sdpa_for_the_plain_loop(backbone, dropout, attention_calls):
    """Each round runs the plain-loop step, then the RMT's: every attention of the first on HF's sdpa (as the published
    wrapper trains), every one of the second on the RMT's own kernel; the RMT's attention is its own again after."""
    import torch

    from rmt_lab.bench.workloads import TRAIN_ROUNDS, _paired_training, _rmt_model
    from rmt_lab.model import kernels

    model = _rmt_model(backbone, 4, 32, -1, True, torch.device("cpu"), dropout=dropout)
    per_step = 3 * model.cell.model.config.num_hidden_layers  # 3 segments, each through every layer
    out = _paired_training(model, 96, 2, torch.tensor([1, 4]), torch.device("cpu"), None, plain=True)
    assert attention_calls == (["sdpa"] * per_step + ["kernel"] * per_step) * TRAIN_ROUNDS
    assert out["paired_plain_attn_impl"] == "sdpa" and out["paired_plain_speedup_median"] > 0
    assert model.cell.model.config._attn_implementation == kernels.TRAINING_IMPL


def test_hf_default_attention_gives_the_rmt_its_own_back_on_failure():
    import torch

    from rmt_lab.bench.workloads import _rmt_model, hf_default_attention
    from rmt_lab.model import kernels

    model = _rmt_model("tiny-bert", 4, 30, -1, True, torch.device("cpu"))
    with pytest.raises(RuntimeError, match="inside"), hf_default_attention(model) as impl:
        assert impl == model.cell.model.config._attn_implementation == "sdpa"
        raise RuntimeError("inside")
    assert model.cell.model.config._attn_implementation == kernels.TRAINING_IMPL


def test_paired_training_rounds_report_fraction_and_baseline():
    from rmt_lab.bench.workloads import TRAIN_ROUNDS, WORKLOADS

    out = WORKLOADS["rmt"](backbone="tiny-bert", tokens=90, segment_size=30, num_mem=4, matmul_n=64, mode="train",
                           bptt_depth=-1, paired_peak=True, paired_plain=True)
    assert out["n_segments"] == 3 and TRAIN_ROUNDS >= 2
    assert out["paired_step_s_p10"] <= out["paired_step_s_median"] <= out["paired_step_s_p90"]
    assert out["paired_plain_s_median"] > 0 and out["paired_plain_speedup_median"] > 0
    # A 64^3 product is no peak: under load the fraction of it can take any positive value.
    assert out["paired_peak_gflops_median"] > 0 and 0 < out["paired_fraction_median"] < math.inf
    unpaired = WORKLOADS["rmt"](backbone="tiny-bert", tokens=90, segment_size=30, num_mem=4, mode="train")
    assert not any(k.startswith("paired") for k in unpaired)


def test_plain_workload_and_pairing_report_their_times():
    from rmt_lab.bench.workloads import WORKLOADS

    common = dict(backbone="tiny-gpt2", tokens=90, segment_size=30, num_mem=4, matmul_n=64)
    plain = WORKLOADS["rmt"](**common, plain=True, paired_peak=True)
    assert plain["n_segments"] == 3 and plain["paired_fraction_median"] > 0 and plain["cpu_capability"]
    rmt = WORKLOADS["rmt"](**common, paired_plain=True)
    assert rmt["paired_plain_speedup_median"] > 0 and rmt["paired_plain_s_median"] > 0


def test_readme_tables_come_from_the_rows(tmp_path):
    from rmt_lab.bench.speed import speed_markdown

    frame = speed_sweep(SpeedSweepConfig(**TINY), tmp_path / "speed.parquet", progress=False, runner=FakeRunner())
    text = speed_markdown(frame)
    assert "| | batch 1 | batch 4 |" in text and "(AVX512), fp32, matmul peak 100-100 GFLOP/s, 1-minute load average 0.5-0.5" in text
    assert "| RMT / plain loop: tokens/s (own processes); paired per segment | 1.100x; 1.120x | 1.100x; 1.120x |" in text
    assert "| | 64 tok/seg, batch 8 | 64 tok/seg, batch 32 | 499 tok/seg, batch 8 | 499 tok/seg, batch 32 |" in text
    forward_only = speed_sweep(SpeedSweepConfig(**{**TINY, "methods": ("rmt",)}), tmp_path / "f.parquet",
                               progress=False, runner=FakeRunner())
    assert "training step" not in speed_markdown(forward_only) and "| RMT tokens/s (eager) |" in speed_markdown(forward_only)


def test_readme_speed_tables_are_the_committed_rows():
    """The README's speed tables are made by speed_markdown from the parquet file each block names, never typed."""
    import re
    from pathlib import Path

    from rmt_lab.bench.speed import speed_markdown

    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    blocks = re.findall(r"<!-- speed tables: (\S+) -->\n((?:(?!<!--).)*?)<!-- end of speed tables -->", readme,
                        flags=re.S)
    assert blocks, "README.md has no speed-table block"
    # Every block is checked: one the pattern misses (a typo in its end marker) would go unchecked.
    assert len(blocks) == readme.count("<!-- speed tables:") == readme.count("<!-- end of speed tables -->")
    for path, table in blocks:
        assert table.strip() == speed_markdown(pd.read_parquet(root / path)).strip(), path


def test_a_training_point_with_dropout_runs_and_records_it(tmp_path):
    """train_dropout reaches the step in its own process; the row says so, the table heading names it, and
    the dropout-off row of the same shape is neither reused for it nor replaced by it."""
    from rmt_lab.bench.speed import speed_markdown, train_table

    tiny = dict(backbone="tiny-bert", num_mem=4, segment_size=30, matmul_n=64, matmul_repeats=1, methods=("rmt-train",),
                train_batch=2, train_segment_sizes=(30,), train_segments=3)
    path = tmp_path / "speed.parquet"
    speed_sweep(SpeedSweepConfig(**tiny), path, progress=False)
    on = speed_sweep(SpeedSweepConfig(**tiny, train_dropout=0.1), path, progress=False)
    row = on.iloc[0]
    assert row["status"] == "ok", row["reason"]
    assert row["dropout"] == 0.1 and row["paired_plain_speedup_median"] > 0
    stored = pd.read_parquet(path)
    assert sorted(stored["dropout"]) == [0.0, 0.1] and list(stored.columns).index("dropout") == len(KEY_COLUMNS)
    table = train_table(stored)
    assert sorted(table["dropout"]) == [0.0, 0.1] and (table["over_plain_paired"] > 0).all()
    text = speed_markdown(stored)
    assert "tiny-bert training step (full BPTT through 3 segments, every weight trained; FLOPs" in text
    assert "every weight trained; dropout 0.1 on the backbone's hidden states and attention weights" in text


def test_dropout_reaches_the_rmt_and_the_plain_loop():
    """The step trains with the backbone's dropout at the given probability: both sides of the pairing."""
    import torch

    from rmt_lab.bench.workloads import PlainLoop, _rmt_model, random_segments

    model = _rmt_model("tiny-bert", 4, 30, -1, True, torch.device("cpu"), dropout=0.25)
    config = model.cell.model.config
    assert model.training and config.hidden_dropout_prob == config.attention_probs_dropout_prob == 0.25
    segments = list(random_segments(60, 30, batch=2))
    runs = [PlainLoop(model, 2).run(segments).memory for _ in range(2)]
    assert not torch.allclose(*runs)  # fresh dropout masks each run
    assert not _rmt_model("tiny-bert", 4, 30, -1, True, torch.device("cpu")).training  # off by default
    with pytest.raises(ValueError, match="applies to a training step only"):
        _rmt_model("tiny-bert", 4, 30, 0, False, torch.device("cpu"), dropout=0.1)


def test_rows_without_a_dropout_column_resume_as_dropout_off(tmp_path):
    """A file written before dropout was recorded: its rows are the dropout-off points, not remeasured."""
    path = tmp_path / "speed.parquet"
    config = SpeedSweepConfig(**TINY, train_batch=2, train_segment_sizes=(499,))
    speed_sweep(config, path, progress=False, runner=FakeRunner())
    pd.read_parquet(path).drop(columns="dropout").to_parquet(path)
    runner = FakeRunner()
    speed_sweep(config, path, progress=False, runner=runner)
    assert runner.calls == []
    speed_sweep(SpeedSweepConfig(**{**TINY, "methods": ("rmt-train",)}, train_batch=2, train_segment_sizes=(499,),
                                 train_dropout=0.1), path, progress=False, runner=runner)
    assert [params["dropout"] for _, params in runner.calls] == [0.1]


def test_the_table_heading_says_when_the_vector_width_was_lowered_on_purpose():
    """A row measured with torch's kernels held below the CPU's own width (ATEN_CPU_CAPABILITY) names both, so an
    emulated AVX2 table is never read as a measurement of an AVX2-only CPU; older rows without cpu_isa keep theirs."""
    import torch

    from rmt_lab.bench.speed import _machine_note, _machines
    from rmt_lab.bench.workloads import _common

    assert _common(torch.device("cpu"))["cpu_isa"] in ("AVX512", "AVX2", "DEFAULT")
    rows = pd.DataFrame({"cpu": ["EPYC"] * 3, "cpu_capability": ["AVX2", "AVX512", "AVX2"],
                         "cpu_isa": ["AVX512", "AVX512", None], "matmul_peak_gflops": [190.0, 200.0, 195.0],
                         "load_avg_1m": [0.5, 0.7, 0.6]})
    note = _machine_note(rows)
    assert note.startswith("EPYC (AVX2 kernels on an AVX512 CPU), EPYC (AVX2), EPYC (AVX512), fp32")
    assert "matmul peak 190-200 GFLOP/s" in note
    printed = _machines(rows.assign(status="ok", torch_threads=2))  # what `rmt-lab bench speed` prints
    assert printed.startswith("\nmeasured on EPYC, AVX2 kernels on an AVX512 CPU, 2 threads; EPYC, AVX2, 2 threads; ")
