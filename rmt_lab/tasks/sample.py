"""Samples: a task's facts and question laid over noise text, streamed segment by segment.

A sample is fixed by (config, split, index): numpy's SeedSequence keyed by (seed, split, index)
seeds one generator for the episode and the fact positions, and one for the noise sentences. Its
content is described by a small layout (where each fact goes, how much noise lies between), never
by its tokens, so a 10M-token sample streams in constant memory: noise sentences are gathered
from the tokenized NoiseBank one draw at a time and cut into segments.

Positions are in content tokens: the sample is what the RMT wrapper cuts into segments of
`segment_size` tokens, before any [CLS], [SEP] or memory token is added.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from rmt_lab.config import ConfigError
from rmt_lab.tasks.config import TaskConfig
from rmt_lab.tasks.noise import SPLITS, NoiseBank, NoiseStream, load_noise
from rmt_lab.tasks.registry import IN_MEMORY, PLACES, SUBSET_DRAWS, get_task

SPLIT_CODES = {split: code for code, split in enumerate(SPLITS)}  # enters the seed; never reorder
# Segments are cut from blocks of about this many tokens: few numpy calls, flat memory (~2 MB).
BLOCK_TOKENS = 1 << 18


@dataclass(frozen=True)
class Span:
    """A stated text (fact or question) and where its tokens sit: content positions [start, stop)."""

    text: str
    token_ids: tuple[int, ...]
    start: int
    segment_size: int

    @property
    def stop(self) -> int:
        return self.start + len(self.token_ids)

    @property
    def positions(self) -> range:
        return range(self.start, self.stop)

    @property
    def segments(self) -> tuple[int, ...]:
        """Segment index of each token."""
        return tuple(p // self.segment_size for p in self.positions)

    @property
    def offsets(self) -> tuple[int, ...]:
        """Position of each token inside its segment (content tokens, before special tokens)."""
        return tuple(p % self.segment_size for p in self.positions)

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "token_ids": list(self.token_ids),
            "start": self.start,
            "stop": self.stop,
            "segments": list(self.segments),
            "offsets": list(self.offsets),
        }


@dataclass(frozen=True)
class _Layout:
    """What a sample's tokens are, without the tokens: fed to `_pieces` to produce them."""

    bank: NoiseBank
    split: str
    noise_seed: np.random.SeedSequence
    inserts: tuple[tuple[int, np.ndarray], ...]  # (noise tokens before it, token ids), in text order
    noise_len: int
    question_ids: np.ndarray


