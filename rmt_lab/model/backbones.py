"""Backbones: ready ones by name, and any HF model given as an object or a local folder.

Ready backbones are tiny random ones for tests and quick CPU runs and the pretrained MiniLM; they all
use the offline WordPiece tokenizer of `rmt_lab.assets` (vocab 30522), so one tokenizer serves all
tasks. Weights are built from configs or loaded from verified local files; nothing is downloaded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import transformers
from torch import nn
from transformers import AutoConfig, BertConfig, GPT2Config, PretrainedConfig

from rmt_lab import assets
from rmt_lab.model.adapters import BackboneAdapter, adapter_for, default_class_name

VOCAB_SIZE = 30522  # the MiniLM WordPiece vocabulary shared by every ready backbone


@dataclass(frozen=True)
class SpecialTokens:
    # Only the encoder layout puts special tokens into a segment (cell.py): a decoder needs none of them.
    cls: int | None  # [CLS], first position of an encoder segment; its final state feeds the classifier
    sep: int | None  # [SEP], closes the memory block and the segment
    pad: int | None  # [PAD], the tokenizer's filler; never fed to the backbone (padding is masked out)


# Where a model config names [CLS] and [SEP] when it has no cls/sep_token_id: RoBERTa and ALBERT call
# them bos and eos (<s> and </s>, [CLS] and [SEP] are those ids in their tokenizers).
CONFIG_KEYS = {"cls": ("cls_token_id", "bos_token_id"), "sep": ("sep_token_id", "eos_token_id"),
               "pad": ("pad_token_id",)}


def resolve_special_tokens(layout: str, config: PretrainedConfig, special_tokens: Mapping[str, int] | None = None,
                           tokenizer=None, name: str = "the backbone") -> SpecialTokens:
    """Each id from `special_tokens` (keys cls, sep, pad), else the tokenizer, else the model config.
    An encoder needs cls and sep; a missing one is an error naming what to pass."""
    given = dict(special_tokens or {})
    unknown = sorted(set(given) - set(CONFIG_KEYS))
    if unknown:
        raise ValueError(f"special_tokens has unknown keys {unknown}; allowed keys: {list(CONFIG_KEYS)}")
    ids = {}
    for field, config_keys in CONFIG_KEYS.items():
        value = given.get(field)
        if value is None and tokenizer is not None:
            value = getattr(tokenizer, f"{field}_token_id", None)
        for key in config_keys:
            value = getattr(config, key, None) if value is None else value
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"special token {field}={value!r} of {name} must be an integer token id")
        ids[field] = value
    missing = [f for f in ("cls", "sep") if ids[f] is None] if layout == "encoder" else []
    if missing:
        raise ValueError(
            f"{name} is an encoder, whose segments start with [CLS] and end with [SEP], but the id of {missing} is "
            "known neither from special_tokens, nor from a tokenizer, nor from the model config "
            f"({', '.join(k for f in missing for k in CONFIG_KEYS[f])}); pass special_tokens={{'cls': ..., "
            "'sep': ...}} or tokenizer=<the model's tokenizer or its local folder>"
        )
    return SpecialTokens(**ids)


@dataclass
class Backbone:
    """A HF model with the adapter and special token ids that the memory cell needs."""

    name: str
    model: nn.Module
    adapter: BackboneAdapter
    special: SpecialTokens
    # The model's own tokenizer, which turns its token ids into text (trace labels, previews): MiniLM's WordPiece
    # for the ready backbones; None where none was given (a model object alone) and ids stay ids.
    tokenizer: Any = None

    @property
    def config(self) -> PretrainedConfig:
        return self.model.config


def _tokenizer_specials() -> SpecialTokens:
    tok = assets.load_tokenizer()
    return SpecialTokens(cls=tok.cls_token_id, sep=tok.sep_token_id, pad=tok.pad_token_id)


def _tiny_bert() -> PretrainedConfig:
    # Small enough that a test builds and runs it in milliseconds; 512 positions like BERT.
    return BertConfig(
        vocab_size=VOCAB_SIZE, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=512,
    )


def _small_bert() -> PretrainedConfig:
    # The `quick` curriculum's backbone: big enough to learn the report's tasks, small enough for a 2-core CPU.
    return BertConfig(
        vocab_size=VOCAB_SIZE, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=512, max_position_embeddings=512,
    )


def _tiny_gpt2() -> PretrainedConfig:
    # [SEP] (id 102) doubles as begin/end of text: the GPT-2 ids 50256 do not exist in this vocabulary.
    return GPT2Config(
        vocab_size=VOCAB_SIZE, n_embd=64, n_layer=2, n_head=4, n_positions=1024,
        bos_token_id=102, eos_token_id=102, pad_token_id=0,
    )


def _gpt2_minilm() -> PretrainedConfig:
    # A decoder of MiniLM's size (6 layers x 384, 12 heads, FFN 1536, its vocabulary): the decoder layout's
    # speed is measured at the encoder's cost per position. Special ids as in tiny-gpt2.
    return GPT2Config(
        vocab_size=VOCAB_SIZE, n_embd=384, n_layer=6, n_head=12, n_inner=1536, n_positions=1024,
        bos_token_id=102, eos_token_id=102, pad_token_id=0,
    )


def _minilm_config() -> PretrainedConfig:
    return AutoConfig.from_pretrained(str(assets.minilm_dir()), local_files_only=True)


@dataclass(frozen=True)
class BackboneSpec:
    make_config: Callable[[], PretrainedConfig]
    pretrained: bool  # load the verified MiniLM weights after building
    description: str


BACKBONES: dict[str, BackboneSpec] = {
    "tiny-bert": BackboneSpec(_tiny_bert, False, "BERT, 2 layers, hidden 64, random init (tests, quick runs)"),
    "small-bert": BackboneSpec(_small_bert, False, "BERT, 2 layers, hidden 128, random init (the quick curriculum)"),
    "tiny-gpt2": BackboneSpec(_tiny_gpt2, False, "GPT-2, 2 layers, hidden 64, random init (tests, quick runs)"),
    "gpt2-minilm": BackboneSpec(_gpt2_minilm, False, "GPT-2 of MiniLM's size, 6 x 384, random init (benchmarks)"),
    "minilm": BackboneSpec(_minilm_config, True, "all-MiniLM-L6-v2 BERT, 6 layers, hidden 384, pretrained, offline"),
    # Timings do not depend on the weights: where only the tokenizer files are installed (a GPU machine
    # the 90 MB weights cannot be copied to, say), speed and memory are measured on this one.
    "minilm-random": BackboneSpec(_minilm_config, False, "all-MiniLM-L6-v2's architecture, random init (benchmarks)"),
}


def available_backbones() -> list[str]:
    return sorted(BACKBONES)


def backbone_from_config(name: str, config: PretrainedConfig, special: SpecialTokens | None = None,
                         class_name: str | None = None, init_kwargs: dict | None = None) -> Backbone:
    """A randomly initialised backbone of `config` (used when loading a saved RMT); `class_name` and
    `init_kwargs` as in `BackboneAdapter.build`. `special`: None for the ready backbones' tokenizer."""
    adapter = adapter_for(config)
    return Backbone(name, adapter.build(config, class_name, init_kwargs), adapter, special or _tokenizer_specials())


