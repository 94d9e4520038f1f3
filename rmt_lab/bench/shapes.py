"""The few numbers of a transformer that decide its FLOPs, read from HuggingFace configs.

`TransformerShape` is what the analytic FLOP formulas of `rmt_lab.bench.flops` take. It is built
from a HF config object (or its `to_dict()` mapping) by `shape_from_config`, for BERT, RoBERTa,
GPT-2 and OPT. `KNOWN_MODELS` names the public configurations the report's Figure 3 is drawn for
(the OPT family, REFERENCE.md "OPT configurations"), plus the report's BERT backbone and GPT-2.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from transformers import BertConfig, GPT2Config, OPTConfig, PretrainedConfig

from rmt_lab.config import ConfigError


@dataclass(frozen=True)
class TransformerShape:
    """Sizes of a transformer stack, in the terms of the FLOP formulas.

    Every attention head has width `hidden // heads`, so q, k, v and the attention output are all
    `hidden` wide (true of every architecture supported here).
    """

    layers: int  # transformer blocks
    hidden: int  # residual stream width (d_model)
    heads: int  # attention heads; hidden must be a multiple of it
    ffn: int  # inner width of the MLP (4 * hidden in BERT, GPT-2, OPT)
    vocab: int  # rows of the LM head (its logits are one matmul of hidden x vocab per position)
    max_positions: int  # longest input the position embeddings allow (RoBERTa: after its offset)
    causal: bool  # decoder (GPT-2, OPT): RMT uses [read mem] tokens [write mem]; encoder: [CLS] mem [SEP] tokens [SEP]
    embed_dim: int = 0  # width of word embeddings and LM head; 0 means `hidden`. OPT-350M: 512 with
    #                     project_in / project_out matmuls to and from the 1024-wide stack
    lm_transform: bool = False  # BERT/RoBERTa MLM heads apply a hidden x hidden dense before the vocab matmul
    pooler: bool = False  # BERT's pooler / RoBERTa's classification dense: hidden x hidden on the classified position

    def __post_init__(self) -> None:
        for name in ("layers", "hidden", "heads", "ffn", "vocab", "max_positions"):
            _check_positive(f"TransformerShape.{name}", getattr(self, name))
        if self.embed_dim < 0 or isinstance(self.embed_dim, bool):
            raise ConfigError(f"TransformerShape.embed_dim must be >= 0 (0 means hidden), got {self.embed_dim!r}")
        if self.hidden % self.heads:
            raise ConfigError(
                f"TransformerShape.hidden={self.hidden} is not a multiple of heads={self.heads}"
            )

    @property
    def embed_width(self) -> int:
        """Width of the token embeddings and the LM head input."""
        return self.embed_dim or self.hidden

    @property
    def has_embed_projection(self) -> bool:
        """True where embeddings are narrower than the stack (OPT-350M), costing two extra matmuls."""
        return self.embed_width != self.hidden


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


# Per HF model_type: where each shape field lives in the config (names as in `config.to_dict()`).
_FIELDS: dict[str, dict[str, str]] = {
    "bert": dict(layers="num_hidden_layers", hidden="hidden_size", heads="num_attention_heads",
                 ffn="intermediate_size", vocab="vocab_size", max_positions="max_position_embeddings"),
    "gpt2": dict(layers="n_layer", hidden="n_embd", heads="n_head", vocab="vocab_size",
                 max_positions="n_positions"),  # ffn: n_inner, None meaning 4 * n_embd
    "opt": dict(layers="num_hidden_layers", hidden="hidden_size", heads="num_attention_heads",
                ffn="ffn_dim", vocab="vocab_size", max_positions="max_position_embeddings"),
}
_FIELDS["roberta"] = _FIELDS["xlm-roberta"] = _FIELDS["bert"]


def supported_model_types() -> list[str]:
    return sorted(_FIELDS)


def _get(config: PretrainedConfig | Mapping[str, Any], key: str, default: Any = None) -> Any:
    if isinstance(config, Mapping):
        return config.get(key, default)
    return getattr(config, key, default)


def shape_from_config(config: PretrainedConfig | Mapping[str, Any]) -> TransformerShape:
    """The `TransformerShape` of a HF config object (or its `to_dict()` mapping).

    Raises ConfigError for an unsupported `model_type` (listing the supported ones) and for a config
    missing fields the FLOP count needs (naming every missing field).
    """
    model_type = _get(config, "model_type")
    if model_type not in _FIELDS:
        raise ConfigError(
            f"cannot count FLOPs for model_type {model_type!r}; supported model types: {supported_model_types()}"
        )
    fields = _FIELDS[model_type]
    missing = sorted(key for key in fields.values() if _get(config, key) is None)
    if missing:
        raise ConfigError(f"{model_type} config is missing field(s) {missing} needed to count FLOPs")
    values = {name: _get(config, key) for name, key in fields.items()}
    hidden = values["hidden"]
    if model_type == "gpt2":
        values["ffn"] = _get(config, "n_inner") or 4 * hidden  # GPT2Config documents None as 4 * n_embd
        return TransformerShape(**values, causal=True)
    if model_type == "opt":
        return TransformerShape(**values, causal=True, embed_dim=_get(config, "word_embed_proj_dim") or hidden)
    if model_type in ("roberta", "xlm-roberta"):
        # RoBERTa numbers positions from padding_idx + 1, so that many rows are never usable.
        values["max_positions"] -= (_get(config, "pad_token_id") or 0) + 1
    return TransformerShape(**values, causal=bool(_get(config, "is_decoder", False)), lm_transform=True, pooler=True)


# Public configurations by name. OPT sizes: REFERENCE.md "OPT configurations" (vocab 50272, 2048
# positions). OPT-350M alone has 512-wide word embeddings (word_embed_proj_dim in its public config),
# projected to and from its 1024-wide stack; the table leaves that column out.
_OPT_SIZES: dict[str, tuple[int, int, int, int]] = {  # name: (layers, hidden, heads, ffn)
    "opt-125m": (12, 768, 12, 3072),
    "opt-350m": (24, 1024, 16, 4096),
    "opt-1.3b": (24, 2048, 32, 8192),
    "opt-2.7b": (32, 2560, 32, 10240),
    "opt-6.7b": (32, 4096, 32, 16384),
    "opt-13b": (40, 5120, 40, 20480),
    "opt-30b": (48, 7168, 56, 28672),
    "opt-66b": (64, 9216, 72, 36864),
    "opt-175b": (96, 12288, 96, 49152),
}


def _opt(name: str) -> Callable[[], PretrainedConfig]:
    layers, hidden, heads, ffn = _OPT_SIZES[name]

    def build() -> PretrainedConfig:
        return OPTConfig(
            num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads, ffn_dim=ffn,
            vocab_size=50272, max_position_embeddings=2048,
            word_embed_proj_dim=512 if name == "opt-350m" else hidden,
        )

    return build


KNOWN_MODELS: dict[str, Callable[[], PretrainedConfig]] = {name: _opt(name) for name in _OPT_SIZES}
# The report's backbone: BertConfig defaults are bert-base sizes; the cased vocabulary has 28996 entries.
KNOWN_MODELS["bert-base-cased"] = lambda: BertConfig(vocab_size=28996)
KNOWN_MODELS["gpt2"] = lambda: GPT2Config()  # GPT2Config defaults are the 124M GPT-2
OPT_MODELS: tuple[str, ...] = tuple(_OPT_SIZES)  # Figure 3's family, smallest first


def known_model_names() -> list[str]:
    return list(KNOWN_MODELS)


def model_config(name: str) -> PretrainedConfig:
    """A fresh HF config of a known public model; an unknown name lists the known ones."""
    if name not in KNOWN_MODELS:
        raise ConfigError(f"unknown model {name!r}; known models: {known_model_names()}")
    return KNOWN_MODELS[name]()
