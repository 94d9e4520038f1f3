"""Analytic FLOPs against torch's FlopCounterMode on meta-device HF models (eager attention)."""

import pytest

from rmt_lab.bench import full_attention_flops, model_config, rmt_flops, shape_from_config, total
from rmt_lab.bench.measured import PassCounter, measure_full_attention_flops, measure_rmt_flops, meta_model
from tests.bench.helpers import TINY


def assert_match(analytic, measured):
    assert measured["total"] == pytest.approx(total(analytic), rel=0.01)
    # The counter's batched matmuls are exactly the attention score and value products.
    assert measured["attention"] == analytic["attention/scores"] + analytic["attention/values"]
    assert measured["other"] == 0


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("head", ["none", "lm", "cls"])
@pytest.mark.parametrize("tokens", [7, 100])
def test_tiny_full_attention(name, head, tokens):
    config = TINY[name]()
    analytic = full_attention_flops(shape_from_config(config), tokens, batch=2, head=head)
    assert_match(analytic, measure_full_attention_flops(config, tokens, batch=2, head=head))


@pytest.mark.parametrize("name", ["bert", "gpt2", "opt-proj"])
def test_tiny_training_forward_plus_backward(name):
    config = TINY[name]()
    analytic = full_attention_flops(shape_from_config(config), 50, head="lm", mode="train")
    assert_match(analytic, measure_full_attention_flops(config, 50, head="lm", mode="train"))


@pytest.mark.parametrize("tokens", [128, 2048])
def test_opt_125m(tokens):
    config = model_config("opt-125m")
    counter = PassCounter(config)
    for head in ("lm", "none"):
        assert_match(full_attention_flops(shape_from_config(config), tokens, head=head),
                     counter.full_attention(tokens, head))


def test_opt_175b_two_million_tokens():
    """The headline point of Figure 3, counted directly on the meta device (no scaling)."""
    config = model_config("opt-175b")
    analytic = full_attention_flops(shape_from_config(config), 2_048_000, head="lm", extrapolate=True)
    measured = measure_full_attention_flops(config, 2_048_000, head="lm")
    assert_match(analytic, measured)
    assert measured["total"] > 2**63  # why the sweep stores FLOPs as float64


@pytest.mark.parametrize("name,head,tokens", [
    ("gpt2", "lm", 16 * 5),  # decoder, logits on content tokens only, whole segments
    ("opt-proj", "lm", 16 * 5 + 9),  # a shorter last segment
    ("bert", "cls", 16 * 3 + 4),  # encoder, classifier on the last segment only
    ("roberta", "none", 16 * 4),
])
def test_rmt_one_segment_times_count(name, head, tokens):
    config = TINY[name]()
    analytic = rmt_flops(shape_from_config(config), tokens, 16, 4, batch=2, head=head)
    assert_match(analytic, measure_rmt_flops(config, tokens, 16, 4, batch=2, head=head))


def test_rmt_opt_125m_at_segment_512():
    config = model_config("opt-125m")
    analytic = rmt_flops(shape_from_config(config), 512 * 8, 512, 10, head="lm")
    assert_match(analytic, measure_rmt_flops(config, 512 * 8, 512, 10, head="lm"))


def test_meta_model_is_eager_on_meta():
    # On CPU, sdpa's fused kernel has no FLOP formula (REFERENCE.md): the counter needs eager attention.
    model = meta_model(TINY["gpt2"](), "lm")
    assert model.config._attn_implementation == "eager"
    assert next(model.parameters()).device.type == "meta"


def test_position_table_grows_for_extrapolation_without_changing_the_count():
    config = TINY["gpt2"]()  # 1024 positions
    model = meta_model(config, "none", positions=3000)
    assert model.config.n_positions == 3000  # grown once, though GPT-2 aliases two names to it
    analytic = full_attention_flops(shape_from_config(config), 3000, head="none", extrapolate=True)
    assert_match(analytic, measure_full_attention_flops(config, 3000, head="none"))