def backbone_from_model(model: nn.Module, name: str | None = None, special_tokens: Mapping[str, int] | None = None,
                        tokenizer=None) -> Backbone:
    """Wrap a built `transformers.PreTrainedModel` (a base model or one with a head); see `BackboneAdapter.keep`.
    `name` defaults to the model's class name, which no ready backbone's name can equal. `tokenizer`: an object
    or a local folder (read offline)."""
    if not isinstance(model, transformers.PreTrainedModel):
        raise TypeError(f"a backbone must be a ready name {available_backbones()}, a local folder written by "
                        f"save_pretrained, or a transformers.PreTrainedModel; got {type(model).__name__}")
    adapter = adapter_for(model.config)
    name = name or type(model).__name__
    tokenizer = assets.as_tokenizer(tokenizer) if tokenizer is not None else None
    special = resolve_special_tokens(adapter.layout, model.config, special_tokens, tokenizer, name)
    return Backbone(name, adapter.keep(model), adapter, special, tokenizer)


def backbone_from_folder(folder: str | Path, special_tokens: Mapping[str, int] | None = None, tokenizer=None,
                         dropout: float | None = None) -> Backbone:
    """Load a HF model from a local folder written by `save_pretrained` (never from the hub), as the class it
    was saved as (`config.architectures`) or else the layout's default class. A tokenizer is taken from
    `tokenizer` (an object or a local folder), else from the model folder when it holds one."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} holds no config.json: not a folder written by a HF model's "
                                f"save_pretrained, and not a ready backbone {available_backbones()}")
    config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    set_dropout(config, dropout)
    saved_as = (getattr(config, "architectures", None) or [None])[0]
    model_class = getattr(transformers, saved_as or default_class_name(config, adapter_for(config).layout), None)
    if model_class is None:
        raise ValueError(f"{folder}: transformers {transformers.__version__} has no model class {saved_as!r}")
    model = model_class.from_pretrained(str(folder), config=config, local_files_only=True)
    if tokenizer is None and any((folder / f).is_file() for f in assets.TOKENIZER_FILES):
        tokenizer = folder
    # The absolute path names the model in checkpoints and traces, and cannot be a ready backbone's name.
    return backbone_from_model(model, str(folder.resolve()), special_tokens, tokenizer)


@contextlib.contextmanager
def attention_implementation(model: nn.Module, impl: str) -> Iterator[str]:
    """The HF model `model` runs the attention implementation `impl` inside the block (a name of transformers'
    AttentionInterface); the one it ran before is set back when the block ends, however it ends. Yields `impl`."""
    own = model.config._attn_implementation
    if own != impl:
        model.set_attn_implementation(impl)
    try:
        yield impl
    finally:
        if model.config._attn_implementation != own:
            model.set_attn_implementation(own)


def is_dropout_key(key: str) -> bool:
    """Whether a HF config field is a dropout probability (HF names them *dropout* or *pdrop*)."""
    return "dropout" in key or "pdrop" in key


def set_dropout(config: PretrainedConfig, dropout: float | None) -> None:
    """Set every dropout probability of `config` (`is_dropout_key`) to `dropout`; None keeps them."""
    if dropout is None:
        return
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout={dropout!r} must be in [0, 1)")
    for key, value in config.to_dict().items():
        if is_dropout_key(key) and isinstance(value, float):
            setattr(config, key, float(dropout))


def backbone_config(name: str, dropout: float | None = None) -> PretrainedConfig:
    """A fresh HF config of the ready backbone `name`; an unknown name lists the available ones.

    `dropout` replaces every dropout probability of the config (None keeps its own).
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; available backbones: {available_backbones()}")
    config = BACKBONES[name].make_config()
    set_dropout(config, dropout)
    return config


