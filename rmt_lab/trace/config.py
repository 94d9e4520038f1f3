"""TraceConfig: what a recording keeps, and the segment selection for full attention maps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rmt_lab.config import ConfigError, from_dict, to_dict

MIB = 2**20


@dataclass(frozen=True)
class SegmentSelection:
    """Which segments keep full attention maps; parsed from a spec such as "0,2-4,every:10,facts,last"."""

    indices: frozenset[int] = frozenset()  # explicit segments (ranges are expanded)
    every: int = 0  # every k-th segment, counting from segment 0 (0: off)
    facts: bool = False  # segments holding at least one fact token of some sample
    last: bool = False  # the last segment (needs the number of segments in advance)
    all: bool = False

    @classmethod
    def parse(cls, spec: str) -> SegmentSelection:
        indices: set[int] = set()
        every, facts, last, everything = 0, False, False, False
        for raw in spec.split(","):
            item = raw.strip()
            try:
                if item in ("", "none"):
                    continue
                if item == "all":
                    everything = True
                elif item == "facts":
                    facts = True
                elif item == "last":
                    last = True
                elif item.startswith("every:"):
                    every = int(item.removeprefix("every:"))
                    if every < 1:
                        raise ValueError
                elif "-" in item:
                    lo, hi = (int(x) for x in item.split("-"))
                    if lo < 0 or hi < lo:
                        raise ValueError
                    indices.update(range(lo, hi + 1))
                else:
                    index = int(item)
                    if index < 0:
                        raise ValueError
                    indices.add(index)
            except ValueError:
                raise ConfigError(
                    f"TraceConfig.segments: cannot read {item!r} in {spec!r}; use a comma list of segment indices "
                    "(3), inclusive ranges (2-5), every:K, facts, last, all or none"
                ) from None
        return cls(frozenset(indices), every, facts, last, everything)

    @property
    def is_empty(self) -> bool:
        return not (self.indices or self.every or self.facts or self.last or self.all)

    def count(self, n_segments: int | None) -> int | None:
        """How many segments the selection keeps, if it can be told before running (else None)."""
        if n_segments is None:
            return None if (self.every or self.facts or self.last or self.all) else len(self.indices)
        if self.facts:
            return None
        return sum(self.wants(s, n_segments, False) for s in range(n_segments))

    def wants(self, segment: int, n_segments: int | None, has_fact: bool) -> bool:
        return (
            self.all
            or segment in self.indices
            or (self.every > 0 and segment % self.every == 0)
            or (self.facts and has_fact)
            or (self.last and n_segments is not None and segment == n_segments - 1)
        )


@dataclass(frozen=True)
class TraceConfig:
    """What a trace keeps (summaries are cheap and always per segment; full maps only where selected)."""

    segments: str = "none"  # full maps: "none", "all", or e.g. "0,2-4,every:10,facts,last" (see SegmentSelection)
    layers: tuple[int, ...] | None = None  # layers whose full maps are kept; None = every layer
    heads: tuple[int, ...] | None = None  # heads kept in full maps; None = every head
    summaries: bool = True  # memory read/write/retain summaries for every segment (cost <= 1.15x untraced)
    top_k: int = 5  # tokens written per memory slot, listed per segment and layer; 0 lists none
    keep_memory: bool = False  # store each segment's memory state too (for probing; n_mem x d_model floats each)
    budget_mib: float = 256.0  # trace data held in RAM at once; beyond it, spill to the folder or refuse
    map_dtype: Literal["float32", "float16"] = "float32"  # float16 halves the maps' size (rows then sum to 1e-3)
    # Threads for the recorder's own small tensor ops (None: the model's). One thread is a bit slower on an idle
    # CPU and several times faster on a busy one, where every parallel region waits for a preempted thread.
    own_threads: int | None = 1

    def __post_init__(self) -> None:
        if not isinstance(self.segments, str):
            raise ConfigError(f"TraceConfig.segments must be a string such as '0,3-5,facts', got {self.segments!r}")
        SegmentSelection.parse(self.segments)
        for name in ("layers", "heads"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, int) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise ConfigError(f"TraceConfig.{name}={value!r} must be a tuple of integers or None (all)")
            if not value:
                raise ConfigError(f"TraceConfig.{name} is empty; use None to keep all {name}")
            object.__setattr__(self, name, tuple(sorted(set(value))))
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ConfigError(f"TraceConfig.top_k={self.top_k!r} must be an integer >= 0")
        if isinstance(self.budget_mib, bool) or not isinstance(self.budget_mib, (int, float)) or self.budget_mib <= 0:
            raise ConfigError(f"TraceConfig.budget_mib={self.budget_mib!r} must be a positive number")
        if self.own_threads is not None and (isinstance(self.own_threads, bool) or not isinstance(self.own_threads, int)
                                             or self.own_threads < 1):
            raise ConfigError(f"TraceConfig.own_threads={self.own_threads!r} must be a positive integer or None")
        if self.map_dtype not in ("float32", "float16"):
            raise ConfigError(f"TraceConfig.map_dtype={self.map_dtype!r} is not allowed; allowed values: "
                              "['float32', 'float16']")

    @property
    def selection(self) -> SegmentSelection:
        return SegmentSelection.parse(self.segments)

    @property
    def budget_bytes(self) -> int:
        return int(self.budget_mib * MIB)

    @classmethod
    def from_dict(cls, data: dict) -> TraceConfig:
        return from_dict(cls, data)

    def to_dict(self) -> dict:
        return to_dict(self)
