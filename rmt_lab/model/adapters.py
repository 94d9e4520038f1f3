"""Backbone adapters: the few facts the RMT needs about a HuggingFace model, read from HF's own structure.

Everything goes through the models' public accessors (`get_input_embeddings`, `base_model`,
`get_output_embeddings`) and HF's own catalogue of architectures, so any family that transformers'
Auto classes build works without new code:

  * layout: an encoder ([CLS] mem [SEP], bidirectional) or a decoder (read/write memory, causal).
    Decoder when `config.is_decoder` is set or when the model type has a causal-LM class and no
    masked-LM class in transformers' Auto mappings (GPT-2, Llama, OPT, ...); encoder when it has a
    masked-LM class (BERT, DeBERTa, ...). BERT-like families have a causal-LM class too (their
    `is_decoder` variant), which is why a masked-LM class decides for the encoder.
  * the body: `model.base_model`, the module that maps `inputs_embeds` to final hidden states;
  * the LM head (decoders): `model.get_output_embeddings()`;
  * the memory width: `config.hidden_size`, the width of the final hidden states.

An explicit entry (`register_adapter`) is needed only where a family departs from these rules:
RoBERTa's position ids start after its padding id, OPT's final states have `word_embed_proj_dim`
channels, and a family in neither Auto mapping must state its layout. No HF modeling code is copied.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Literal

import transformers
from torch import nn
from transformers import PretrainedConfig
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES, MODEL_MAPPING_NAMES,
)

LAYOUTS = ("encoder", "decoder")


@dataclass(frozen=True)
class BackboneAdapter:
    family: str  # registry name, e.g. "roberta"
    model_types: tuple[str, ...]  # HF `config.model_type` values this adapter serves
    # encoder: bidirectional, [CLS] mem [SEP]; decoder: causal, read/write mem; None: derived (module docstring)
    layout: Literal["encoder", "decoder"] | None = None
    position_offset: int = 0  # positions the architecture reserves (RoBERTa: padding_idx + 1)
    hidden_key: str = "hidden_size"  # the config key holding the width of the final hidden states

    def build(self, config: PretrainedConfig, class_name: str | None = None, init_kwargs: dict | None = None
              ) -> nn.Module:
        """A randomly initialised model of `config` (weights are loaded separately, never downloaded).

        `class_name`: the transformers class to build (a checkpoint's record of the module it held, see
        `keep`); None builds the layout's default, the body (without a pooler) for an encoder and the
        causal LM for a decoder. `init_kwargs`: constructor arguments beyond the config (see `init_kwargs`)."""
        if class_name is None:
            class_name = default_class_name(config, self.layout)
        model_class = getattr(transformers, class_name, None)
        if not (isinstance(model_class, type) and issubclass(model_class, transformers.PreTrainedModel)):
            raise ValueError(f"transformers {transformers.__version__} has no model class {class_name!r} to build "
                             "the backbone with (was the checkpoint written with another transformers version?)")
        if init_kwargs is None:
            init_kwargs = {"add_pooling_layer": False} if _takes_pooler(model_class) else {}
        return model_class(config, **init_kwargs)

    def max_positions(self, config: PretrainedConfig) -> int:
        for key in ("max_position_embeddings", "n_positions"):
            if getattr(config, key, None):
                return int(getattr(config, key)) - self.position_offset
        raise ValueError(
            f"{config.model_type} config has neither max_position_embeddings nor n_positions, so the positions a "
            "segment may use are unknown; set config.max_position_embeddings to the longest sequence the model takes"
        )

    def hidden_size(self, config: PretrainedConfig) -> int:
        """The memory width: channels of the body's final hidden states."""
        value = getattr(config, self.hidden_key, None)
        if not isinstance(value, int):
            raise ValueError(
                f"{config.model_type} config has no integer {self.hidden_key!r} giving the width of the final hidden "
                f"states; register an adapter naming the key: register_adapter(BackboneAdapter("
                f"{config.model_type!r}, ({config.model_type!r},), hidden_key=...))"
            )
        return value

    @staticmethod
    def body(model: nn.Module) -> nn.Module:
        """The module that maps inputs_embeds to final hidden states (no LM head)."""
        return model.base_model

    @staticmethod
    def token_embeddings(model: nn.Module) -> nn.Embedding:
        return model.get_input_embeddings()

    def lm_head(self, model: nn.Module) -> nn.Module | None:
        return model.get_output_embeddings() if self.layout == "decoder" else None

    def keep(self, model: transformers.PreTrainedModel) -> nn.Module:
        """The part of a user's model the RMT runs: an encoder's body (the RMT has its own classifier, so a
        task head is dropped), a decoder with its LM head if it has one (for the LM loss), else its body."""
        if self.layout == "decoder" and model.get_output_embeddings() is not None:
            return model
        return model.base_model


