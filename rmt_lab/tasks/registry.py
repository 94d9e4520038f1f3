"""Registry of synthetic tasks: `@register_task("memorize")`, `get_task(name)`, `available_tasks()`.

A task says what a sample states (its facts, question and answer, drawn from a numpy Generator)
and where its facts go; `rmt_lab.tasks.sample` lays that out over noise text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from rmt_lab.config import ConfigError

# bAbI vocabulary (Weston et al. 2015), as used by the RMT report's tasks.
NAMES = ("Mary", "John", "Daniel", "Sandra")
ACTIONS = ("moved", "went", "went back", "journeyed", "travelled")
PLACES = ("bathroom", "hallway", "garden", "office", "bedroom", "kitchen")  # class label = index here
NUM_CLASSES = len(PLACES)  # every task's answer is one of the places: a classifier over them
DIRECTIONS = ("north", "east", "south", "west")


@dataclass(frozen=True)
class Episode:
    """What one sample states: its facts in order, the question and the answer (one of PLACES)."""

    facts: tuple[str, ...]
    question: str
    answer: str
    kinds: frozenset[str] = frozenset()  # what sort of episode this is, for TaskSpec.subsets

    @property
    def label(self) -> int:
        return PLACES.index(self.answer)


# A sample's kind from its layout, not its episode: every fact lies in a segment before the question's, so
# the answer can only be read from memory.
IN_MEMORY = "in_memory"

# Draws of a sample of a subset before giving up: a subset's share of the samples is at least 1 in 100 at
# the lengths it is meant for, so 10,000 draws fail only where it has no samples (facts in memory on 1 segment).
SUBSET_DRAWS = 10_000


class TaskSpec:
    """Base of registered tasks. Subclasses set the class attributes and implement `episode`."""

    name: ClassVar[str]
    n_facts: ClassVar[int]
    # "first": the fact opens the input (memorize); "random": each fact opens an independently
    # chosen segment (detect & memorize, reasoning).
    fact_segment: ClassVar[Literal["first", "random"]]
    # Named subsets of the task's samples (name -> the kinds a sample must all have: its episode's, and
    # `IN_MEMORY` from where the facts lie), so that a run can train or be measured on one sort of sample:
    # `TaskConfig.subset`.
    subsets: ClassVar[dict[str, frozenset[str]]] = {}
    # A layout the memory can be taught (`OptimConfig.slot_loss`): once every fact has been read, memory token
    # k names one of slot_classes[k] classes, the one `slot_targets` gives. () = the task has none.
    slot_classes: ClassVar[tuple[int, ...]] = ()

    def episode(self, rng: np.random.Generator) -> Episode:
        raise NotImplementedError

    def fact_texts(self) -> tuple[str, ...]:
        """Every fact this task can state (used to tokenize them all once and to size segments)."""
        raise NotImplementedError

    def question_texts(self) -> tuple[str, ...]:
        """Every question this task can ask."""
        raise NotImplementedError

    def fact_parts(self, facts: tuple[str, ...]) -> list[dict[str, tuple[int, int]]]:
        """What a probe of the memory may decode of each of a sample's facts, in the order given: per fact,
        {part: (class, number of classes)}. Empty for a task whose one fact is its answer."""
        return [{} for _ in facts]

    def slot_targets(self, facts: tuple[str, ...]) -> tuple[int, ...]:
        """For a sample stating `facts` (in episode order): the class each of the first len(slot_classes) memory
        tokens should name once all of them are read."""
        raise NotImplementedError(f"task {self.name!r} has no memory layout to teach (slot_classes is empty)")


_TASKS: dict[str, TaskSpec] = {}


def register_task(name: str) -> Callable[[type[TaskSpec]], type[TaskSpec]]:
    """Class decorator: register an instance of the TaskSpec subclass under `name`."""

    def add(cls: type[TaskSpec]) -> type[TaskSpec]:
        if name in _TASKS:
            raise ValueError(f"task {name!r} is already registered")
        cls.name = name
        _TASKS[name] = cls()
        return cls

    return add


def available_tasks() -> list[str]:
    return sorted(_TASKS)


def get_task(name: str) -> TaskSpec:
    if name not in _TASKS:
        raise ConfigError(f"unknown task {name!r}; available tasks: {available_tasks()}")
    return _TASKS[name]
