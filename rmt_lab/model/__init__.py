"""The Recurrent Memory Transformer: memory cell, recurrent wrapper, backbone adapters."""

from rmt_lab.model.adapters import ADAPTERS, BackboneAdapter, adapter_for, supported_model_types
from rmt_lab.model.backbones import Backbone, SpecialTokens, available_backbones, load_backbone

__all__ = [
    "ADAPTERS", "Backbone", "BackboneAdapter", "SpecialTokens", "adapter_for", "available_backbones",
    "load_backbone", "supported_model_types",
]
