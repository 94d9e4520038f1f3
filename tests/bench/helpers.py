"""Tiny HF configs (built on the meta device in the tests, never downloaded)."""

from transformers import BertConfig, GPT2Config, OPTConfig, RobertaConfig

_SMALL = dict(vocab_size=1000, bos_token_id=0, eos_token_id=2, pad_token_id=1)


def tiny_bert():
    return BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                      max_position_embeddings=512, **_SMALL)


def tiny_roberta():
    return RobertaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                         max_position_embeddings=514, **_SMALL)


def tiny_gpt2():
    return GPT2Config(n_embd=64, n_layer=3, n_head=4, n_positions=1024, **_SMALL)


def tiny_opt(word_embed_proj_dim=64):
    # word_embed_proj_dim != hidden_size exercises OPT-350M's project_in / project_out.
    return OPTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, ffn_dim=256,
                     max_position_embeddings=1024, word_embed_proj_dim=word_embed_proj_dim, **_SMALL)


TINY = {"bert": tiny_bert, "roberta": tiny_roberta, "gpt2": tiny_gpt2, "opt": tiny_opt,
        "opt-proj": lambda: tiny_opt(word_embed_proj_dim=32)}