def init_kwargs(model: nn.Module) -> dict:
    """Constructor arguments beyond the config that rebuild `model`'s modules: HF's BERT-like bodies take
    `add_pooling_layer`, and a body taken from a task head may have been built with or without a pooler."""
    if _takes_pooler(type(model)):
        return {"add_pooling_layer": getattr(model, "pooler", None) is not None}
    return {}


def default_class_name(config: PretrainedConfig, layout: str) -> str:
    """The transformers class a new backbone of `config` is built as: a decoder's causal LM (its LM head
    gives the LM loss), else the family's base model."""
    mappings = (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_MAPPING_NAMES) if layout == "decoder" else (MODEL_MAPPING_NAMES,)
    for mapping in mappings:
        name = mapping.get(config.model_type)
        if name:
            return name if isinstance(name, str) else name[0]  # a few types list several bodies: the first is the full one
    raise ValueError(f"transformers' Auto classes know no model class for {config.model_type!r}; pass a built model "
                     "object to RecurrentWrapper.from_backbone instead")


def _takes_pooler(model_class: type) -> bool:
    return "add_pooling_layer" in inspect.signature(model_class.__init__).parameters


ADAPTERS: dict[str, BackboneAdapter] = {}


def register_adapter(adapter: BackboneAdapter) -> BackboneAdapter:
    """Add or replace the explicit entry for a family (see the module docstring for when one is needed)."""
    if adapter.layout not in (None, *LAYOUTS):
        raise ValueError(f"BackboneAdapter.layout={adapter.layout!r}; allowed values: [None, 'encoder', 'decoder']")
    ADAPTERS[adapter.family] = adapter
    return adapter


register_adapter(BackboneAdapter("roberta", ("roberta", "xlm-roberta"), position_offset=2))
register_adapter(BackboneAdapter("opt", ("opt",), hidden_key="word_embed_proj_dim"))


def derived_layout(config: PretrainedConfig) -> Literal["encoder", "decoder"]:
    """The layout HF's catalogue implies for `config` (module docstring); an error names what is missing."""
    model_type = config.model_type
    if getattr(config, "is_encoder_decoder", False):
        raise ValueError(
            f"{model_type!r} is an encoder-decoder architecture; the RMT runs one stack of layers over each "
            "segment, so it needs an encoder-only or a decoder-only model"
        )
    if getattr(config, "is_decoder", False):
        return "decoder"
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "encoder"
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "decoder"
    raise ValueError(
        f"cannot tell whether {model_type!r} is an encoder or a decoder: transformers lists no masked-LM or "
        f"causal-LM class for it and config.is_decoder is not set; state it with rmt_lab.model.register_adapter("
        f"BackboneAdapter({model_type!r}, ({model_type!r},), layout='encoder' or 'decoder'))"
    )


def adapter_for(config: PretrainedConfig) -> BackboneAdapter:
    """The adapter for `config.model_type`: its explicit entry if it has one, with the layout derived
    from HF's catalogue unless the entry states it."""
    entry = next((a for a in ADAPTERS.values() if config.model_type in a.model_types), None)
    if entry is None:
        entry = BackboneAdapter(config.model_type, (config.model_type,))
    if entry.layout is None:
        entry = dataclasses.replace(entry, layout=derived_layout(config))
    return entry
