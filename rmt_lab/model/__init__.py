"""The Recurrent Memory Transformer: memory cell, recurrent wrapper, backbone adapters."""

from rmt_lab.model.adapters import ADAPTERS, BackboneAdapter, adapter_for, register_adapter
from rmt_lab.model.backbones import Backbone, SpecialTokens, available_backbones, backbone_config, load_backbone
from rmt_lab.model.cell import CellOutput, MemoryCell, SegmentPositions
from rmt_lab.model.config import RMTConfig
from rmt_lab.model.segments import IGNORE_INDEX, Segment, iter_segments
from rmt_lab.model.wrapper import COMPILE_MODES, RecurrentWrapper, RMTOutput

__all__ = [
    "ADAPTERS", "COMPILE_MODES", "IGNORE_INDEX", "Backbone", "BackboneAdapter", "CellOutput", "MemoryCell", "RMTConfig", "RMTOutput",
    "RecurrentWrapper", "Segment", "SegmentPositions", "SpecialTokens", "adapter_for", "available_backbones",
    "backbone_config", "iter_segments", "load_backbone", "register_adapter",
]
