"""TaskConfig: one frozen dataclass saying which samples a task generator makes."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any, Literal

import rmt_lab.tasks.report  # noqa: F401  (registers the report's tasks)
from rmt_lab.config import ConfigError, from_dict, to_dict
from rmt_lab.tasks.registry import available_tasks, get_task

Placement = Literal["segment", "sentence"]
Unit = Literal["segments", "tokens"]


@dataclass(frozen=True)
class TaskConfig:
    task: str = "memorize"  # the report's first task; see available_tasks()
    segment_size: int = 499  # report: 512 positions minus [CLS], 10 memory tokens and 2 [SEP]
    length: int = 1  # the report's curriculum starts at 1 segment
    unit: Unit = "segments"  # the report counts length in segments; "tokens" for an exact token count
    # "segment": facts open segments, as in the report; "sentence": facts sit between noise
    # sentences at random positions anywhere, as in BABILong.
    placement: Placement = "segment"
    seed: int = 0  # with the split and the sample index, fixes every sample
    noise: str = "pydoc"  # Python's own prose (never downloaded), or a local UTF-8 file/folder/saved dataset
    noise_field: str = "text"  # text column when `noise` is a saved HuggingFace dataset
    # Whose vocabulary the samples are in. None: MiniLM's WordPiece, the ready backbones' (every result so far).
    # A local folder written by a tokenizer's save_pretrained (read offline), or a tokenizer object; to_dict
    # refuses an object, since a saved config must say which tokenizer made its samples and an object built in
    # memory has no name to load it by again: save it and pass its folder.
    tokenizer: Any = None
    # None: every episode; else one of the task's named subsets (`TaskSpec.subsets`), e.g. the reasoning
    # samples whose facts lie on one axis, to teach or measure one sort of sample on its own.
    subset: str | None = None

    def __post_init__(self) -> None:
        spec = get_task(self.task)  # unknown names fail listing the available tasks
        if self.subset is not None and self.subset not in spec.subsets:
            raise ConfigError(f"TaskConfig.subset={self.subset!r} is not a subset of task {self.task!r}; allowed "
                              f"values: {[None, *sorted(spec.subsets)]}")
        if isinstance(self.tokenizer, os.PathLike):
            object.__setattr__(self, "tokenizer", os.fspath(self.tokenizer))  # a path is saved as its text
        tok = self.tokenizer
        if tok == "" or not (tok is None or isinstance(tok, str) or callable(tok) and hasattr(tok, "convert_ids_to_tokens")):
            raise ConfigError(f"TaskConfig.tokenizer={_short(tok)} must be None (MiniLM's WordPiece), a local "
                              "tokenizer folder, or a transformers tokenizer object")
        for name in ("noise", "noise_field"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"TaskConfig.{name}={_short(value)} must be a non-empty string"
                                  + (": 'pydoc' or a local file or folder" if name == "noise" else ""))
        for name in ("segment_size", "length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"TaskConfig.{name}={value!r} must be a positive integer")
        if self.unit not in ("segments", "tokens"):
            raise ConfigError(f"TaskConfig.unit={self.unit!r} is not allowed; allowed values: ['segments', 'tokens']")
        if self.placement not in ("segment", "sentence"):
            raise ConfigError(
                f"TaskConfig.placement={self.placement!r} is not allowed; allowed values: ['segment', 'sentence']"
            )
        if self.placement == "sentence" and get_task(self.task).fact_segment == "first":
            raise ConfigError(
                f"TaskConfig.placement='sentence' does not apply to task {self.task!r}, whose fact opens the input; "
                "use task 'detect_memorize' for one fact anywhere"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"TaskConfig.seed={self.seed!r} must be a non-negative integer")

    def tokenizer_name(self) -> str:
        """How messages name the tokenizer (an object's repr lists its whole vocabulary of special tokens)."""
        return _short(self.tokenizer)

    @property
    def n_tokens(self) -> int:
        """Content tokens per sample (no special tokens: the model adds those per segment)."""
        return self.length * self.segment_size if self.unit == "segments" else self.length

    @property
    def n_segments(self) -> int:
        return math.ceil(self.n_tokens / self.segment_size)

    def at_segments(self, n_segments: int, **changes) -> TaskConfig:
        """This task with inputs of `n_segments` segments (and any other `changes`)."""
        return dataclasses.replace(self, length=n_segments, unit="segments", **changes)

    @classmethod
    def of_length(cls, segments: int | None = None, tokens: int | None = None, default_segments: int = 1,
                  **fields: Any) -> TaskConfig:
        """This task `tokens` content tokens long when given, else `segments` segments (None: `default_segments`)."""
        if tokens is not None:
            return cls(length=tokens, unit="tokens", **fields)
        return cls(length=segments or default_segments, unit="segments", **fields)

    @classmethod
    def from_dict(cls, data: dict) -> TaskConfig:
        return from_dict(cls, data)

    def to_dict(self) -> dict:
        if self.tokenizer is not None and not isinstance(self.tokenizer, str):
            raise ConfigError(
                f"TaskConfig.tokenizer is a {type(self.tokenizer).__name__} object, which a saved config cannot name; "
                "save it with tokenizer.save_pretrained(folder) and pass TaskConfig(tokenizer=folder)"
            )
        return to_dict(self)


def _short(value: Any) -> str:
    """repr of plain values, the type of anything else (a tokenizer's or a model's repr runs to pages)."""
    return repr(value) if value is None or isinstance(value, (str, int, float, bool)) else f"<{type(value).__name__}>"


__all__ = ["TaskConfig", "available_tasks"]
