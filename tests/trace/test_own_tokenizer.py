"""A decoder with its own small vocabulary, end to end: tasks made with its tokenizer, a few training steps,
and trace labels in its tokens, also after a save/load round trip."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rmt_lab.model import RecurrentWrapper, RMTConfig
from rmt_lab.tasks import TaskConfig, TaskGenerator
from rmt_lab.trace import TraceConfig, record
from tests.own_tokenizer import saved_word_tokenizer, word_tokenizer

SEGMENT = 24


def llama(vocab: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=64, vocab_size=vocab, max_position_embeddings=64)
    return LlamaForCausalLM(config)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return saved_word_tokenizer(tmp_path_factory.mktemp("tok") / "word-level")


def test_a_model_trains_on_tasks_in_its_own_vocabulary_and_its_trace_speaks_it(folder, tmp_path):
    tok = word_tokenizer()
    model = RecurrentWrapper.from_backbone(llama(len(tok)), RMTConfig(num_mem_tokens=2, segment_size=SEGMENT,
                                                                      num_classes=6), tokenizer=folder)
    assert model.tokenizer.convert_ids_to_tokens([417]) == tok.convert_ids_to_tokens([417])
    gen = TaskGenerator(TaskConfig(task="memorize", segment_size=SEGMENT, length=2, tokenizer=folder))
    samples = [gen.sample("train", i) for i in range(4)]
    ids = torch.stack([s.tokens() for s in samples])  # (4, 48), every id < 1500
    labels = torch.tensor([s.label for s in samples])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = model.train()(ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]  # the same 4 samples, fitted a little

    model.eval()
    _, trace = record(model, samples[:2], TraceConfig(segments="0"))
    fact = samples[1].facts[0]
    labels = trace.labels(0, 1)  # decoder: [read 0] [read 1] tokens [write 0] [write 1]
    assert labels[2:2 + SEGMENT] == tok.convert_ids_to_tokens(ids[1, :SEGMENT].tolist())
    assert labels[2 + fact.start:2 + fact.stop] == tok.convert_ids_to_tokens(list(fact.token_ids))  # "Mary", ...

    model.save_pretrained(tmp_path / "ckpt")  # the tokenizer travels with the checkpoint
    loaded = RecurrentWrapper.from_pretrained(tmp_path / "ckpt")
    _, again = record(loaded, samples[:2], TraceConfig(segments="0"))
    assert again.labels(0, 1) == labels


def test_without_a_tokenizer_labels_are_token_ids():
    model = RecurrentWrapper.from_backbone(llama(100), RMTConfig(num_mem_tokens=2, segment_size=8)).eval()
    assert model.tokenizer is None
    ids = torch.arange(5, 13)[None]
    _, trace = record(model, ids, TraceConfig(segments="0"))
    assert trace.labels(0, 0)[2:10] == [f"id:{i}" for i in range(5, 13)]


def test_a_ready_backbone_keeps_minilms_tokenizer():
    from rmt_lab.assets import load_tokenizer

    assert RecurrentWrapper.from_backbone("tiny-bert", RMTConfig(segment_size=16)).tokenizer is load_tokenizer()
