"""Noise text: real English prose, cleaned, split into sentences and tokenized once.

The report hides its facts in long natural text (QuALITY articles; BABILong uses PG19 books).
Our default is the prose that ships with Python itself, the standard library's
`pydoc_data.topics`, so nothing is ever downloaded. A local UTF-8 file or folder, or a
HuggingFace `datasets` dataset already on disk, can be used instead.

A source becomes a `NoiseBank`: every kept sentence tokenized once into one flat token array with
sentence offsets. Samples are then built by sampling sentence indices with a numpy Generator and
gathering their tokens, so a 10M-token sample costs no tokenizer call.

Sentences are split between train / validation / test by a hash of their tokens (as BABILong keeps
test books apart), so no noise sentence is shared across splits.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SPLITS = ("train", "validation", "test")
# Percent of noise sentences per split: most text trains, the rest is held out for evaluation.
SPLIT_PERCENT = {"train": 80, "validation": 10, "test": 10}
# Sentences drawn from the generator per refill: big enough to amortise numpy calls, small enough
# (~100k tokens) that streaming memory stays flat.
SENTENCES_PER_DRAW = 4096


class NoiseError(ValueError):
    """A noise source is missing, empty, unreadable or not UTF-8."""


# --- cleaning ---------------------------------------------------------------------------------

_RULE = re.compile(r"^\s*([*=\-~^+#_`.:|]\s*)+$")  # reST underlines, table rules
_CODE_MARK = re.compile(r">>>|::=|^\s*\.\.\.|^\s*(def|class|import|from|return|print)\b|[{}]|^\s*[#@$]|\s{2}#")
# Split after . ! ? before a capital, but not after the abbreviations "e.g." and "i.e.".
_SENTENCE_END = re.compile(r"(?<!e\.g\.)(?<!i\.e\.)(?<=[.!?])\s+(?=[\"'(\[]?[A-Z])")
_PROSE_CHARS = re.compile(r"[A-Za-z0-9 ,;:'’\-.!?()\"“”*]")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _paragraphs(text: str) -> Iterator[list[str]]:
    block: list[str] = []
    for line in text.replace("\t", "    ").splitlines():
        if line.strip():
            block.append(line.rstrip())
        elif block:
            yield block
            block = []
    if block:
        yield block


def _is_prose_sentence(s: str) -> bool:
    words = s.split()
    if not 4 <= len(words) <= 60 or not s[0].isupper() or s[-1] not in ".!?":
        return False
    # Code, paths and markup are dense in symbols; prose is nearly all letters and punctuation.
    return len(_PROSE_CHARS.findall(s)) >= 0.95 * len(s)


def clean_sentences(text: str) -> list[str]:
    """Prose sentences of `text`: code, literal (indented) blocks and markup dropped.

    A paragraph indented deeper than a preceding paragraph that ends in ':' is a literal block
    (how reST and pydoc show code), as are paragraphs with code marks; underlines and rules are
    markup. What remains is joined per paragraph and split into sentences, and only sentences
    that read as prose (4-60 words, capitalised, terminal punctuation, few symbols) are kept.
    """
    sentences: list[str] = []
    literal_above: int | None = None  # indent of the ':' paragraph that opened a literal block
    for block in _paragraphs(text):
        indent = min(_indent(line) for line in block)
        if literal_above is not None and indent > literal_above:
            continue
        literal_above = None
        lines = [line for line in block if not _RULE.match(line)]
        if not lines:
            continue
        if lines[-1].rstrip().endswith(":"):
            literal_above = indent
        if any(_CODE_MARK.search(line) for line in lines):
            continue
        joined = " ".join(line.strip() for line in lines)
        sentences.extend(s for s in _SENTENCE_END.split(joined) if _is_prose_sentence(s))
    return sentences


# --- sources ----------------------------------------------------------------------------------


def _read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise NoiseError(f"noise file {path} is not UTF-8 text ({err.reason} at byte {err.start})") from err
    except OSError as err:
        raise NoiseError(f"cannot read noise file {path}: {err.strerror}") from err


def _folder_files(folder: Path) -> list[Path]:
    def hidden(p: Path) -> bool:
        return any(part.startswith(".") for part in p.relative_to(folder).parts)

    files = sorted(p for p in folder.rglob("*") if p.is_file() and not hidden(p))
    if not files:
        raise NoiseError(f"noise folder {folder} holds no files")
    return files


def _is_saved_dataset(folder: Path) -> bool:
    return (folder / "dataset_info.json").is_file() or (folder / "dataset_dict.json").is_file()


def _dataset_texts(dataset: Any, field: str, where: str) -> list[str]:
    if hasattr(dataset, "keys") and not hasattr(dataset, "column_names"):
        raise NoiseError(
            f"{where} is a DatasetDict with splits {list(dataset.keys())}; pass one split, e.g. ds['train']"
        )
    columns = list(getattr(dataset, "column_names", []))
    if field not in columns:
        raise NoiseError(f"{where} has no text column {field!r}; columns: {columns}")
    return [t for t in dataset[field] if isinstance(t, str)]


def _pydoc_texts() -> list[str]:
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    return [topics[key] for key in sorted(topics)]


def source_texts(source: str | os.PathLike | Any, field: str = "text") -> tuple[str, list[str]]:
    """(description, texts) of a noise source: "pydoc", a UTF-8 file, a folder, or a datasets object.

    A folder saved by `datasets.save_to_disk` is read with `datasets.load_from_disk` (only when the
    `datasets` package is installed); any other folder is read as UTF-8 text files, recursively.
    """
    if isinstance(source, str) and source == "pydoc":
        return "pydoc", _pydoc_texts()
    if not isinstance(source, (str, os.PathLike)):
        return f"dataset:{type(source).__name__}", _dataset_texts(source, field, f"dataset {type(source).__name__}")
    path = Path(source).expanduser()
    if not path.exists():
        raise NoiseError(f"noise source {str(source)!r} is neither 'pydoc' nor an existing file or folder")
    if path.is_file():
        return str(path), [_read_utf8(path)]
    if _is_saved_dataset(path):
        try:
            import datasets
        except ImportError as err:
            raise NoiseError(
                f"{path} is a saved HuggingFace dataset but the `datasets` package is not installed"
            ) from err
        return str(path), _dataset_texts(datasets.load_from_disk(str(path)), field, str(path))
    return str(path), [_read_utf8(p) for p in _folder_files(path)]


# --- bank -------------------------------------------------------------------------------------


def _split_of(token_ids: Sequence[int]) -> str:
    """Split of a sentence, from a hash of its tokens: sentences that tokenize alike (uncased
    tokenizers merge "The" and "the") always share a split. blake2b, not hash(), so the answer is
    the same on every run and machine."""
    data = np.asarray(token_ids, dtype=np.int32).tobytes()
    bucket = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") % 100
    if bucket < SPLIT_PERCENT["train"]:
        return "train"
    return "validation" if bucket < SPLIT_PERCENT["train"] + SPLIT_PERCENT["validation"] else "test"


@dataclass(frozen=True, eq=False)
class NoiseBank:
    """Tokenized noise sentences, back to back: sentence i is tokens[offsets[i]:offsets[i+1]]."""

    source: str
    tokens: np.ndarray  # (total_tokens,) int32
    offsets: np.ndarray  # (n_sentences + 1,) int64
    split_sentences: dict[str, np.ndarray]  # split -> (n,) int64 indices of its sentences
    fingerprint: str  # sha256 of tokens and offsets: equal fingerprints give equal samples

    @property
    def n_sentences(self) -> int:
        return len(self.offsets) - 1

    @classmethod
    def from_sentences(cls, source: str, sentences: Sequence[str], tokenizer) -> NoiseBank:
        if not sentences:
            raise NoiseError(f"noise source {source} holds no prose sentences after cleaning")
        ids = tokenizer(list(sentences), add_special_tokens=False)["input_ids"]
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        tokens = np.fromiter((t for x in ids for t in x), dtype=np.int32, count=int(offsets[-1]))
        labels = np.array([_split_of(x) for x in ids])
        split_sentences = {split: np.flatnonzero((labels == split) & (lengths > 0)) for split in SPLITS}
        for split, members in split_sentences.items():
            if len(members) == 0:
                raise NoiseError(
                    f"noise source {source} has {len(sentences)} sentences, none of them in split {split!r}; "
                    "give it more text"
                )
        digest = hashlib.sha256(tokens.tobytes() + offsets.tobytes()).hexdigest()
        return cls(source, tokens, offsets, split_sentences, digest)

    @classmethod
    def from_texts(cls, source: str, texts: Iterable[str], tokenizer) -> NoiseBank:
        return cls.from_sentences(source, [s for text in texts for s in clean_sentences(text)], tokenizer)


def tokenizer_fingerprint(tokenizer) -> str:
    """What a tokenizer does, hashed: two tokenizers built in memory share no usable name (both ""), and one
    folder may be rewritten, so banks are cached by this instead. A fast tokenizer's full description
    (vocabulary, merges, normalizer, added tokens) is one JSON string (2.6 ms for MiniLM's 30k entries)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return f"{type(tokenizer).__name__}:{hashlib.sha256(text.encode()).hexdigest()}"


_BANKS: dict[tuple, NoiseBank] = {}  # in-process cache: each source is cleaned and tokenized once


def _source_key(source: Any, field: str) -> tuple | None:
    """Cache key that changes when the files change; None for in-memory datasets (not cached)."""
    if isinstance(source, str) and source == "pydoc":
        return ("pydoc",)
    if not isinstance(source, (str, os.PathLike)):
        return None
    path = Path(source).expanduser().resolve()
    files = [path] if path.is_file() else _folder_files(path) if path.is_dir() else []
    return (str(path), field, tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files))


