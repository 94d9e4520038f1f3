"""The report's three tasks (Bulatov et al. 2023, section 4), from bAbI-style templates.

- memorize: "{name} {action} to the {place}." opens the input; "Where is {name}?" ends it.
- detect_memorize: the same fact, at the start of a randomly chosen segment.
- reasoning: two bAbI task-4 relation facts ("The hallway is east of the bathroom."), each at the
  start of an independently chosen segment; the question asks about one of them, and the other
  shares a place with it, so naive matching on the question's words can pick the wrong fact.

Every place is drawn uniformly, so the answers (class labels) are balanced over the 6 places.
Facts are generated here from the templates, never copied from a dataset.
"""

from __future__ import annotations

import itertools

import numpy as np

from rmt_lab.tasks.registry import ACTIONS, DIRECTIONS, NAMES, PLACES, Episode, TaskSpec, register_task

OPPOSITE = {"north": "south", "south": "north", "east": "west", "west": "east"}


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


@register_task("memorize")
class Memorize(TaskSpec):
    n_facts = 1
    fact_segment = "first"

    def episode(self, rng: np.random.Generator) -> Episode:
        name, action, place = _pick(rng, NAMES), _pick(rng, ACTIONS), _pick(rng, PLACES)
        return Episode((f"{name} {action} to the {place}.",), f"Where is {name}?", place)

    def fact_texts(self) -> tuple[str, ...]:
        return tuple(f"{n} {a} to the {p}." for n, a, p in itertools.product(NAMES, ACTIONS, PLACES))

    def question_texts(self) -> tuple[str, ...]:
        return tuple(f"Where is {n}?" for n in NAMES)


@register_task("detect_memorize")
class DetectMemorize(Memorize):
    fact_segment = "random"


def _relation(a: str, direction: str, b: str) -> str:
    return f"The {a} is {direction} of the {b}."


@register_task("reasoning")
class Reasoning(TaskSpec):
    """Two facts about three distinct places: "P1 is d1 of P0" and "P2 is d2 of P0", d1 != d2.

    Each fact is stated either way round ("The P0 is opposite(d) of the P1." says the same). The
    question targets one fact and asks for one of its places in one of four phrasings; d1 != d2
    keeps every answer unique (two places both north of P0 would make "What is north of P0?" moot).
    """

    n_facts = 2
    fact_segment = "random"

    def episode(self, rng: np.random.Generator) -> Episode:
        center, *others = (PLACES[i] for i in rng.permutation(len(PLACES))[:3])
        d1 = int(rng.integers(4))
        d2 = (d1 + 1 + int(rng.integers(3))) % 4  # any direction but d1
        facts = []
        for place, d in zip(others, (DIRECTIONS[d1], DIRECTIONS[d2])):
            flip = bool(rng.integers(2))
            facts.append(_relation(center, OPPOSITE[d], place) if flip else _relation(place, d, center))
        target = int(rng.integers(2))
        place, d = others[target], DIRECTIONS[(d1, d2)[target]]  # "place is d of center"
        question, answer = [
            (f"What is {d} of the {center}?", place),
            (f"What is the {center} {OPPOSITE[d]} of?", place),
            (f"What is {OPPOSITE[d]} of the {place}?", center),
            (f"What is the {place} {d} of?", center),
        ][int(rng.integers(4))]
        return Episode(tuple(facts), question, answer)

    def fact_texts(self) -> tuple[str, ...]:
        return tuple(
            _relation(a, d, b) for a, b in itertools.permutations(PLACES, 2) for d in DIRECTIONS
        )

    def question_texts(self) -> tuple[str, ...]:
        pairs = itertools.product(PLACES, DIRECTIONS)
        return tuple(q for p, d in pairs for q in (f"What is {d} of the {p}?", f"What is the {p} {d} of?"))
