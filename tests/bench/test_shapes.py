"""TransformerShape from HF configs: the fields each architecture keeps, and clear errors."""

from types import SimpleNamespace

import pytest
from transformers import GPT2Config

from rmt_lab.bench import TransformerShape, model_config, shape_from_config
from rmt_lab.config import ConfigError, from_dict
from tests.bench.helpers import tiny_bert, tiny_gpt2, tiny_opt, tiny_roberta


def test_shapes_of_each_architecture():
    assert shape_from_config(tiny_bert()) == TransformerShape(
        layers=2, hidden=64, heads=4, ffn=128, vocab=1000, max_positions=512, causal=False,
        lm_transform=True, pooler=True)
    # RoBERTa positions start after padding_idx (1): 514 rows, 512 usable.
    assert shape_from_config(tiny_roberta()).max_positions == 512
    gpt2 = shape_from_config(tiny_gpt2())
    assert (gpt2.layers, gpt2.hidden, gpt2.ffn, gpt2.max_positions, gpt2.causal) == (3, 64, 256, 1024, True)
    opt = shape_from_config(tiny_opt(word_embed_proj_dim=32))
    assert (opt.ffn, opt.embed_width, opt.has_embed_projection, opt.causal) == (256, 32, True, True)


def test_opt_table_sizes():
    s = shape_from_config(model_config("opt-175b"))
    assert (s.layers, s.hidden, s.heads, s.ffn, s.vocab, s.max_positions) == (96, 12288, 96, 49152, 50272, 2048)
    assert shape_from_config(model_config("opt-350m")).embed_width == 512  # public OPT-350M config
    assert not shape_from_config(model_config("opt-1.3b")).has_embed_projection


def test_gpt2_n_inner_set_explicitly():
    assert shape_from_config(GPT2Config(n_embd=64, n_layer=1, n_head=4, n_inner=100)).ffn == 100


def test_mapping_is_accepted():
    assert shape_from_config(tiny_opt().to_dict()) == shape_from_config(tiny_opt())


def test_missing_fields_are_named():
    fields = tiny_opt().to_dict()
    del fields["ffn_dim"], fields["hidden_size"]
    with pytest.raises(ConfigError, match=r"opt config is missing field\(s\) \['ffn_dim', 'hidden_size'\]"):
        shape_from_config(fields)
    # HF v5 configs refuse None fields, so a stripped-down config object stands in for a foreign one.
    partial = SimpleNamespace(model_type="gpt2", n_embd=64, n_head=4)
    missing = r"gpt2 config is missing field\(s\) \['n_layer', 'n_positions', 'vocab_size'\]"
    with pytest.raises(ConfigError, match=missing):
        shape_from_config(partial)


def test_unsupported_model_type_lists_supported():
    with pytest.raises(ConfigError, match=r"model_type 't5'.*\['bert', 'gpt2', 'opt', 'roberta'"):
        shape_from_config({"model_type": "t5"})


@pytest.mark.parametrize("field,value", [("layers", 0), ("hidden", -8), ("heads", 2.0), ("ffn", True)])
def test_non_positive_sizes_rejected(field, value):
    sizes = dict(layers=2, hidden=64, heads=4, ffn=256, vocab=100, max_positions=128, causal=True)
    sizes[field] = value
    with pytest.raises(ConfigError, match=f"TransformerShape.{field} must be a positive integer"):
        TransformerShape(**sizes)


def test_heads_must_divide_hidden():
    with pytest.raises(ConfigError, match="not a multiple of heads"):
        TransformerShape(layers=1, hidden=64, heads=5, ffn=256, vocab=100, max_positions=128, causal=True)


def test_strict_from_dict_for_json_shapes():
    sizes = dict(layers=2, hidden=64, heads=4, ffn=256, vocab=100, max_positions=128, causal=True)
    assert from_dict(TransformerShape, sizes).hidden == 64
    with pytest.raises(ConfigError, match="unknown TransformerShape key"):
        from_dict(TransformerShape, {**sizes, "d_model": 64})


def test_unknown_model_name_lists_known():
    with pytest.raises(ConfigError, match=r"unknown model 'opt-7b'; known models: \['opt-125m'.*'opt-175b'"):
        model_config("opt-7b")
