"""The report's tasks state facts from which a simple rule recovers every answer, with balanced labels."""

import collections
import re

import numpy as np
import pytest

from rmt_lab.config import ConfigError
from rmt_lab.tasks import PLACES, available_tasks, get_task, register_task
from rmt_lab.tasks.registry import TaskSpec

MOVE = re.compile(r"^(Mary|John|Daniel|Sandra) (moved|went|went back|journeyed|travelled) to the (\w+)\.$")
WHERE = re.compile(r"^Where is (\w+)\?$")
RELATION = re.compile(r"^The (\w+) is (north|south|east|west) of the (\w+)\.$")
ASK_WHAT_IS_D_OF_X = re.compile(r"^What is (north|south|east|west) of the (\w+)\?$")
ASK_WHAT_IS_X_D_OF = re.compile(r"^What is the (\w+) (north|south|east|west) of\?$")
OPPOSITE = {"north": "south", "south": "north", "east": "west", "west": "east"}


def solve(facts, question):
    """Reference solver, written apart from the generator: parse the facts, apply the rule."""
    if m := WHERE.match(question):
        places = [MOVE.match(f).group(3) for f in facts if MOVE.match(f).group(1) == m.group(1)]
        assert len(places) == 1
        return places[0]
    # "a is d of b" also means "b is opposite(d) of a".
    relations = set()
    for fact in facts:
        a, d, b = RELATION.match(fact).groups()
        relations |= {(a, d, b), (b, OPPOSITE[d], a)}
    if m := ASK_WHAT_IS_D_OF_X.match(question):
        d, x = m.groups()
        answers = {a for a, dd, b in relations if dd == d and b == x}
    else:
        x, d = ASK_WHAT_IS_X_D_OF.match(question).groups()
        answers = {b for a, dd, b in relations if a == x and dd == d}
    assert len(answers) == 1, (facts, question, answers)  # the answer is unique
    return answers.pop()


def test_registry_lists_the_reports_tasks():
    assert available_tasks() == ["detect_memorize", "memorize", "reasoning"]
    assert get_task("reasoning").n_facts == 2


def test_unknown_task_lists_the_available_ones():
    with pytest.raises(ConfigError, match=r"unknown task 'sorting'.*detect_memorize.*memorize.*reasoning"):
        get_task("sorting")


def test_registering_a_name_twice_fails():
    with pytest.raises(ValueError, match="already registered"):
        register_task("memorize")(type("Again", (TaskSpec,), {}))


@pytest.mark.parametrize("task", ["memorize", "detect_memorize", "reasoning"])
def test_solver_recovers_every_answer_and_labels_are_balanced(task, make_generator):
    gen = make_generator(task=task, segment_size=48, length=1)
    n = 6000
    labels = collections.Counter()
    for index in range(n):
        s = gen.sample("train", index)
        assert solve([f.text for f in s.facts], s.question.text) == s.answer
        assert PLACES[s.label] == s.answer
        labels[s.label] += 1
    shares = np.array([labels[i] / n for i in range(len(PLACES))])
    # Binomial sd of a share at n=6000 is 0.0048; 0.02 is four of them.
    assert np.all(np.abs(shares - 1 / 6) < 0.02), shares


def test_every_stated_text_is_in_the_tasks_vocabulary():
    rng = np.random.default_rng(0)
    for name in available_tasks():
        spec = get_task(name)
        for _ in range(500):
            episode = spec.episode(rng)
            assert set(episode.facts) <= set(spec.fact_texts())
            assert episode.question in spec.question_texts()
            assert len(episode.facts) == spec.n_facts


def test_reasoning_uses_all_phrasings_and_the_report_example_is_solvable():
    rng = np.random.default_rng(1)
    spec = get_task("reasoning")
    questions = {re.sub(r"north|south|east|west", "D", re.sub("|".join(PLACES), "P", spec.episode(rng).question))
                 for _ in range(300)}
    assert questions == {"What is D of the P?", "What is the P D of?"}
    facts = ["The hallway is east of the bathroom.", "The bedroom is west of the bathroom."]
    assert solve(facts, "What is the bathroom east of?") == "bedroom"