@dataclass(frozen=True, eq=False)
class Sample:
    """One sample and its ground truth. Tokens come from `segments()` or `tokens()`."""

    task: str
    split: str
    index: int
    facts: tuple[Span, ...]  # in the order the episode states them (not necessarily text order)
    question: Span  # always the last tokens of the sample
    answer: str  # text answer, for decoder models
    label: int  # index of `answer` in PLACES, for classification
    kinds: frozenset[str]  # the episode's kinds and IN_MEMORY (TaskSpec.subsets), for analyses by sort of sample
    n_tokens: int
    segment_size: int
    _layout: _Layout = field(repr=False)

    @property
    def n_segments(self) -> int:
        return -(-self.n_tokens // self.segment_size)

    @property
    def carried_segments(self) -> range:
        """The segments whose memory carries every fact on towards the question: from the one holding the last
        fact's end to the one before the question's (empty when a fact reaches the question's segment)."""
        return range(max(f.segments[-1] for f in self.facts), self.question.segments[0])

    def _pieces(self) -> Iterator[np.ndarray]:
        """The sample's tokens in order, as pieces of noise, facts and the question."""
        lay = self._layout
        noise = NoiseStream(lay.bank, lay.split, np.random.Generator(np.random.PCG64(lay.noise_seed)))
        done = 0
        for offset, ids in lay.inserts:
            yield from noise.read(offset - done)
            done = offset
            yield ids
        yield from noise.read(lay.noise_len - done)
        yield lay.question_ids

    def segments(self) -> Iterator[torch.Tensor]:
        """Yield (segment_size,) int64 tensors of content tokens; a final partial segment is shorter.

        Memory stays flat whatever the length: one block of BLOCK_TOKENS tokens at a time. The
        tensors are views into that block; treat them as read-only.
        """
        size = self.segment_size
        block_len = max(1, BLOCK_TOKENS // size) * size
        pieces = self._pieces()
        piece, pos = np.empty(0, dtype=np.int32), 0
        for block_start in range(0, self.n_tokens, block_len):
            block = np.empty(min(block_len, self.n_tokens - block_start), dtype=np.int64)
            fill = 0
            while fill < len(block):
                if pos == len(piece):
                    piece, pos = next(pieces), 0
                take = min(len(block) - fill, len(piece) - pos)
                block[fill : fill + take] = piece[pos : pos + take]
                fill, pos = fill + take, pos + take
            for s in range(0, len(block), size):
                yield torch.from_numpy(block[s : s + size])

    def tokens(self) -> torch.Tensor:
        """The whole sample as one (n_tokens,) int64 tensor (8 bytes per token: mind long samples)."""
        out = np.empty(self.n_tokens, dtype=np.int64)
        pos = 0
        for piece in self._pieces():
            out[pos : pos + len(piece)] = piece
            pos += len(piece)
        assert pos == self.n_tokens, (pos, self.n_tokens)
        return torch.from_numpy(out)

    def ground_truth(self) -> dict:
        """JSON-ready ground truth: facts and question with token positions and segment indices."""
        return {
            "task": self.task,
            "split": self.split,
            "index": self.index,
            "n_tokens": self.n_tokens,
            "segment_size": self.segment_size,
            "n_segments": self.n_segments,
            "facts": [f.to_dict() for f in self.facts],
            "question": self.question.to_dict(),
            "answer": self.answer,
            "label": self.label,
        }


class TaskGenerator:
    """Makes the samples of one TaskConfig: `gen.sample("train", 7)`.

    Every fact and question the task can state is tokenized once here, and the noise source once
    per process, so making a sample calls no tokenizer.
    """

    def __init__(self, config: TaskConfig, *, tokenizer=None, noise: NoiseBank | None = None):
        """`tokenizer`: an already loaded tokenizer to share between generators, in place of the config's."""
        from rmt_lab import assets

        if tokenizer is None:
            tokenizer = assets.load_tokenizer() if config.tokenizer is None else assets.as_tokenizer(config.tokenizer)
        elif config.tokenizer is not None and config.tokenizer is not tokenizer:
            raise ConfigError(f"TaskGenerator got tokenizer= and TaskConfig.tokenizer={config.tokenizer_name()}: "
                              "give one")
        self.config = config
        self.spec = get_task(config.task)
        self.tokenizer = tokenizer
        self.noise = noise if noise is not None else load_noise(config.noise, tokenizer, field=config.noise_field)
        facts, questions = self.spec.fact_texts(), self.spec.question_texts()
        ids = tokenizer(list(facts + questions), add_special_tokens=False)["input_ids"]
        self._ids = {text: np.asarray(i, dtype=np.int32) for text, i in zip(facts + questions, ids)}
        self.max_fact_tokens = max(len(self._ids[t]) for t in facts)
        self.max_question_tokens = max(len(self._ids[t]) for t in questions)
        self._fact_segments = self._check_fits()

    def _check_fits(self) -> np.ndarray:
        """Refuse lengths that cannot hold the task; return the segments a fact may open."""
        c, spec = self.config, self.spec
        size, total = c.segment_size, c.n_tokens
        facts = spec.n_facts * self.max_fact_tokens  # facts may share a segment
        question = self.max_question_tokens
        if size < facts:
            raise ConfigError(
                f"segment_size={size} is smaller than the facts of task {c.task!r}: {spec.n_facts} fact(s) of up to "
                f"{self.max_fact_tokens} tokens must fit in one segment ({facts} tokens)"
            )
        if total < facts + question:
            raise ConfigError(
                f"length={c.length} {c.unit} ({total} tokens) is too short to hold the facts and question of task "
                f"{c.task!r}: they need up to {facts + question} tokens"
            )
        last = total - (c.n_segments - 1) * size
        if last < question:
            raise ConfigError(
                f"length={c.length} tokens leaves a last segment of {last} tokens "
                f"({c.n_segments - 1} x {size} + {last}), "
                f"too short for the question (up to {question} tokens): use a multiple of {size} tokens or leave at "
                f"least {question} tokens in the last segment"
            )
        # The last segment can take facts only if they fit before the question.
        usable = c.n_segments if last - question >= facts else c.n_segments - 1
        return np.arange(usable)

    @property
    def n_tokens(self) -> int:
        return self.config.n_tokens

    @property
    def n_segments(self) -> int:
        return self.config.n_segments

    def sample(self, split: str, index: int) -> Sample:
        if split not in SPLIT_CODES:
            raise ConfigError(f"split={split!r} is not allowed; allowed values: {list(SPLITS)}")
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
            raise ConfigError(f"sample index={index!r} must be a non-negative integer")
        c = self.config
        # SeedSequence mixes (seed, split, index) the same way on every machine (Python's hash() does not).
        plan_seed, noise_seed = np.random.SeedSequence(c.seed, spawn_key=(SPLIT_CODES[split], int(index))).spawn(2)
        rng = np.random.Generator(np.random.PCG64(plan_seed))
        episode, fact_ids, question_ids, noise_len, starts, kinds = self._draw(rng, split, noise_seed)
        order = sorted(range(len(fact_ids)), key=lambda i: starts[i])
        inserts, before = [], 0
        for i in order:  # a fact's noise offset = its start minus the fact tokens ahead of it
            inserts.append((starts[i] - before, fact_ids[i]))
            before += len(fact_ids[i])
        layout = _Layout(self.noise, split, noise_seed, tuple(inserts), noise_len, question_ids)
        size = c.segment_size
        return Sample(
            task=c.task,
            split=split,
            index=int(index),
            facts=tuple(Span(t, tuple(map(int, ids)), s, size) for t, ids, s in zip(episode.facts, fact_ids, starts)),
            question=Span(episode.question, tuple(map(int, question_ids)), c.n_tokens - len(question_ids), size),
            answer=episode.answer,
            label=PLACES.index(episode.answer),
            kinds=kinds,
            n_tokens=c.n_tokens,
            segment_size=size,
            _layout=layout,
        )

    def _draw(self, rng: np.random.Generator, split: str, noise_seed: np.random.SeedSequence):
        """An episode and where its facts go: (episode, fact ids, question ids, noise length, fact starts, kinds).

        With `TaskConfig.subset`, drawn again until the sample has the subset's kinds (rejection sampling,
        so that each subset's samples are phrased and placed as the whole task's). The episode is checked
        before its facts are placed: a subset of episode kinds then places only the episode it keeps.
        """
        c = self.config
        wanted = self.spec.subsets[c.subset] if c.subset is not None else frozenset()
        for _ in range(SUBSET_DRAWS):
            episode = self.spec.episode(rng)
            if not wanted - {IN_MEMORY} <= episode.kinds:
                continue
            fact_ids = [self._ids[f] for f in episode.facts]
            question_ids = self._ids[episode.question]
            noise_len = c.n_tokens - len(question_ids) - sum(len(f) for f in fact_ids)
            if c.placement == "segment":
                starts = self._segment_starts(rng, fact_ids)
            else:
                starts = self._sentence_starts(rng, fact_ids, noise_len, split, noise_seed)
            question_segment = (c.n_tokens - len(question_ids)) // c.segment_size
            in_memory = all((start + len(ids) - 1) // c.segment_size < question_segment
                            for start, ids in zip(starts, fact_ids))
            kinds = episode.kinds | ({IN_MEMORY} if in_memory else frozenset())
            if wanted <= kinds:
                return episode, fact_ids, question_ids, noise_len, starts, kinds
        raise ConfigError(f"TaskConfig.subset={c.subset!r} drew no sample of task {c.task!r} with kinds "
                          f"{sorted(wanted)} in {SUBSET_DRAWS} tries at length={c.length} {c.unit}: "
                          f"{IN_MEMORY!r} needs a segment before the question's")

    def _segment_starts(self, rng: np.random.Generator, fact_ids: list[np.ndarray]) -> list[int]:
        """Report placement: each fact opens a segment; facts sharing one follow each other."""
        if self.spec.fact_segment == "first":
            segments = [0] * len(fact_ids)
        else:
            segments = [int(s) for s in rng.choice(self._fact_segments, size=len(fact_ids))]
        starts, used = [], {}
        for seg, ids in zip(segments, fact_ids):
            starts.append(seg * self.config.segment_size + used.get(seg, 0))
            used[seg] = used.get(seg, 0) + len(ids)
        return starts

    def _sentence_starts(
        self,
        rng: np.random.Generator,
        fact_ids: list[np.ndarray],
        noise_len: int,
        split: str,
        noise_seed: np.random.SeedSequence,
    ) -> list[int]:
        """BABILong placement: each fact goes at a uniformly drawn point of the noise, moved back to
        the sentence boundary at or before it; facts at the same boundary keep the episode order."""
        targets = rng.integers(0, noise_len + 1, size=len(fact_ids))
        boundaries = _sentence_boundaries(self.noise, split, noise_seed, targets)
        order = sorted(range(len(fact_ids)), key=lambda i: (boundaries[i], i))
        starts, before = [0] * len(fact_ids), 0
        for i in order:
            starts[i] = int(boundaries[i]) + before
            before += len(fact_ids[i])
        return starts

    def segments(self, split: str, index: int) -> Iterator[torch.Tensor]:
        return self.sample(split, index).segments()

    def tokens(self, split: str, index: int) -> torch.Tensor:
        return self.sample(split, index).tokens()

    def iter_batch(self, split: str, indices: Iterable[int]) -> Iterator[torch.Tensor]:
        return iter_batch_segments([self.sample(split, i) for i in indices])


def _sentence_boundaries(
    bank: NoiseBank, split: str, noise_seed: np.random.SeedSequence, targets: np.ndarray
) -> np.ndarray:
    """For each target noise offset, the largest sentence end <= it (0 opens the first sentence).

    Replays the sample's own noise draws (lengths only), stopping past the largest target.
    """
    found = np.zeros(len(targets), dtype=np.int64)
    order = np.argsort(targets, kind="stable")
    k, previous = 0, 0
    stream = NoiseStream(bank, split, np.random.Generator(np.random.PCG64(noise_seed)))
    for ends in stream.boundaries():
        while k < len(order) and targets[order[k]] < ends[-1]:
            n_before = int(np.searchsorted(ends, targets[order[k]], side="right"))
            found[order[k]] = ends[n_before - 1] if n_before else previous
            k += 1
        if k == len(order):
            return found
        previous = int(ends[-1])
    raise AssertionError("unreachable: the noise stream is endless")


def iter_batch_segments(samples: Sequence[Sample]) -> Iterator[torch.Tensor]:
    """Stream several samples in lockstep: (batch, segment_size) int64 tensors, one per segment.

    This is the iterable the RMT wrapper's streaming mode consumes. All samples must share their
    length and segment size (samples of one TaskGenerator do).
    """
    shapes = {(s.n_tokens, s.segment_size) for s in samples}
    if len(shapes) != 1:
        raise ConfigError(f"samples streamed together must share (n_tokens, segment_size); got {sorted(shapes)}")
    for segments in zip(*(s.segments() for s in samples)):
        yield torch.stack(segments)  # (batch, segment_size)


@functools.lru_cache(maxsize=8)
def generator_for(config: TaskConfig) -> TaskGenerator:
    """The TaskGenerator of `config` with the default tokenizer and noise, built once per process."""
    return TaskGenerator(config)


def make_sample(config: TaskConfig, split: str, index: int) -> Sample:
    return generator_for(config).sample(split, index)


def sample_segments(config: TaskConfig, split: str, index: int) -> Iterator[torch.Tensor]:
    """Sample `index` of `split`, segment by segment: (segment_size,) int64 tensors."""
    return make_sample(config, split, index).segments()


def sample_tokens(config: TaskConfig, split: str, index: int) -> torch.Tensor:
    """Sample `index` of `split` as one (n_tokens,) int64 tensor; same tokens as `sample_segments`."""
    return make_sample(config, split, index).tokens()


def iter_batch(config: TaskConfig, split: str, indices: Iterable[int]) -> Iterator[torch.Tensor]:
    """Samples `indices` of `split` in lockstep: (batch, segment_size) int64 tensors."""
    return generator_for(config).iter_batch(split, indices)