def load_backbone(name: str, dropout: float | None = None) -> Backbone:
    """Build the ready backbone `name` (weights loaded when it is pretrained); see `backbone_config`."""
    backbone = backbone_from_config(name, backbone_config(name, dropout))
    backbone.tokenizer = assets.load_tokenizer()
    if BACKBONES[name].pretrained:
        load_pretrained_weights(backbone)
    return backbone


def load_pretrained_weights(backbone: Backbone) -> None:
    """Load the verified MiniLM weights into `backbone`'s body (built from a MiniLM config)."""
    from safetensors.torch import load_file

    state = load_file(str(assets.verified_minilm_weights()))
    # The checkpoint was saved from a BertModel whose keys may carry no prefix; the pooler is unused.
    body = backbone.adapter.body(backbone.model)
    # The saved `embeddings.position_ids` buffer is a constant arange that newer HF rebuilds itself.
    state = {k.removeprefix("bert."): v for k, v in state.items() if "pooler" not in k and "position_ids" not in k}
    try:
        missing, unexpected = body.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shapes differ: another architecture
        raise RuntimeError(f"MiniLM weights do not fit backbone {backbone.name!r}: {err}") from err
    if missing or unexpected:
        raise RuntimeError(f"MiniLM weights do not fit the model: missing {missing}, unexpected {unexpected}")
