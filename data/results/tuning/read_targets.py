"""Reasoning's samples with other labels, to see which reads of the memory a question's segment learns.

Registers three tasks that draw exactly reasoning's samples (the same episodes and placement, so
`task.subset` works as for reasoning) and differ only in the label, then runs the rmt-lab command given:
  reasoning_which   class k: the answer's place is stated in the k-th fact (2: the centre, in both)
  reasoning_word1   the first-stated fact's direction word (class = its index in DIRECTIONS)
  reasoning_place1  the first-stated fact's subject place
Usage: python read_targets.py train --config base --task reasoning_which --run-dir ... --set ...
"""
import re
import sys

from rmt_lab.cli import main
from rmt_lab.tasks.registry import DIRECTIONS, PLACES, Episode, register_task
from rmt_lab.tasks.report import Reasoning

_RELATION = re.compile(r"The (\w+) is (\w+) of the (\w+)\.")


@register_task("reasoning_which")
class ReasoningWhich(Reasoning):
    def episode(self, rng):
        e = super().episode(rng)
        holders = [k for k, f in enumerate(e.facts) if e.answer in _RELATION.fullmatch(f).group(1, 3)]
        k = holders[0] if len(holders) == 1 else 2  # the centre: in both facts
        return Episode(e.facts, e.question, PLACES[k], e.kinds)


@register_task("reasoning_word1")
class ReasoningWord1(Reasoning):
    """Label: the first-stated fact's direction word (class = its index in DIRECTIONS)."""
    def episode(self, rng):
        e = super().episode(rng)
        word = _RELATION.fullmatch(e.facts[0]).group(2)
        return Episode(e.facts, e.question, PLACES[DIRECTIONS.index(word)], e.kinds)


@register_task("reasoning_place1")
class ReasoningPlace1(Reasoning):
    """Label: the first-stated fact's subject place."""
    def episode(self, rng):
        e = super().episode(rng)
        return Episode(e.facts, e.question, _RELATION.fullmatch(e.facts[0]).group(1), e.kinds)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