def load_noise(source: str | os.PathLike | Any = "pydoc", tokenizer=None, field: str = "text") -> NoiseBank:
    """The NoiseBank of `source` ("pydoc", a path, or a datasets object), cached per process."""
    if tokenizer is None:
        from rmt_lab.assets import load_tokenizer

        tokenizer = load_tokenizer()
    key = _source_key(source, field)
    if key is not None:
        key = (*key, tokenizer_fingerprint(tokenizer))
        if key in _BANKS:
            return _BANKS[key]
    name, texts = source_texts(source, field)
    if not any(t.strip() for t in texts):
        raise NoiseError(f"noise source {name} is empty")
    bank = NoiseBank.from_texts(name, texts, tokenizer)
    if key is not None:
        _BANKS[key] = bank
    return bank


class NoiseStream:
    """An endless run of noise sentences of one split, drawn with `rng`; read it in pieces.

    Sentence indices are drawn SENTENCES_PER_DRAW at a time, so the token sequence depends only on
    the generator's seed, never on how the reader slices it. Memory: one draw (~100k tokens).
    """

    def __init__(self, bank: NoiseBank, split: str, rng: np.random.Generator):
        self._bank, self._members, self._rng = bank, bank.split_sentences[split], rng
        self._buffer = np.empty(0, dtype=np.int32)
        self._pos = 0

    def _draw(self) -> np.ndarray:
        """(n_sentences,) indices of the next SENTENCES_PER_DRAW sentences."""
        return self._members[self._rng.integers(0, len(self._members), SENTENCES_PER_DRAW)]

    def _refill(self) -> None:
        offsets = self._bank.offsets
        sentences = self._draw()
        starts = offsets[sentences]
        lengths = offsets[sentences + 1] - starts
        # Token k of the draw comes from bank position start(sentence) + (k - first k of that sentence).
        shift = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
        self._buffer = self._bank.tokens[shift + np.arange(len(shift))]
        self._pos = 0

    def read(self, n: int) -> Iterator[np.ndarray]:
        """The next `n` tokens, as int32 pieces of at most one draw each."""
        while n > 0:
            if self._pos == len(self._buffer):
                self._refill()
            take = min(n, len(self._buffer) - self._pos)
            yield self._buffer[self._pos : self._pos + take]
            self._pos += take
            n -= take

    def boundaries(self) -> Iterator[np.ndarray]:
        """Token counts at which sentences end (cumulative, increasing), one draw per piece.

        Reads the same draws as `read` would from a fresh generator with the same seed, without
        gathering tokens: this is how facts are placed between sentences of a 10M-token sample.
        """
        total = 0
        offsets = self._bank.offsets
        while True:
            sentences = self._draw()
            ends = total + np.cumsum(offsets[sentences + 1] - offsets[sentences])
            total = int(ends[-1])
            yield ends
