"""Tasks in another model's vocabulary: TaskConfig.tokenizer as a local folder or an object."""

import numpy as np
import pytest

from rmt_lab.assets import load_tokenizer
from rmt_lab.config import ConfigError
from rmt_lab.tasks import TaskConfig, TaskGenerator
from tests.own_tokenizer import saved_word_tokenizer, word_tokenizer


def test_the_default_is_minilms_wordpiece_and_its_samples_are_unchanged(pydoc_bank):
    """No tokenizer named: the same tokens as the MiniLM tokenizer handed over explicitly (the path every
    result so far took), and the same noise bank."""
    config = TaskConfig(task="detect_memorize", segment_size=64, length=3)
    default = TaskGenerator(config)
    explicit = TaskGenerator(config, tokenizer=load_tokenizer(), noise=pydoc_bank)
    assert default.noise.fingerprint == pydoc_bank.fingerprint
    for index in range(3):
        assert np.array_equal(default.tokens("train", index).numpy(), explicit.tokens("train", index).numpy())


@pytest.mark.parametrize("given", ["folder", "object"])
def test_samples_are_made_in_the_given_tokenizer(tmp_path, given):
    tok = word_tokenizer()
    spec = saved_word_tokenizer(tmp_path / "tok") if given == "folder" else tok
    gen = TaskGenerator(TaskConfig(task="reasoning", segment_size=48, length=3, tokenizer=spec))
    sample = gen.sample("validation", 5)
    tokens = sample.tokens().numpy()
    assert tokens.max() < len(tok) and gen.noise.tokens.max() < len(tok)
    for span in (*sample.facts, sample.question):
        assert list(span.token_ids) == tok(span.text, add_special_tokens=False)["input_ids"]
        assert tokens[span.start:span.stop].tolist() == list(span.token_ids)
        assert " ".join(tok.convert_ids_to_tokens(list(span.token_ids))).replace(" .", ".").replace(" ?", "?") \
            == span.text
    # Another vocabulary, another noise bank: the MiniLM bank cached in this process is not reused.
    assert gen.noise.fingerprint != TaskGenerator(TaskConfig(task="reasoning", segment_size=48, length=3)).noise.fingerprint


def test_a_folder_is_saved_in_the_config_and_an_object_is_refused_by_name(tmp_path):
    folder = saved_word_tokenizer(tmp_path / "tok")
    config = TaskConfig(tokenizer=folder)  # a Path is kept as its text, which JSON holds
    assert config.tokenizer == str(folder)
    assert TaskConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match=r"tokenizer is a \w+ object.*save_pretrained\(folder\)"):
        TaskConfig(tokenizer=word_tokenizer()).to_dict()


def test_a_tokenizer_given_twice_is_refused():
    with pytest.raises(ConfigError, match=r"got tokenizer= and TaskConfig.tokenizer=<\w+>: give one"):
        TaskGenerator(TaskConfig(tokenizer=word_tokenizer()), tokenizer=load_tokenizer())
