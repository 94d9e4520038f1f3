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


def reasoning_traits(facts, question, answer):
    """What makes a reasoning sample hard, read from its text apart from the generator's own kinds."""
    (a1, d1, b1), (a2, d2, b2) = (RELATION.match(f).groups() for f in facts)
    centre = ({a1, b1} & {a2, b2}).pop()
    from_centre = [d if b == centre else OPPOSITE[d] for a, d, b in ((a1, d1, b1), (a2, d2, b2))]
    return {"opposite": from_centre[1] == OPPOSITE[from_centre[0]], "asks_place": answer != centre,
            "direction_question": bool(ASK_WHAT_IS_D_OF_X.match(question)),
            "stated_from_centre": b1 == b2 == centre}


def test_reasoning_subsets_hold_only_their_kind_and_the_whole_task_is_unchanged(make_generator):
    wanted = {"opposite": {"opposite"}, "hard": {"opposite", "asks_place"},
              "flips": {"opposite", "asks_place", "direction_question"},
              "match": {"opposite", "asks_place", "direction_question", "stated_from_centre"}}
    whole = make_generator(task="reasoning", segment_size=48, length=1)
    seen = collections.Counter()
    for index in range(600):
        s = whole.sample("train", index)
        traits = reasoning_traits([f.text for f in s.facts], s.question.text, s.answer)
        seen.update(name for name, need in wanted.items() if all(traits[t] for t in need))
    # Shares in the whole task: 1/3 opposite, half of those ask for a place, half of those by direction,
    # a quarter of those with both facts stated from the centre.
    assert 170 < seen["opposite"] < 230 and 70 < seen["hard"] < 130 and 30 < seen["flips"] < 70, seen
    for name, need in wanted.items():
        gen = make_generator(task="reasoning", segment_size=48, length=1, subset=name)
        samples = [gen.sample("train", i) for i in range(200)]
        for s in samples:
            traits = reasoning_traits([f.text for f in s.facts], s.question.text, s.answer)
            assert all(traits[t] for t in need), (name, s.facts, s.question.text)
            assert solve([f.text for f in s.facts], s.question.text) == s.answer
        if name != "match":  # the subsets above it keep some of each trait they do not fix
            assert {reasoning_traits([f.text for f in s.facts], s.question.text, s.answer)["stated_from_centre"]
                    for s in samples} == {True, False}
    # The whole task's samples are those every committed result was made from.
    first = whole.sample("test", 0)
    assert ([f.text for f in first.facts], first.question.text, first.answer) == (
        ["The bedroom is south of the kitchen.", "The bathroom is south of the bedroom."],
        "What is north of the bathroom?", "bedroom")


def test_recall_holds_questions_whose_facts_both_lie_before_the_question(make_generator):
    gen = make_generator(task="reasoning", segment_size=48, length=2, subset="recall")
    for index in range(100):
        s = gen.sample("train", index)
        assert {"asks_place", "in_memory"} <= s.kinds
        assert all(f.segments[-1] < s.question.segments[0] for f in s.facts), [f.segments for f in s.facts]
        assert reasoning_traits([f.text for f in s.facts], s.question.text, s.answer)["asks_place"]
    # In the whole task the kind follows the layout: both facts in segment 0 of 2 is 1 sample in 4.
    whole = make_generator(task="reasoning", segment_size=48, length=2)
    samples = [whole.sample("train", i) for i in range(400)]
    for s in samples:
        assert ("in_memory" in s.kinds) == all(f.segments[-1] < s.question.segments[0] for f in s.facts)
    assert 70 < sum("in_memory" in s.kinds for s in samples) < 130
    # On one segment no fact can lie before the question's segment: a clear error, not an endless draw.
    one = make_generator(task="reasoning", segment_size=48, length=1, subset="recall")
    with pytest.raises(ConfigError, match=r"subset='recall' drew no sample of task 'reasoning' with kinds "
                                          r"\['asks_place', 'in_memory'\] in 10000 tries at length=1 segments"):
        one.sample("train", 0)


def test_reasonings_memory_layout_maps_each_direction_from_the_centre_to_its_place(make_generator):
    spec = get_task("reasoning")
    assert spec.slot_classes == (7, 7, 7, 7) and get_task("memorize").slot_classes == ()
    # The centre is the kitchen: the bathroom lies west of it (stated the other way round), the garden north.
    assert spec.slot_targets(("The kitchen is east of the bathroom.", "The kitchen is south of the garden.")) == \
        (PLACES.index("garden"), 6, 6, PLACES.index("bathroom"))
    with pytest.raises(NotImplementedError, match="'memorize' has no memory layout"):
        get_task("memorize").slot_targets(("Mary went to the garden.",))
    # Read by the reference solver: the slot of a direction names what lies that way from the centre, for
    # every sample; and a sample's memory carries its facts on exactly when both lie before the question.
    gen = make_generator(task="reasoning", segment_size=48, length=3)
    for index in range(200):
        s = gen.sample("train", index)
        facts = [f.text for f in s.facts]
        slots = spec.slot_targets(tuple(facts))
        centre = collections.Counter(p for f in facts for p in RELATION.match(f).group(1, 3)).most_common(1)[0][0]
        for d, direction in enumerate(("north", "east", "south", "west")):
            places = {p for p in PLACES if p != centre and solve_or_none(facts, f"What is {direction} of the {centre}?") == p}
            assert slots[d] == (PLACES.index(places.pop()) if places else 6), (facts, direction, slots)
        assert bool(s.carried_segments) == ("in_memory" in s.kinds)
        assert all(f.segments[-1] <= n < s.question.segments[0] for f in s.facts for n in s.carried_segments)


def solve_or_none(facts, question):
    """`solve`, or None where the facts name nothing in the question's direction."""
    try:
        return solve(facts, question)
    except AssertionError:
        return None
