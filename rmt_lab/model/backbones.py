"""Ready backbones by name: tiny random ones for tests and quick CPU runs, and the pretrained MiniLM.

Every backbone uses the offline WordPiece tokenizer of `rmt_lab.assets` (vocab 30522), so one
tokenizer serves all tasks. Weights are built from configs or loaded from the verified local file;
nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn
from transformers import AutoConfig, BertConfig, GPT2Config, PretrainedConfig

from rmt_lab import assets
from rmt_lab.model.adapters import BackboneAdapter, adapter_for

VOCAB_SIZE = 30522  # the MiniLM WordPiece vocabulary shared by every ready backbone


@dataclass(frozen=True)
class SpecialTokens:
    cls: int  # [CLS], first position of an encoder segment; its final state feeds the classifier
    sep: int  # [SEP], closes the memory block and the segment
    pad: int  # [PAD], filler for positions masked out


@dataclass
class Backbone:
    """A HF model with the adapter and special token ids that the memory cell needs."""

    name: str
    model: nn.Module
    adapter: BackboneAdapter
    special: SpecialTokens

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
    "minilm": BackboneSpec(_minilm_config, True, "all-MiniLM-L6-v2 BERT, 6 layers, hidden 384, pretrained, offline"),
    # Timings do not depend on the weights: where only the tokenizer files are installed (a GPU machine
    # the 90 MB weights cannot be copied to, say), speed and memory are measured on this one.
    "minilm-random": BackboneSpec(_minilm_config, False, "all-MiniLM-L6-v2's architecture, random init (benchmarks)"),
}


def available_backbones() -> list[str]:
    return sorted(BACKBONES)


def backbone_from_config(name: str, config: PretrainedConfig, special: SpecialTokens | None = None) -> Backbone:
    """A randomly initialised backbone of `config` (used when loading a saved RMT)."""
    adapter = adapter_for(config)
    return Backbone(name, adapter.build(config), adapter, special or _tokenizer_specials())


DROPOUT_KEYS = (  # every dropout probability of the supported HF configs
    "hidden_dropout_prob", "attention_probs_dropout_prob", "resid_pdrop", "embd_pdrop", "attn_pdrop",
)


def backbone_config(name: str, dropout: float | None = None) -> PretrainedConfig:
    """A fresh HF config of the ready backbone `name`; an unknown name lists the available ones.

    `dropout` replaces every dropout probability of the config (None keeps its own).
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; available backbones: {available_backbones()}")
    config = BACKBONES[name].make_config()
    if dropout is not None:
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout} must be in [0, 1)")
        for key in DROPOUT_KEYS:
            if hasattr(config, key):
                setattr(config, key, dropout)
    return config


def load_backbone(name: str, dropout: float | None = None) -> Backbone:
    """Build the ready backbone `name` (weights loaded when it is pretrained); see `backbone_config`."""
    backbone = backbone_from_config(name, backbone_config(name, dropout))
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
