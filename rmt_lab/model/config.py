"""The RMT's own configuration (the backbone's is the HF config it wraps)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rmt_lab.config import ConfigError

KEEPABLE = ("memory", "summary", "hidden", "lm_logits", "class_logits")


@dataclass(frozen=True)
class RMTConfig:
    """How memory is laid out and carried across segments (Bulatov et al. 2023, section 2)."""

    num_mem_tokens: int = 10  # the report's 10 memory tokens; 0 disables the memory path (plain backbone)
    segment_size: int = 499  # content tokens per segment: 512 positions - 10 memory - [CLS] [SEP] [SEP]
    bptt_depth: int = -1  # k2: gradients flow through the memory of the last k2 segments; -1 = full BPTT (report)
    align: Literal["left", "right"] = "left"  # left: segments start at token 0; right: every sample's last segment is full
    keep: tuple[str, ...] = ()  # per-segment outputs returned by default; subset of KEEPABLE (costs memory)
    num_classes: int = 0  # classifier over the last segment's summary state (6 places in the report); 0 = none
    layout: Literal["auto", "encoder", "decoder"] = "auto"  # auto: the backbone adapter's layout
    lora_rank: int = 0  # 0: every backbone weight trains (report); r > 0: backbone frozen, rank-r adapters train
    lora_alpha: float = 16.0  # adapter scale alpha / r (LoRA's convention; 16 with r 8-16 is common)
    # A linear head per leading memory token, naming one of slot_classes[k] classes: what a training run can
    # teach memory to hold (`OptimConfig.slot_loss`, `TaskSpec.slot_classes`). Inference never reads them.
    slot_classes: tuple[int, ...] = ()
    # Gated memory update: new memory = memory + g (cell output - memory), with g = sigmoid(w . output + b) per
    # memory token, starting open (g = 0.998: the plain RMT's replacement). A segment that brings nothing to
    # keep can then leave memory as it found it by closing g, which the plain update must learn as an identity
    # through every backbone layer. Not in the report. A model may add it to one trained without it.
    memory_gate: bool = False

    def __post_init__(self) -> None:
        for name in ("num_mem_tokens", "num_classes", "lora_rank"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"RMTConfig.{name}={value!r} must be an integer >= 0")
        if not isinstance(self.segment_size, int) or isinstance(self.segment_size, bool) or self.segment_size < 1:
            raise ConfigError(f"RMTConfig.segment_size={self.segment_size!r} must be an integer >= 1")
        if not isinstance(self.bptt_depth, int) or not (self.bptt_depth == -1 or self.bptt_depth >= 1):
            raise ConfigError(f"RMTConfig.bptt_depth={self.bptt_depth!r} must be -1 (full BPTT) or an integer >= 1")
        if self.align not in ("left", "right"):
            raise ConfigError(f"RMTConfig.align={self.align!r} is not allowed; allowed values: ['left', 'right']")
        if self.layout not in ("auto", "encoder", "decoder"):
            raise ConfigError(
                f"RMTConfig.layout={self.layout!r} is not allowed; allowed values: ['auto', 'encoder', 'decoder']"
            )
        if not isinstance(self.lora_alpha, (int, float)) or isinstance(self.lora_alpha, bool) or self.lora_alpha <= 0:
            raise ConfigError(f"RMTConfig.lora_alpha={self.lora_alpha!r} must be a number > 0")
        if not isinstance(self.memory_gate, bool):
            raise ConfigError(f"RMTConfig.memory_gate={self.memory_gate!r} must be true or false")
        check_keep(tuple(self.keep))
        object.__setattr__(self, "keep", tuple(self.keep))
        slots = tuple(self.slot_classes)
        if any(isinstance(c, bool) or not isinstance(c, int) or c < 2 for c in slots) \
                or len(slots) > self.num_mem_tokens:
            raise ConfigError(f"RMTConfig.slot_classes={list(slots)} must be at most num_mem_tokens="
                              f"{self.num_mem_tokens} class counts, each an integer >= 2")
        object.__setattr__(self, "slot_classes", slots)


def check_keep(keep: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [k for k in keep if k not in KEEPABLE]
    if unknown:
        raise ConfigError(f"cannot keep {unknown} per segment; allowed values: {list(KEEPABLE)}")
    return keep
