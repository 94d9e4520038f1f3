"""A small word-level tokenizer trained in memory (no hub, no files but the ones a test writes), so a model
with its own vocabulary can be given the report's tasks and traced in it."""

from __future__ import annotations

import functools
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from rmt_lab.tasks.noise import _pydoc_texts
from rmt_lab.tasks.registry import get_task

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]


@functools.cache  # trained once per session (2 s); tokenizers are not changed by the tests
def word_tokenizer(vocab_size: int = 1500) -> PreTrainedTokenizerFast:
    """Whole words and punctuation, cased, trained on Python's prose and every fact and question of the tasks
    (so the tasks' words are in the vocabulary; rarer noise words become [UNK])."""
    texts = [t for name in ("memorize", "reasoning") for t in get_task(name).fact_texts() + get_task(name).question_texts()]
    texts += _pydoc_texts()
    core = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.train_from_iterator(texts, trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=SPECIAL))
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]")


def saved_word_tokenizer(folder: Path, vocab_size: int = 1500) -> Path:
    word_tokenizer(vocab_size).save_pretrained(str(folder))
    return folder
