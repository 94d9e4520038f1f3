"""Training on a model folder a researcher brings: its own vocabulary for the tasks, its checkpoints loadable."""

import dataclasses
import json

import pytest
from transformers import BertConfig, BertModel

from rmt_lab.config import ConfigError
from rmt_lab.model import RecurrentWrapper
from rmt_lab.train import ExperimentConfig, generalization_matrix, run_experiment
from tests.own_tokenizer import word_tokenizer
from tests.train.helpers import tiny_experiment


def _model_folder(path, with_tokenizer=True):
    tokenizer = word_tokenizer()
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id)
    BertModel(config, add_pooling_layer=False).save_pretrained(str(path))
    if with_tokenizer:
        tokenizer.save_pretrained(str(path))
    return path


def test_a_run_trains_on_a_model_folder_with_its_own_tokenizer(tmp_path):
    folder = _model_folder(tmp_path / "my-bert")
    config = tiny_experiment(stages=(1, 2), max_steps=3, backbone=str(folder))
    assert config.task.tokenizer == str(folder)  # the tasks speak the model's vocabulary
    run = tmp_path / "run"
    run_experiment(config, run, callbacks=[])
    saved = json.loads((run / "config.json").read_text())
    assert saved["backbone"] == str(folder) and saved["task"]["tokenizer"] == str(folder)
    model = RecurrentWrapper.from_pretrained(run / "checkpoints" / "stage-2")
    assert model.tokenizer.convert_ids_to_tokens(5) == word_tokenizer().convert_ids_to_tokens(5)
    table = generalization_matrix(run, [1, 2], n_samples=8)
    assert len(table) == 4 and table["accuracy"].between(0, 1).all()


def test_a_backbone_that_is_neither_ready_nor_a_model_folder_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="neither a ready backbone.*tiny-bert.*config.json"):
        tiny_experiment(backbone=str(tmp_path / "missing"))
    folder = _model_folder(tmp_path / "bare", with_tokenizer=False)
    with pytest.raises(ConfigError, match="holds no tokenizer.*task.tokenizer"):
        tiny_experiment(backbone=str(folder))
    tokenizer = str(_model_folder(tmp_path / "t"))
    base = tiny_experiment()
    config = dataclasses.replace(base, backbone=str(folder), task=dataclasses.replace(base.task, tokenizer=tokenizer))
    assert isinstance(config, ExperimentConfig) and config.task.tokenizer == tokenizer
