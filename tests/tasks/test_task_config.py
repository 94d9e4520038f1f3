"""TaskConfig validation and the length / segment-size errors of TaskGenerator."""

import pytest

from rmt_lab.config import ConfigError
from rmt_lab.tasks import TaskConfig


def test_defaults_are_the_reports_first_stage():
    c = TaskConfig()
    assert (c.task, c.segment_size, c.n_segments, c.n_tokens, c.placement) == ("memorize", 499, 1, 499, "segment")
    assert TaskConfig(length=4096).n_tokens == 2_043_904
    assert TaskConfig(length=2_048_000, unit="tokens").n_segments == 4105


def test_a_length_in_tokens_wins_over_segments_and_neither_gives_the_default():
    assert TaskConfig.of_length(3, 1000, task="reasoning").unit == "tokens"
    assert (TaskConfig.of_length(3).length, TaskConfig.of_length(None, default_segments=4).length) == (3, 4)
    assert TaskConfig.of_length(None, None, default_segments=4).unit == "segments"


def test_round_trips_through_a_dict():
    c = TaskConfig(task="reasoning", length=7, placement="sentence", seed=3)
    assert TaskConfig.from_dict(c.to_dict()) == c


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"task": "sorting"}, r"unknown task 'sorting'; available tasks: \['detect_memorize', 'memorize', 'reasoning'\]"),
        ({"placement": "anywhere"}, r"placement='anywhere' is not allowed; allowed values: \['segment', 'sentence'\]"),
        ({"unit": "words"}, r"unit='words' is not allowed; allowed values: \['segments', 'tokens'\]"),
        ({"length": 0}, r"length=0 must be a positive integer"),
        ({"segment_size": True}, r"segment_size=True must be a positive integer"),
        ({"seed": -1}, r"seed=-1 must be a non-negative integer"),
        ({"task": "memorize", "placement": "sentence"}, r"does not apply to task 'memorize'.*detect_memorize"),
        ({"task": "memorize", "subset": "hard"}, r"subset='hard' is not a subset of task 'memorize'; allowed values: "
                                                 r"\[None\]"),
        ({"task": "reasoning", "subset": "easy"},
         r"subset='easy' is not a subset of task 'reasoning'; allowed values: \[None, 'flips', 'hard', 'match', "
         r"'opposite', 'recall', 'recall_match'\]"),
    ],
)
def test_bad_values_name_the_value_and_the_allowed_ones(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TaskConfig(**kwargs)


def test_from_dict_rejects_unknown_keys_and_wrong_types():
    with pytest.raises(ConfigError, match=r"unknown TaskConfig key\(s\) \['segments'\]; allowed keys"):
        TaskConfig.from_dict({"segments": 4})
    with pytest.raises(ConfigError, match=r"TaskConfig.length must be int, got str"):
        TaskConfig.from_dict({"length": "4"})


def test_segment_smaller_than_a_fact_is_refused(make_generator):
    with pytest.raises(ConfigError, match=r"segment_size=6 is smaller than the facts of task 'memorize'.*up to 7 tokens"):
        make_generator(task="memorize", segment_size=6, length=10)
    # reasoning's two facts may open the same segment, so a segment must hold both
    with pytest.raises(ConfigError, match=r"segment_size=12 is smaller than the facts of task 'reasoning'.*16 tokens"):
        make_generator(task="reasoning", segment_size=12, length=10)


def test_length_too_short_for_facts_and_question_is_refused(make_generator):
    with pytest.raises(ConfigError, match=r"length=20 tokens \(20 tokens\) is too short .* need up to 23 tokens"):
        make_generator(task="reasoning", segment_size=499, length=20, unit="tokens")
    with pytest.raises(ConfigError, match=r"length=1 segments \(16 tokens\) is too short"):
        make_generator(task="reasoning", segment_size=16, length=1)
    make_generator(task="reasoning", segment_size=16, length=2)  # facts in segment 0, question in segment 1


def test_a_last_segment_too_short_for_the_question_is_refused(make_generator):
    with pytest.raises(ConfigError, match=r"last segment of 2 tokens \(2 x 499 \+ 2\).*multiple of 499"):
        make_generator(task="memorize", length=1000, unit="tokens")
