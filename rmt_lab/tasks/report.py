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
import re

import numpy as np

from rmt_lab.tasks.registry import (
    ACTIONS, DIRECTIONS, IN_MEMORY, NAMES, PLACES, Episode, TaskSpec, register_task,
)

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


_RELATION = re.compile(r"The (\w+) is (\w+) of the (\w+)\.")


@register_task("reasoning")
class Reasoning(TaskSpec):
    """Two facts about three distinct places: "P1 is d1 of P0" and "P2 is d2 of P0", d1 != d2.

    Each fact is stated either way round ("The P0 is opposite(d) of the P1." says the same). The
    question targets one fact and asks for one of its places in one of four phrasings; d1 != d2
    keeps every answer unique (two places both north of P0 would make "What is north of P0?" moot).

    When d2 is opposite(d1) and the question asks for P1 or P2 (1 sample in 6), the facts lie on one
    axis and the answer is a parity of three bits: whether the question's direction word is the
    fact's, whether the fact is stated from P0 or from its place, and which question form asks. No
    bit or pair of bits says anything about the answer, so gradient descent on the whole task gets no
    foothold there (the base models answer it at chance). The subsets give the bits one at a time:
    `match` (one bit: the word), `flips` (two: the word and the order a fact is stated in), `hard` (all
    three) and `opposite` (those plus the opposite-direction questions for P0).

    A question for P1 or P2 is the one that needs a fact's direction. If one of the facts shares the
    question's segment, the other place is the answer by elimination; only when both lie in earlier
    segments must memory have kept which direction goes with which place. That is `recall` (1 sample in
    8 on 2 segments, more on longer inputs), where a model that stores only the places is at chance;
    `recall_match` keeps its samples whose answer is the place stated with the question's direction word.

    Its memory layout (`slot_classes`, taught by `OptimConfig.slot_loss`) is a map by direction: memory
    token d (DIRECTIONS order) names the place that lies in direction d from the centre, or "none" (class
    len(PLACES)). Memory that holds the facts as stated keeps no key a question's word can match, since
    every token holds both facts; in this map, the question reads the token of its direction.
    """

    n_facts = 2
    fact_segment = "random"
    subsets = {
        "opposite": frozenset({"opposite"}),
        "hard": frozenset({"opposite", "asks_place"}),
        "flips": frozenset({"opposite", "asks_place", "direction_question"}),
        "match": frozenset({"opposite", "asks_place", "direction_question", "stated_from_centre"}),
        "recall": frozenset({"asks_place", IN_MEMORY}),
        "recall_match": frozenset({"asks_place", IN_MEMORY, "direction_question", "stated_from_centre"}),
    }
    slot_classes = (len(PLACES) + 1,) * len(DIRECTIONS)

    def episode(self, rng: np.random.Generator) -> Episode:
        center, *others = (PLACES[i] for i in rng.permutation(len(PLACES))[:3])
        d1 = int(rng.integers(4))
        d2 = (d1 + 1 + int(rng.integers(3))) % 4  # any direction but d1
        facts, flips = [], []
        for place, d in zip(others, (DIRECTIONS[d1], DIRECTIONS[d2])):
            flips.append(bool(rng.integers(2)))
            facts.append(_relation(center, OPPOSITE[d], place) if flips[-1] else _relation(place, d, center))
        target = int(rng.integers(2))
        place, d = others[target], DIRECTIONS[(d1, d2)[target]]  # "place is d of center"
        form = int(rng.integers(4))
        question, answer = [
            (f"What is {d} of the {center}?", place),
            (f"What is the {center} {OPPOSITE[d]} of?", place),
            (f"What is {OPPOSITE[d]} of the {place}?", center),
            (f"What is the {place} {d} of?", center),
        ][form]
        kinds = {"opposite": (d2 - d1) % 4 == 2, "asks_place": answer != center,
                 "direction_question": form in (0, 2), "stated_from_centre": not any(flips)}
        return Episode(tuple(facts), question, answer, frozenset(k for k, v in kinds.items() if v))

    def fact_texts(self) -> tuple[str, ...]:
        return tuple(
            _relation(a, d, b) for a, b in itertools.permutations(PLACES, 2) for d in DIRECTIONS
        )

    def fact_parts(self, facts: tuple[str, ...]) -> list[dict[str, tuple[int, int]]]:
        """Per fact, its words as stated: subject place, direction word, object place. Each is one fact's own,
        so a memory that keeps the fact keeps them from its segment on; which direction goes with which place
        around the centre is then a function of both facts and the order each is stated in."""
        parts = []
        for fact in facts:
            subject, direction, obj = _RELATION.fullmatch(fact).groups()
            parts.append({"subject": (PLACES.index(subject), len(PLACES)),
                          "direction": (DIRECTIONS.index(direction), len(DIRECTIONS)),
                          "object": (PLACES.index(obj), len(PLACES))})
        return parts

    def slot_targets(self, facts: tuple[str, ...]) -> tuple[int, ...]:
        triples = [_RELATION.fullmatch(fact).groups() for fact in facts]
        (center,) = {triples[0][0], triples[0][2]} & {triples[1][0], triples[1][2]}
        slots = [len(PLACES)] * len(DIRECTIONS)  # none
        for subject, direction, obj in triples:  # "subject is direction of obj": the non-centre place's direction
            place, way = (subject, direction) if obj == center else (obj, OPPOSITE[direction])
            slots[DIRECTIONS.index(way)] = PLACES.index(place)
        return tuple(slots)

    def question_texts(self) -> tuple[str, ...]:
        pairs = itertools.product(PLACES, DIRECTIONS)
        return tuple(q for p, d in pairs for q in (f"What is {d} of the {p}?", f"What is the {p} {d} of?"))
