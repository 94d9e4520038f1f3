"""Tiny random-init models of the HF families the RMT is tested on (no hub: built from configs).

Each entry builds a `transformers.PreTrainedModel` as a user would hand it to `from_backbone`: some
as a base model, some with a task or LM head (the RMT keeps what it needs, see BackboneAdapter.keep).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import transformers
from transformers import AutoConfig

VOCAB = 300  # small: the embedding and LM head stay tiny
POSITIONS = 128
SPECIAL = {"cls": 1, "sep": 2}  # for families whose config names neither (BERT-like configs know only pad)


@dataclass(frozen=True)
class Family:
    name: str  # test id
    model_type: str
    model_class: str  # the transformers class the user builds
    config: dict = field(default_factory=dict)  # beyond the shared small sizes
    special_tokens: dict | None = None  # None: the config names them (RoBERTa, ALBERT) or a decoder needs none

    def build(self, seed: int = 0) -> transformers.PreTrainedModel:
        sizes = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                     vocab_size=VOCAB, max_position_embeddings=POSITIONS)
        config = AutoConfig.for_model(self.model_type, **{**sizes, **self.config})
        transformers.logging.set_verbosity_error()  # "newly initialized" notes: every weight is random here
        torch.manual_seed(seed)
        return getattr(transformers, self.model_class)(config).eval()


GPT2_SIZES = dict(n_embd=32, n_layer=2, n_head=4, n_positions=POSITIONS, bos_token_id=1, eos_token_id=2)
FAMILIES = [
    Family("bert", "bert", "BertForSequenceClassification", special_tokens=SPECIAL),  # a head, a pooler in its body
    Family("roberta", "roberta", "RobertaForSequenceClassification", dict(bos_token_id=0, eos_token_id=2, pad_token_id=1)),
    Family("xlm-roberta", "xlm-roberta", "XLMRobertaModel", dict(bos_token_id=0, eos_token_id=2, pad_token_id=1)),
    Family("distilbert", "distilbert", "DistilBertModel", dict(dim=32, n_layers=2, n_heads=4, hidden_dim=64),
           special_tokens=SPECIAL),
    Family("albert", "albert", "AlbertForMaskedLM", dict(embedding_size=16)),  # factorized embeddings
    Family("electra", "electra", "ElectraModel", dict(embedding_size=16), special_tokens=SPECIAL),
    Family("deberta-v2", "deberta-v2", "DebertaV2Model", special_tokens=SPECIAL),
    Family("gpt2", "gpt2", "GPT2LMHeadModel", GPT2_SIZES),
    Family("gpt-neox", "gpt_neox", "GPTNeoXForCausalLM"),  # partial rotary
    Family("opt", "opt", "OPTForCausalLM", dict(ffn_dim=64, word_embed_proj_dim=32)),
    Family("llama-gqa", "llama", "LlamaForCausalLM", dict(num_key_value_heads=2)),  # 2 KV heads for 4 heads
    Family("llama-mqa", "llama", "LlamaForCausalLM", dict(num_key_value_heads=1)),  # multi-query
    Family("mistral", "mistral", "MistralForCausalLM", dict(num_key_value_heads=2, sliding_window=12)),
    Family("qwen2", "qwen2", "Qwen2ForCausalLM", dict(num_key_value_heads=2)),
    Family("gpt-bigcode", "gpt_bigcode", "GPTBigCodeForCausalLM", {**GPT2_SIZES, "multi_query": True}),  # no entry
    # ALiBi position biases, computed in each family's own attention code rather than through the interface.
    Family("bloom", "bloom", "BloomForCausalLM", dict(n_layer=2, n_head=4, n_embd=32)),
    Family("mpt", "mpt", "MptForCausalLM", dict(d_model=32, n_heads=4, n_layers=2, max_seq_len=POSITIONS,
                                                expansion_ratio=2)),
]
# Falcon computes attention in its own code too, but defaults to sdpa, which HF cannot switch after loading.
FALCON = Family("falcon-alibi", "falcon", "FalconForCausalLM", dict(alibi=True, num_kv_heads=4, multi_query=False))
BY_NAME = {f.name: f for f in FAMILIES}


def ids(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    """Token ids clear of the special ids."""
    return torch.randint(5, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))
