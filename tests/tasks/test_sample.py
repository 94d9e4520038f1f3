"""Samples: facts where the ground truth says, streaming == one tensor, determinism, disjoint splits."""

import hashlib
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rmt_lab.config import ConfigError
from rmt_lab.tasks import SPLITS, TaskConfig, iter_batch_segments

TASK_PLACEMENTS = [("memorize", "segment"), ("detect_memorize", "segment"), ("reasoning", "segment"),
                   ("detect_memorize", "sentence"), ("reasoning", "sentence")]


def check_span(span, tokens_at, tokenizer):
    """The tokens at the span's recorded positions are its text, and its segments follow from them."""
    ids = tokens_at(span)
    assert ids == list(span.token_ids) == tokenizer(span.text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == span.text.lower()
    assert span.segments == tuple(p // span.segment_size for p in span.positions)


@pytest.mark.parametrize("task,placement", TASK_PLACEMENTS)
@pytest.mark.parametrize("n_segments", [1, 7, 100])
def test_facts_are_where_the_ground_truth_says(task, placement, n_segments, make_generator, tokenizer):
    gen = make_generator(task=task, placement=placement, length=n_segments)
    for index in range(3):
        s = gen.sample("validation", index)
        tokens = s.tokens()
        assert tokens.shape == (n_segments * 499,)
        for span in (*s.facts, s.question):
            check_span(span, lambda sp: tokens[sp.start : sp.stop].tolist(), tokenizer)
        assert s.question.stop == s.n_tokens and set(s.question.segments) == {n_segments - 1}
        if placement == "segment":
            # Each fact opens its segment, or follows a fact that does.
            for f in s.facts:
                others = [g for g in s.facts if g is not f and g.segments[0] == f.segments[0]]
                assert f.offsets[0] == 0 or any(g.stop == f.start for g in others)
        if task == "memorize":
            assert s.facts[0].start == 0


@pytest.mark.parametrize("task,placement", TASK_PLACEMENTS)
def test_facts_are_where_the_ground_truth_says_at_4096_segments(task, placement, make_generator, tokenizer):
    """4096 x 499 = 2,043,904 tokens, the report's longest evaluation: streamed, checked at the facts."""
    gen = make_generator(task=task, placement=placement, length=4096)
    s = gen.sample("test", 0)
    spans = (*s.facts, s.question)
    wanted = {seg for span in spans for seg in span.segments}
    kept, n_segments = {}, 0
    for seg, tensor in enumerate(s.segments()):
        assert tensor.shape == (499,) and tensor.dtype == torch.int64
        if seg in wanted:
            kept[seg] = tensor.clone()
        n_segments += 1
    assert n_segments == 4096

    def tokens_at(span):
        return [int(kept[p // 499][p % 499]) for p in span.positions]

    for span in spans:
        check_span(span, tokens_at, tokenizer)
    assert s.question.segments[0] == 4095


@st.composite
def configs(draw):
    task, placement = draw(st.sampled_from(TASK_PLACEMENTS))
    unit = draw(st.sampled_from(["segments", "tokens"]))
    segment_size = draw(st.integers(16, 160))
    length = draw(st.integers(1, 8)) if unit == "segments" else draw(st.integers(1, 8 * segment_size))
    return dict(task=task, placement=placement, unit=unit, segment_size=segment_size, length=length,
                seed=draw(st.integers(0, 2**32)))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kwargs=configs(), split=st.sampled_from(SPLITS), index=st.integers(0, 10**9))
def test_streaming_equals_one_tensor_and_layout_holds(kwargs, split, index, make_generator, tokenizer):
    try:
        gen = make_generator(**kwargs)
    except ConfigError as err:  # too short for the task: refused with a message, never a broken sample
        assert "too short" in str(err) or "smaller than the facts" in str(err)
        assume(False)
    s = gen.sample(split, index)
    whole = s.tokens()
    segments = list(s.segments())
    assert torch.equal(torch.cat(segments), whole)
    assert len(whole) == s.n_tokens == TaskConfig(**kwargs).n_tokens
    assert [len(x) for x in segments[:-1]] == [s.segment_size] * (len(segments) - 1)
    assert 0 < len(segments[-1]) <= s.segment_size and len(segments) == s.n_segments
    spans = sorted((*s.facts, s.question), key=lambda sp: sp.start)
    for a, b in zip(spans, spans[1:]):
        assert a.stop <= b.start  # nothing overlaps
    for span in spans:
        check_span(span, lambda sp: whole[sp.start : sp.stop].tolist(), tokenizer)
    assert s.question.stop == s.n_tokens and set(s.question.segments) == {s.n_segments - 1}
    if kwargs["placement"] == "sentence":
        # BABILong placement: a fact follows the start, another fact, or a sentence's final punctuation.
        ends = {i for t, i in tokenizer.get_vocab().items() if t in {".", "!", "?"}}
        stops = {f.stop for f in s.facts}
        for f in s.facts:
            assert f.start == 0 or f.start in stops or int(whole[f.start - 1]) in ends


def test_the_last_segment_of_a_token_length_may_be_partial_but_holds_the_question(make_generator):
    gen = make_generator(task="reasoning", segment_size=100, length=250, unit="tokens")
    s = gen.sample("train", 0)
    assert [len(x) for x in s.segments()] == [100, 100, 50]
    assert set(s.question.segments) == {2}


def test_batched_streaming_is_the_samples_in_lockstep(make_generator):
    gen = make_generator(task="detect_memorize", segment_size=64, length=5)
    batches = list(gen.iter_batch("test", [3, 1, 4]))
    assert len(batches) == 5 and all(b.shape == (3, 64) and b.dtype == torch.int64 for b in batches)
    stacked = torch.cat(batches, dim=1)  # (batch, n_tokens)
    for row, index in enumerate([3, 1, 4]):
        assert torch.equal(stacked[row], gen.tokens("test", index))


def test_batched_streaming_refuses_mixed_lengths(make_generator):
    a = make_generator(length=2, segment_size=64).sample("train", 0)
    b = make_generator(length=3, segment_size=64).sample("train", 0)
    with pytest.raises(ConfigError, match="must share"):
        next(iter_batch_segments([a, b]))


def digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.numpy().astype("<i8").tobytes()).hexdigest()


def test_a_sample_is_the_same_each_time_and_depends_on_seed_split_index(make_generator):
    gen = make_generator(task="reasoning", segment_size=64, length=3)
    again = make_generator(task="reasoning", segment_size=64, length=3)
    first = gen.sample("train", 11)
    assert torch.equal(first.tokens(), again.tokens("train", 11))
    assert first.ground_truth() == again.sample("train", 11).ground_truth()
    other_seed = make_generator(task="reasoning", segment_size=64, length=3, seed=1)
    others = {digest(gen.tokens("train", 12)), digest(gen.tokens("test", 11)), digest(other_seed.tokens("train", 11))}
    assert digest(first.tokens()) not in others and len(others) == 3


SNIPPET = """
import hashlib, json
from rmt_lab.tasks import TaskConfig, make_sample
out = {}
for task, placement in [("memorize", "segment"), ("reasoning", "sentence")]:
    s = make_sample(TaskConfig(task=task, placement=placement, segment_size=64, length=5), "test", 42)
    out[task] = [hashlib.sha256(s.tokens().numpy().astype("<i8").tobytes()).hexdigest(), s.ground_truth()]
print(json.dumps(out, sort_keys=True))
"""


def test_samples_do_not_depend_on_the_process_or_python_hash_seed():
    """A fresh interpreter with another PYTHONHASHSEED gives the same samples as this one."""
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": os.getcwd()}
    there = subprocess.run([sys.executable, "-c", SNIPPET], env=env, check=True, capture_output=True, text=True)
    here = {}
    exec(SNIPPET.replace("print(", "here['out'] = ("), {"here": here})
    assert there.stdout.strip() == here["out"] and "facts" in here["out"]


def test_splits_never_share_a_sample(make_generator):
    """Splits draw from different seed streams and from disjoint noise sentences, so samples differ.

    Fact sets alone cannot be disjoint: memorize has only 4 x 5 x 6 = 120 distinct facts. And a
    sample with only a few noise tokens can coincide with one of another split, because different
    sentences can open alike (24 tokens with 13 of noise gave 1 collision in 9000); 64 tokens (one
    segment of a small model, with ~2 noise sentences) is the shortest length tested here.
    """
    gen = make_generator(task="memorize", segment_size=64, length=1)
    seen = {}
    for split in SPLITS:
        for index in range(3000):
            key = tuple(gen.tokens(split, index).tolist())
            assert seen.setdefault(key, split) == split, f"{split} sample {index} also in {seen[key]}"
    assert len(seen) > 0.95 * 3 * 3000  # not only disjoint, mostly distinct within a split too


def test_noise_sentences_of_different_splits_are_disjoint(pydoc_bank):
    def sentences(split):
        offsets = pydoc_bank.offsets
        return {tuple(pydoc_bank.tokens[offsets[i] : offsets[i + 1]]) for i in pydoc_bank.split_sentences[split]}

    train, validation, test = (sentences(s) for s in SPLITS)
    assert not (train & validation) and not (train & test) and not (validation & test)
    sizes = np.array([len(pydoc_bank.split_sentences[s]) for s in SPLITS]) / pydoc_bank.n_sentences
    assert np.allclose(sizes, [0.8, 0.1, 0.1], atol=0.04), sizes


def test_ten_million_tokens_stream_in_flat_memory(make_generator):
    """Peak traced allocation while streaming 10M tokens stays a few MB (the sample would be 80 MB)."""
    gen = make_generator(task="reasoning", length=10_000_000, unit="tokens")
    s = gen.sample("test", 0)
    tracemalloc.start()
    try:
        n = sum(len(x) for x in s.segments())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert n == 10_000_000
    assert peak < 8 * 2**20, peak


@pytest.mark.parametrize("split,index,message", [("dev", 0, "allowed values"), ("train", -1, "non-negative")])
def test_bad_split_or_index_is_refused(split, index, message, make_generator):
    with pytest.raises(ConfigError, match=message):
        make_generator().sample(split, index)
