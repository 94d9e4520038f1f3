"""Bring your own HF model: every family in tests/model/families.py runs, trains, streams, saves and loads
through `RecurrentWrapper.from_backbone`, with the memory path off equal to the plain backbone."""

import pytest
import torch
from transformers import AutoModel, BertConfig, PretrainedConfig

from rmt_lab.model import ADAPTERS, BackboneAdapter, RecurrentWrapper, RMTConfig, adapter_for, register_adapter
from tests.model.families import BY_NAME, FAMILIES, SPECIAL, VOCAB, ids

NAMES = [f.name for f in FAMILIES]
ENCODERS = {"bert", "roberta", "xlm-roberta", "distilbert", "albert", "electra", "deberta-v2"}


def rmt(name, seed=0, **overrides):
    family = BY_NAME[name]
    config = dict(num_mem_tokens=3, segment_size=16, num_classes=3)
    config.update(overrides)
    return RecurrentWrapper.from_backbone(family.build(seed), RMTConfig(**config),
                                          special_tokens=family.special_tokens).eval()


@pytest.mark.parametrize("name", NAMES)
def test_layout_and_memory_width_come_from_the_model(name):
    model = rmt(name)
    cell = model.cell
    assert cell.layout == ("encoder" if name in ENCODERS else "decoder")
    assert cell.d_model == 32 and model.init_memory(2).shape == (2, 3, 32)  # the hidden size
    factorized = cell.embeddings.embedding_dim != cell.d_model
    assert (cell.memory_in is not None) == factorized == (name in ("albert", "electra"))


@pytest.mark.parametrize("name", NAMES)
def test_forward_and_backward_over_several_segments(name):
    model = rmt(name).train()
    x = ids(2, 40)  # 3 segments, the last one short
    if model.cell.layout == "encoder":
        out = model(x, labels=torch.tensor([0, 2]))
    else:
        out = model(x, labels=x)  # next-token loss inside each segment
    assert out.n_segments == 3 and torch.isfinite(out.loss)
    out.loss.backward()
    grads = {"memory": model.cell.memory.grad, "embeddings": model.cell.embeddings.weight.grad}
    if model.cell.memory_in is not None:
        grads["memory_in"] = model.cell.memory_in.weight.grad
    for part, grad in grads.items():
        assert grad is not None and grad.abs().sum() > 0, f"no gradient reaches {part}"


