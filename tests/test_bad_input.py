"""Bad input across the public API, one row each: the error names the value and what is allowed.

Rows cover forward, stream, the memory cell, init_memory, from_backbone, from_pretrained, the configs,
task generation and the recorder. Each row is a call on a small environment (tiny models, a folder) and
the exception type and message it must raise; none may fail inside torch or pass silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from rmt_lab.config import ConfigError
from rmt_lab.model import RecurrentWrapper, RMTConfig, Segment
from rmt_lab.tasks import TaskConfig, TaskGenerator
from rmt_lab.tasks.noise import NoiseError
from rmt_lab.trace import Recorder, TraceConfig
from tests.model.families import BY_NAME
from tests.model.helpers import tiny, tokens

NAN, INF = float("nan"), float("inf")


@dataclass
class Env:
    bert: RecurrentWrapper  # tiny-bert: 4 memory tokens, segments of 16, 6 classes, vocabulary 30522
    gpt: RecurrentWrapper  # tiny-gpt2 with an LM head and no classifier
    tmp: Path

    def checkpoint(self, edit=None, weights: bytes | None = None) -> Path:
        """A saved tiny-bert checkpoint, its rmt_config.json changed by `edit(meta)` or its weights replaced."""
        folder = self.tmp / "ckpt"
        self.bert.save_pretrained(folder)
        if edit is not None:
            meta = json.loads((folder / "rmt_config.json").read_text())
            edit(meta)
            (folder / "rmt_config.json").write_text(json.dumps(meta))
        if weights is not None:
            (folder / "model.safetensors").write_bytes(weights(folder / "model.safetensors"))
        return folder

    def noise_file(self, content: bytes) -> str:
        path = self.tmp / "noise.txt"
        path.write_bytes(content)
        return str(path)

    def record(self, model=None, segments=None, **kwargs):
        model = self.bert if model is None else model
        with Recorder(model, **kwargs):
            model.stream(segments if segments is not None else [tokens(2, 16)])


def mem(batch=2, fill=0.0, n_mem=4, d=64, dtype=torch.float32):
    return torch.full((batch, n_mem, d), fill, dtype=dtype)


LEFT_PADDED = torch.tensor([[False] * 4 + [True] * 12, [True] * 16])
LM = torch.full((2, 20), -100)


def _set(path: str, value):
    def edit(meta):
        *keys, last = path.split(".")
        target = meta
        for key in keys:
            target = target[key]
        target[last] = value
    return edit


CASES = [
    # --- forward: ids, masks, labels, memory
    ("forward ids past vocab", lambda e: e.bert(torch.tensor([[5, 30522]])), ValueError,
     r"token ids must lie in \[0, 30522\).*5 to 30522"),
    ("forward negative ids", lambda e: e.bert(torch.tensor([[-1, 7]])), ValueError, r"must lie in \[0, 30522\).*-1 to 7"),
    ("forward float ids", lambda e: e.bert(torch.rand(1, 8)), TypeError, r"integer tensor \(int64 or int32\), got torch.float32"),
    ("forward ids as a list", lambda e: e.bert([[1, 2, 3]]), TypeError, r"input_ids must be a torch.Tensor, got list"),
    ("forward 3-d ids", lambda e: e.bert(tokens(2, 20)[None]), ValueError, r"\(batch, length\) or \(length,\), got \(1, 2, 20\)"),
    ("forward batch of 0", lambda e: e.bert(torch.zeros(0, 8, dtype=torch.long)), ValueError, r"empty batch: .*\(0, 8\)"),
    ("forward length 0", lambda e: e.bert(torch.zeros(1, 0, dtype=torch.long)), ValueError, r"empty input"),
    ("forward mask shape", lambda e: e.bert(tokens(2, 20), torch.ones(2, 19)), ValueError,
     r"attention_mask shape \(2, 19\) != input_ids \(2, 20\)"),
    ("forward all-padding row", lambda e: e.bert(tokens(2, 8), torch.tensor([[1] * 8, [0] * 8])), ValueError,
     r"empty input: sample\(s\) \[1\] have no tokens"),
    ("class label = classes", lambda e: e.bert(tokens(2, 20), labels=torch.tensor([0, 6])), ValueError,
     r"class labels must lie in \[0, 6\); got \[0, 6\]"),
    ("negative class label", lambda e: e.bert(tokens(2, 20), labels=torch.tensor([-1, 2])), ValueError,
     r"class labels must lie in \[0, 6\)"),
    ("float class labels", lambda e: e.bert(tokens(2, 20), labels=torch.tensor([0.5, 1.0])), TypeError,
     r"class labels must be an integer tensor \(int64\), got torch.float32"),
    ("class labels shape", lambda e: e.bert(tokens(2, 20), labels=torch.tensor([0, 1, 2])), ValueError,
     r"class labels have shape \(3,\); expected \(2,\)"),
    ("class labels, no classifier", lambda e: e.gpt(tokens(2, 20), labels=torch.tensor([0, 1])), ValueError,
     r"no classifier \(RMTConfig.num_classes=0\)"),
    ("token labels past vocab", lambda e: e.gpt(tokens(2, 20), labels=LM.index_fill(1, torch.tensor([3]), 40000)),
     ValueError, r"token labels must lie in \[0, 30522\) \(the vocabulary\) or be -100.*40000 to 40000"),
    ("negative token labels", lambda e: e.gpt(tokens(2, 20), labels=torch.full((2, 20), -5)), ValueError,
     r"token labels must lie in \[0, 30522\).*-5 to -5"),
    ("float token labels", lambda e: e.gpt(tokens(2, 20), labels=torch.zeros(2, 20)), TypeError,
     r"token labels must be an integer tensor"),
    ("token labels shape", lambda e: e.gpt(tokens(2, 20), labels=torch.zeros(2, 19, dtype=torch.long)), ValueError,
     r"token labels shape \(2, 19\) != input_ids \(2, 20\)"),
    ("token labels, no LM head", lambda e: e.bert(tokens(2, 20), labels=tokens(2, 20)), ValueError,
     r"token labels need an LM head; the encoder backbone has none"),
    ("NaN memory", lambda e: e.bert(tokens(2, 20), memory=mem(fill=NAN)), ValueError, r"NaN or infinite.*must be finite"),
    ("infinite memory", lambda e: e.bert(tokens(2, 20), memory=mem(fill=-INF)), ValueError, r"NaN or infinite"),
    ("memory shape", lambda e: e.bert(tokens(2, 8), memory=mem(batch=1)), ValueError,
     r"memory has shape \(1, 4, 64\); expected \(batch, n_mem, d_model\) = \(2, 4, 64\)"),
    ("memory dtype", lambda e: e.bert(tokens(2, 8), memory=mem(dtype=torch.float64)), ValueError,
     r"memory has dtype torch.float64; expected torch.float32"),
    ("memory not a tensor", lambda e: e.bert(tokens(2, 8), memory=[0.0]), TypeError,
     r"memory must be a tensor of shape \(batch, n_mem, d_model\) = \(2, 4, 64\), got list"),
    ("keep unknown", lambda e: e.bert(tokens(2, 20), keep=("attn",)), ConfigError,
     r"cannot keep \['attn'\].*allowed values: \['memory'"),
    # --- stream
    ("stream segment too long", lambda e: e.bert.stream([tokens(1, 17)]), ValueError,
     r"segment of 17 tokens is longer than segment_size=16"),
    ("stream empty segment", lambda e: e.bert.stream([tokens(1, 16), torch.zeros(1, 0, dtype=torch.long)]), ValueError,
     r"empty segment of shape \(1, 0\)"),
    ("stream of nothing", lambda e: e.bert.stream([]), ValueError, r"the stream yielded no segments"),
    ("stream ids past vocab", lambda e: e.bert.stream([tokens(2, 16), torch.full((2, 16), 40000)]), ValueError,
     r"token ids must lie in \[0, 30522\).*40000 to 40000"),
    ("stream negative ids", lambda e: e.bert.stream([torch.full((2, 16), -3)]), ValueError, r"\[0, 30522\).*-3 to -3"),
    ("stream Segment mask shape", lambda e: e.bert.stream([Segment(tokens(2, 16), torch.ones(2, 8, dtype=torch.bool))]),
     ValueError, r"attention_mask has shape \(2, 8\); expected its input_ids' \(2, 16\)"),
    ("stream left-padded Segment", lambda e: e.bert.stream([Segment(tokens(2, 16), LEFT_PADDED)]), ValueError,
     r"left-packed: padding only at the end of each row"),
    ("stream n_segments 0", lambda e: e.bert.stream([tokens(2, 16)], n_segments=0), ValueError,
     r"n_segments=0 must be an integer >= 1"),
    ("stream n_segments -2", lambda e: e.bert.stream([tokens(2, 16)], n_segments=-2), ValueError,
     r"n_segments=-2 must be an integer >= 1"),
    ("stream shorter than n_segments", lambda e: e.bert.stream(iter([tokens(2, 16)]), n_segments=2), ValueError,
     r"yielded 1 segments but n_segments=2"),
    ("stream batch changes", lambda e: e.bert.stream([tokens(2, 16), tokens(3, 16)]), ValueError,
     r"segment 1 has batch 3, earlier segments had 2"),
    ("stream of an int", lambda e: e.bert.stream(5), TypeError, r"segments must be an iterable .* got int"),
    ("stream of a whole input", lambda e: e.bert.stream(tokens(2, 48)), TypeError,
     r"got Tensor of shape \(2, 48\); a whole \(batch, length\) input goes to forward\(\)"),
    ("stream infinite memory", lambda e: e.bert.stream([tokens(2, 16)], memory=mem(fill=INF)), ValueError,
     r"NaN or infinite"),
    ("stream memory shape", lambda e: e.bert.stream([tokens(2, 16)], memory=mem(n_mem=2)), ValueError,
     r"memory has shape \(2, 2, 64\); expected .* = \(2, 4, 64\)"),
    ("stream float class labels", lambda e: e.bert.stream([tokens(2, 16)], labels=torch.tensor([0.0, 1.0])), TypeError,
     r"class labels must be an integer tensor"),
    # --- the memory cell, called directly
    ("cell NaN memory", lambda e: e.bert.cell(tokens(2, 16), None, mem(fill=NAN)), ValueError,
     r"NaN or infinite values; memory must be finite"),
    ("cell infinite memory", lambda e: e.bert.cell(tokens(2, 16), None, mem(fill=INF)), ValueError, r"NaN or infinite"),
    ("cell left-padded mask", lambda e: e.bert.cell(tokens(2, 16), LEFT_PADDED, mem()), ValueError,
     r"attention_mask must be left-packed"),
    ("cell ids past vocab", lambda e: e.bert.cell(torch.full((2, 16), 30522), None, mem()), ValueError,
     r"token ids must lie in \[0, 30522\)"),
    ("cell float mask", lambda e: e.bert.cell(tokens(2, 16), torch.full((2, 16), 0.5), mem()), ValueError,
     r"attention_mask must be bool or integer .*got torch.float32"),
    ("cell short mask", lambda e: e.bert.cell(tokens(2, 16), torch.ones(2, 5, dtype=torch.bool), mem()), ValueError,
     r"attention_mask has shape \(2, 5\); expected the segment's \(2, 16\)"),
    ("cell long mask", lambda e: e.bert.cell(tokens(2, 16), torch.ones(2, 20, dtype=torch.bool), mem()), ValueError,
     r"attention_mask has shape \(2, 20\); expected the segment's \(2, 16\)"),
    ("cell 1-d ids", lambda e: e.bert.cell(tokens(1, 16)[0], None, mem(1)), ValueError,
     r"input_ids must have shape \(batch, seg_len\); got \(16,\)"),
    ("cell float ids", lambda e: e.bert.cell(torch.rand(2, 16), None, mem()), TypeError,
     r"input_ids must be an int64 or int32 tensor; got torch.float32"),
    ("cell segment too long", lambda e: e.bert.cell(tokens(2, 17), None, mem()), ValueError,
     r"segment of 17 tokens is longer than segment_size=16"),
    ("cell memory batch", lambda e: e.bert.cell(tokens(2, 16), None, mem(3)), ValueError,
     r"memory has shape \(3, 4, 64\); expected .* = \(2, 4, 64\)"),
    # --- init_memory
    ("init_memory -1", lambda e: e.bert.init_memory(-1), ValueError, r"batch_size=-1 must be an integer >= 1"),
    ("init_memory 0", lambda e: e.bert.init_memory(0), ValueError, r"batch_size=0 must be an integer >= 1"),
    ("init_memory 2.0", lambda e: e.bert.init_memory(2.0), ValueError, r"batch_size=2.0 must be an integer >= 1"),
    ("init_memory True", lambda e: e.bert.init_memory(True), ValueError, r"batch_size=True must be an integer >= 1"),
    # --- RMTConfig and from_backbone
    ("segment_size 0", lambda e: RMTConfig(segment_size=0), ConfigError, r"segment_size=0 must be an integer >= 1"),
    ("segment_size -3", lambda e: RMTConfig(segment_size=-3), ConfigError, r"segment_size=-3 must be an integer >= 1"),
    ("segment_size past positions", lambda e: RecurrentWrapper.from_backbone("tiny-bert", RMTConfig(segment_size=600)),
     ValueError, r"needs 613 positions .* has 512 positions; use segment_size <= 499"),
    ("num_mem_tokens -1", lambda e: RMTConfig(num_mem_tokens=-1), ConfigError, r"num_mem_tokens=-1 must be an integer >= 0"),
    ("bptt_depth 0", lambda e: RMTConfig(bptt_depth=0), ConfigError, r"bptt_depth=0 must be -1 \(full BPTT\) or an integer >= 1"),
    ("config as a dict", lambda e: RecurrentWrapper.from_backbone("tiny-bert", {"segment_size": 16}), TypeError,
     r"config must be an RMTConfig, got dict"),
    ("unknown backbone name", lambda e: RecurrentWrapper.from_backbone("bert-huge", RMTConfig()), ValueError,
     r"unknown backbone 'bert-huge'.*available backbones: \['gpt2-minilm', 'minilm'"),
    ("backbone None", lambda e: RecurrentWrapper.from_backbone(None, RMTConfig()), TypeError,
     r"a backbone must be a ready name .* got NoneType"),
    ("tokenizer for a ready name", lambda e: RecurrentWrapper.from_backbone("tiny-bert", RMTConfig(), tokenizer="x"),
     ValueError, r"ready backbone 'tiny-bert' uses rmt_lab's own tokenizer"),
    ("missing tokenizer folder", lambda e: RecurrentWrapper.from_backbone(
        BY_NAME["gpt2"].build(), RMTConfig(segment_size=16), tokenizer=e.tmp / "nowhere"), ValueError,
     r"tokenizer folder '.*nowhere' is not a local folder holding a saved tokenizer"),
    ("tokenizer of the wrong type", lambda e: RecurrentWrapper.from_backbone(
        BY_NAME["gpt2"].build(), RMTConfig(segment_size=16), tokenizer=42), TypeError,
     r"a tokenizer must be a transformers tokenizer object or the local folder of one; got int"),
    ("special token key", lambda e: RecurrentWrapper.from_backbone(
        BY_NAME["bert"].build(), RMTConfig(segment_size=16), special_tokens={"bos": 1}), ValueError,
     r"unknown keys \['bos'\]; allowed keys: \['cls', 'sep', 'pad'\]"),
    ("special token past vocab", lambda e: RecurrentWrapper.from_backbone(
        BY_NAME["bert"].build(), RMTConfig(segment_size=16), special_tokens={"cls": 1, "sep": 400}), ValueError,
     r"special token sep=400 .* outside its vocabulary \[0, 300\)"),
    ("dropout 1.5", lambda e: RecurrentWrapper.from_backbone("tiny-bert", RMTConfig(), dropout=1.5), ValueError,
     r"dropout=1.5 must be in \[0, 1\)"),
    # --- from_pretrained
    ("no checkpoint folder", lambda e: RecurrentWrapper.from_pretrained(e.tmp / "none"), FileNotFoundError,
     r"rmt_config.json is missing: not an RMT checkpoint folder"),
    ("corrupt rmt_config.json", lambda e: RecurrentWrapper.from_pretrained(
        e.checkpoint(weights=None, edit=lambda meta: meta.clear())), ValueError, r"rmt_config.json is corrupt"),
    ("special token id past vocab", lambda e: RecurrentWrapper.from_pretrained(
        e.checkpoint(_set("special_tokens.cls", 99999))), ValueError,
     r"rmt_config.json: special token cls=99999 .* outside its vocabulary \[0, 30522\)"),
    ("future format_version", lambda e: RecurrentWrapper.from_pretrained(e.checkpoint(_set("format_version", 2))),
     ValueError, r"format_version 2; this rmt_lab reads 1"),
    ("bad saved RMT setting", lambda e: RecurrentWrapper.from_pretrained(e.checkpoint(_set("rmt.segment_size", 0))),
     ValueError, r"rmt_config.json: RMTConfig.segment_size=0 must be an integer >= 1"),
    ("unknown weights kind", lambda e: RecurrentWrapper.from_pretrained(e.checkpoint(_set("weights", "partial"))),
     ValueError, r"weights='partial'; allowed values: \['all', 'trained'\]"),
    ("truncated weights", lambda e: RecurrentWrapper.from_pretrained(
        e.checkpoint(weights=lambda p: p.read_bytes()[:1000])), ValueError,
     r"model.safetensors does not match the sha256 recorded"),
    ("truncated weights, no digest", lambda e: RecurrentWrapper.from_pretrained(
        e.checkpoint(edit=lambda meta: meta.pop("weights_sha256"), weights=lambda p: p.read_bytes()[:1000])),
     ValueError, r"model.safetensors cannot be loaded into backbone 'tiny-bert'"),
    # --- tasks
    ("unknown task", lambda e: TaskConfig(task="sorting"), ConfigError,
     r"unknown task 'sorting'; available tasks: \['detect_memorize', 'memorize', 'reasoning'\]"),
    ("task length 0", lambda e: TaskConfig(length=0), ConfigError, r"length=0 must be a positive integer"),
    ("task segment_size -1", lambda e: TaskConfig(segment_size=-1), ConfigError, r"segment_size=-1 must be a positive"),
    ("noise not a string", lambda e: TaskConfig(noise=5), ConfigError,
     r"noise=5 must be a non-empty string: 'pydoc' or a local file or folder"),
    ("task tokenizer of the wrong type", lambda e: TaskConfig(tokenizer=3), ConfigError,
     r"tokenizer=3 must be None \(MiniLM's WordPiece\), a local tokenizer folder, or a transformers tokenizer object"),
    ("task tokenizer folder missing", lambda e: TaskGenerator(TaskConfig(tokenizer=str(e.tmp / "nowhere"))),
     ValueError, r"tokenizer folder '.*nowhere' is not a local folder holding a saved tokenizer"),
    ("empty noise file", lambda e: TaskGenerator(TaskConfig(noise=e.noise_file(b""))), NoiseError,
     r"noise source .*noise.txt is empty"),
    ("non-UTF-8 noise file", lambda e: TaskGenerator(TaskConfig(noise=e.noise_file(b"caf\xe9 au lait."))), NoiseError,
     r"noise file .*noise.txt is not UTF-8 text \(invalid continuation byte at byte 3\)"),
    ("segment smaller than a fact", lambda e: TaskGenerator(TaskConfig(segment_size=6, length=10)), ConfigError,
     r"segment_size=6 is smaller than the facts of task 'memorize'"),
    # --- the recorder
    ("recorder on a Linear", lambda e: e.record(model=torch.nn.Linear(2, 2)), TypeError,
     r"Recorder needs an rmt_lab RecurrentWrapper, got Linear"),
    ("recorder layer 5", lambda e: e.record(config=TraceConfig(layers=(0, 5))), ValueError,
     r"TraceConfig.layers=\[0, 5\]: layer \[5\] does not exist; backbone 'tiny-bert' has 2 layers \(0..1\)"),
    ("recorder head 9", lambda e: e.record(config=TraceConfig(heads=(9,))), ValueError,
     r"head \[9\] does not exist; backbone 'tiny-bert' has 4 heads \(0..3\)"),
    ("recorder config as a dict", lambda e: e.record(config={"segments": "all"}), TypeError,
     r"Recorder config must be a TraceConfig, got dict"),
    ("recorder n_segments -1", lambda e: e.record(n_segments=-1), ValueError,
     r"Recorder n_segments=-1 must be an integer >= 1"),
    ("recorder fused", lambda e: e.record(fused="x"), ValueError,
     r"fused='x' is not allowed; allowed values: \['auto', 'lse', 'channel'\]"),
    ("recorder 'last' without length", lambda e: e.record(config=TraceConfig(segments="last")), ValueError,
     r"'last', which needs Recorder\(n_segments=...\)"),
    ("recorder facts for 3 of 2", lambda e: e.record(facts=[[1], [2], [3]]), ValueError,
     r"facts were given for 3 samples but the input has batch 2"),
    ("recorder without memory", lambda e: e.record(model=tiny(num_mem_tokens=0)), ValueError,
     r"no memory tokens \(RMTConfig.num_mem_tokens=0\)"),
    ("trace segments spec", lambda e: TraceConfig(segments="0,x"), ConfigError,
     r"cannot read 'x' in '0,x'; use a comma list of segment indices"),
]


@pytest.fixture(scope="module")
def models():
    return tiny(), tiny("tiny-gpt2", num_classes=0)


@pytest.mark.parametrize("call, error, pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_error(models, tmp_path, call, error, pattern):
    env = Env(*models, tmp_path)
    with pytest.raises(error, match=pattern), torch.no_grad():
        call(env)


def test_the_table_is_large_and_the_models_left_unrecorded(models):
    assert len(CASES) >= 50 and len({c[0] for c in CASES}) == len(CASES)
    for model in models:  # a refused recording undoes its changes
        assert model.cell.model.config._attn_implementation != "rmt_trace"
        assert not model.cell._forward_hooks and not model.cell._forward_pre_hooks
