"""torch.compile of the backbone (`RecurrentWrapper.compile_backbone`): same outputs as eager."""

import copy

import pytest
import torch

from rmt_lab.model import RecurrentWrapper, RMTConfig
from tests.model.families import BY_NAME, ids
from tests.model.helpers import tiny, tokens


@pytest.fixture(autouse=True)
def fresh_dynamo():
    yield
    torch._dynamo.reset()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny-bert", "tiny-gpt2"])
def test_compiled_frozen_backbone_equals_eager_in_inference(name):
    model = tiny(name)
    eager = copy.deepcopy(model)
    ids = tokens(2, 40)  # 16 + 16 + 8: a full-segment graph and a shorter last one
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, 30:] = False  # and a padded row: the masked graph
    with torch.inference_mode():
        model.compile_backbone(freeze=True)
        for m in (None, mask):
            got, want = model(ids, m), eager(ids, m)
            torch.testing.assert_close(got.memory, want.memory, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(got.logits, want.logits, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["llama-gqa", "bloom", "gpt2"])
def test_a_brought_model_with_adapters_compiles_to_the_same_outputs(name):
    """Families unlike the ready ones: grouped-query rotary attention, ALiBi computed in the family's own
    code, GPT-2's Conv1D projections under adapters. (All 17 tested families pass; three keep the suite fast.)"""
    family = BY_NAME[name]
    model = RecurrentWrapper.from_backbone(family.build(), RMTConfig(num_mem_tokens=3, segment_size=16,
                                                                     num_classes=3, lora_rank=4),
                                           special_tokens=family.special_tokens).eval()
    eager = copy.deepcopy(model)
    x = ids(2, 40)
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[1, 30:] = False
    with torch.inference_mode():
        model.compile_backbone(freeze=True)
        for m in (None, mask):
            torch.testing.assert_close(model(x, m).logits, eager(x, m).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("freeze", [True, False])
def test_freezing_takes_effect(freeze):
    """Frozen weights are folded into the compiled graph: a later change to a weight is not seen."""
    model = tiny("tiny-bert").compile_backbone(freeze=freeze)
    ids = tokens(1, 16)
    with torch.inference_mode():
        before = model(ids).memory.clone()
        model.cell.model.base_model.encoder.layer[0].output.dense.weight.mul_(2)  # same shapes: no recompile
        after = model(ids).memory
    assert torch.equal(before, after) == freeze


@pytest.mark.slow
def test_compiled_backbone_trains_like_eager():
    model = tiny("tiny-bert")
    eager = copy.deepcopy(model)
    model.compile_backbone()
    ids, labels = tokens(2, 40), torch.tensor([1, 4])
    for m in (model, eager):
        m(ids, labels=labels).loss.backward()
    for (name, p), q in zip(model.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=lambda text: f"{name}: {text}")
    assert list(model.state_dict()) == list(eager.state_dict())  # saving is unchanged


def test_unknown_compile_mode_lists_the_allowed_ones():
    with pytest.raises(ValueError, match=r"unknown compile mode 'fast'.*reduce-overhead"):
        tiny().compile_backbone(mode="fast")
