"""Per-architecture backbone adapters: the few facts the RMT needs about a HuggingFace model.

An adapter maps canonical parts (token embeddings, the body that returns final hidden states, the
LM head, max positions) to a HF model. No HF modeling code is copied: everything goes through the
models' public accessors (`get_input_embeddings`, `base_model`, `get_output_embeddings`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, PretrainedConfig


@dataclass(frozen=True)
class BackboneAdapter:
    family: str  # registry name, e.g. "bert"
    model_types: tuple[str, ...]  # HF `config.model_type` values this adapter serves
    layout: Literal["encoder", "decoder"]  # encoder: bidirectional, [CLS] mem [SEP]; decoder: causal, read/write mem
    position_offset: int = 0  # positions the architecture reserves (RoBERTa: padding_idx + 1)

    def build(self, config: PretrainedConfig) -> nn.Module:
        """A randomly initialised model of `config` (weights are loaded separately, never downloaded)."""
        auto = AutoModelForCausalLM if self.layout == "decoder" else AutoModel
        kwargs = {} if self.layout == "decoder" else {"add_pooling_layer": False}
        return auto.from_config(config, **kwargs)

    def max_positions(self, config: PretrainedConfig) -> int:
        for key in ("max_position_embeddings", "n_positions"):
            if getattr(config, key, None):
                return int(getattr(config, key)) - self.position_offset
        raise ValueError(f"{config.model_type} config has neither max_position_embeddings nor n_positions")

    @staticmethod
    def body(model: nn.Module) -> nn.Module:
        """The module that maps inputs_embeds to final hidden states (no LM head)."""
        return model.base_model

    @staticmethod
    def token_embeddings(model: nn.Module) -> nn.Embedding:
        return model.get_input_embeddings()

    def lm_head(self, model: nn.Module) -> nn.Module | None:
        return model.get_output_embeddings() if self.layout == "decoder" else None


ADAPTERS: dict[str, BackboneAdapter] = {}


def register_adapter(adapter: BackboneAdapter) -> BackboneAdapter:
    ADAPTERS[adapter.family] = adapter
    return adapter


register_adapter(BackboneAdapter("bert", ("bert",), "encoder"))
register_adapter(BackboneAdapter("roberta", ("roberta", "xlm-roberta"), "encoder", position_offset=2))
register_adapter(BackboneAdapter("gpt2", ("gpt2",), "decoder"))


def supported_model_types() -> list[str]:
    return sorted(t for a in ADAPTERS.values() for t in a.model_types)


def adapter_for(config: PretrainedConfig) -> BackboneAdapter:
    """The adapter serving `config.model_type`; an unknown architecture lists the supported ones."""
    for adapter in ADAPTERS.values():
        if config.model_type in adapter.model_types:
            return adapter
    raise ValueError(
        f"unsupported backbone architecture {config.model_type!r}; supported model types: {supported_model_types()}"
    )