@pytest.mark.parametrize("name", NAMES)
def test_without_memory_the_cell_is_the_plain_backbone(name):
    family = BY_NAME[name]
    user_model = family.build()
    model = RecurrentWrapper.from_backbone(user_model, RMTConfig(num_mem_tokens=0, segment_size=16),
                                           special_tokens=family.special_tokens).eval()
    x = ids(2, 16)
    with torch.no_grad():
        if model.cell.layout == "encoder":
            sp = model.cell.special
            full = torch.cat([torch.full((2, 1), sp.cls), x, torch.full((2, 1), sp.sep)], dim=1)
            ref = user_model.base_model(input_ids=full).last_hidden_state  # (2, 18, d)
            out = model.cell(x, None, model.init_memory(2))
            torch.testing.assert_close(out.hidden, ref[:, 1:-1], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(out.summary, ref[:, 0], atol=1e-5, rtol=1e-5)
        else:
            ref = user_model(input_ids=x).logits  # (2, 16, vocab)
            got = model(x, keep=["lm_logits"]).segments[0]["lm_logits"]
            torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_streaming_equals_forward(name):
    model = rmt(name)
    x = ids(2, 40)
    with torch.no_grad():
        whole = model(x, keep=["memory"])
        streamed = model.stream((x[:, i:i + 16] for i in range(0, 40, 16)), keep=["memory"])
    assert streamed.n_segments == whole.n_segments == 3
    for a, b in zip(whole.segments, streamed.segments, strict=True):
        torch.testing.assert_close(a["memory"], b["memory"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(whole.logits, streamed.logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_save_and_load_give_an_eval_model_with_equal_outputs(name, tmp_path):
    model = rmt(name).train()
    with torch.no_grad():  # trained-looking weights: the memory map and classifier away from their init
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    model.save_pretrained(tmp_path)
    loaded = RecurrentWrapper.from_pretrained(tmp_path)  # missing or unexpected keys would raise
    assert not loaded.training and all(not m.training for m in loaded.modules())
    assert type(loaded.cell.model) is type(model.cell.model)
    assert loaded.cell.backbone_name == model.cell.backbone_name == BY_NAME[name].model_class
    x = ids(2, 40)
    with torch.no_grad():
        a, b = model.eval()(x, keep=["memory"]), loaded(x, keep=["memory"])
    assert torch.equal(a.memory, b.memory) and torch.equal(a.logits, b.logits)


@pytest.mark.parametrize("name", NAMES)
def test_adapters_train_merge_and_reload_on_every_family(name, tmp_path):
    plain = rmt(name)
    model = rmt(name, lora_rank=4)
    model.load_state_dict(plain.state_dict(), strict=False)  # same weights, adapters at B = 0
    x = ids(2, 40)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, plain(x).logits, atol=0, rtol=0)  # starts as the plain model
    model.train()
    out = model(x, labels=torch.tensor([0, 2])) if model.cell.layout == "encoder" else model(x, labels=x)
    out.loss.backward()
    # every adapted layer learns (a BERT pooler's is unused: the RMT has its own classifier)
    b_grads = [p.grad for n, p in model.named_parameters() if n.endswith("lora_b") and "pooler" not in n]
    assert b_grads and all(g is not None and g.abs().sum() > 0 for g in b_grads)
    frozen = [n for n, p in model.cell.model.named_parameters() if not p.requires_grad]
    assert any(n.endswith("weight") for n in frozen)  # the backbone's own matrices stay frozen
    with torch.no_grad():  # adapters away from zero, as after training
        for n, p in model.named_parameters():
            if "lora" in n:
                p.add_(torch.randn_like(p) * 0.05)
    model.eval().save_pretrained(tmp_path)
    with torch.no_grad():
        ref = model(x).logits
        torch.testing.assert_close(RecurrentWrapper.from_pretrained(tmp_path)(x).logits, ref, atol=0, rtol=0)
        torch.testing.assert_close(model.merge_adapters()(x).logits, ref, atol=1e-5, rtol=1e-4)


def test_a_task_head_is_dropped_and_its_body_kept_with_its_pooler(tmp_path):
    bert = BY_NAME["bert"].build()  # BertForSequenceClassification: its body was built with a pooler
    model = RecurrentWrapper.from_backbone(bert, RMTConfig(segment_size=16), special_tokens=SPECIAL)
    assert model.cell.model is bert.bert and model.cell.model.pooler is not None
    model.save_pretrained(tmp_path)
    assert RecurrentWrapper.from_pretrained(tmp_path).cell.model.pooler is not None
    roberta = BY_NAME["roberta"].build()  # its head builds the body without one
    assert RecurrentWrapper.from_backbone(roberta, RMTConfig(segment_size=16)).cell.model.pooler is None


def test_a_local_folder_loads_offline_with_its_tokenizer(tmp_path):
    from rmt_lab.assets import load_tokenizer

    family = BY_NAME["distilbert"]
    user_model = family.build()
    user_model.save_pretrained(tmp_path / "hf")
    tokenizer = load_tokenizer()  # MiniLM's WordPiece: [CLS] 101, [SEP] 102, [PAD] 0
    tokenizer.save_pretrained(tmp_path / "hf")
    config = RMTConfig(segment_size=16)
    from_folder = RecurrentWrapper.from_backbone(tmp_path / "hf", config).eval()
    assert vars(from_folder.cell.special) == {"cls": 101, "sep": 102, "pad": 0}
    assert from_folder.cell.backbone_name == str((tmp_path / "hf").resolve())
    from_object = RecurrentWrapper.from_backbone(user_model, config, tokenizer=tokenizer).eval()
    from_object.cell.memory.data.copy_(from_folder.cell.memory.data)  # the one random part the RMT adds
    x = ids(1, 40)
    with torch.no_grad():
        assert torch.equal(from_folder(x).memory, from_object(x).memory)
    # dropout is set on the folder's config before its model is built; a built object cannot take it.
    assert RecurrentWrapper.from_backbone(str(tmp_path / "hf"), config, dropout=0.0).cell.model.config.dropout == 0
    with pytest.raises(ValueError, match=r"dropout=0.0 cannot reach .* set the probabilities on its config"):
        RecurrentWrapper.from_backbone(user_model, config, dropout=0.0)


def test_special_tokens_come_from_the_dict_then_the_tokenizer_then_the_config():
    bert = BY_NAME["bert"].build()
    config = RMTConfig(segment_size=16)
    with pytest.raises(ValueError, match=r"encoder.*id of \['cls', 'sep'\].*pass special_tokens=\{'cls'.*tokenizer="):
        RecurrentWrapper.from_backbone(bert, config)
    with pytest.raises(ValueError, match=r"unknown keys \['bos'\]; allowed keys: \['cls', 'sep', 'pad'\]"):
        RecurrentWrapper.from_backbone(bert, config, special_tokens={"bos": 1})
    with pytest.raises(ValueError, match=rf"special token sep=400 .* outside its vocabulary \[0, {VOCAB}\)"):
        RecurrentWrapper.from_backbone(bert, config, special_tokens={"cls": 1, "sep": 400})

    class Tok:  # what from_backbone reads of a tokenizer, and what makes an object one (it names ids)
        cls_token_id, sep_token_id, pad_token_id = 7, 8, None

        def __call__(self, texts, **kwargs):
            raise NotImplementedError

        def convert_ids_to_tokens(self, ids):
            return [f"t{i}" for i in ids]

    special = RecurrentWrapper.from_backbone(bert, config, tokenizer=Tok(), special_tokens={"sep": 9}).cell.special
    assert (special.cls, special.sep, special.pad) == (7, 9, 0)  # pad from BertConfig.pad_token_id
    roberta = RecurrentWrapper.from_backbone(BY_NAME["roberta"].build(), config).cell.special
    assert (roberta.cls, roberta.sep, roberta.pad) == (0, 2, 1)  # <s> and </s>, named bos and eos by its config
    gpt2 = RecurrentWrapper.from_backbone(BY_NAME["gpt-neox"].build(), config)  # a decoder needs none
    assert gpt2.cell.layout == "decoder"


def test_bad_backbones_are_named():
    config = RMTConfig(segment_size=16)
    with pytest.raises(ValueError, match=r"unknown backbone 'no-such-model'.*tiny-bert.*local folder"):
        RecurrentWrapper.from_backbone("no-such-model", config)
    with pytest.raises(TypeError, match=r"ready name .* or a transformers.PreTrainedModel; got Linear"):
        RecurrentWrapper.from_backbone(torch.nn.Linear(2, 2), config)
    with pytest.raises(ValueError, match="ready backbone 'tiny-bert' uses rmt_lab's own tokenizer"):
        RecurrentWrapper.from_backbone("tiny-bert", config, special_tokens=SPECIAL)


def test_a_family_without_a_derivable_layout_names_the_fix():
    class ToyConfig(PretrainedConfig):
        model_type = "toy-rmt"  # in no Auto mapping

    with pytest.raises(ValueError, match=r"cannot tell whether 'toy-rmt' is an encoder or a decoder.*register_adapter\("
                                         r"BackboneAdapter\('toy-rmt', \('toy-rmt',\), layout="):
        adapter_for(ToyConfig())
    try:
        register_adapter(BackboneAdapter("toy-rmt", ("toy-rmt",), layout="decoder"))
        assert adapter_for(ToyConfig()).layout == "decoder"
    finally:
        ADAPTERS.pop("toy-rmt")
    with pytest.raises(ValueError, match=r"layout='both'; allowed values: \[None, 'encoder', 'decoder'\]"):
        register_adapter(BackboneAdapter("toy-rmt", ("toy-rmt",), layout="both"))


def test_a_bert_configured_as_decoder_gets_the_decoder_layout():
    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, is_decoder=True)
    assert adapter_for(config).layout == "decoder"
    config.is_decoder = False
    assert adapter_for(AutoModel.from_config(config).config).layout == "encoder"
