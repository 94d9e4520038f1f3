"""The recurrent wrapper: memory across segments, BPTT truncation, streaming, persistence, errors."""

import json

import pytest
import torch

from rmt_lab.config import ConfigError
from rmt_lab.model import RecurrentWrapper, RMTConfig, Segment
from tests.model.helpers import tiny, tokens


def _grad_of_first_segment(bptt_depth, name="tiny-bert"):
    torch.manual_seed(0)  # the same weights for every depth
    model = tiny(name, bptt_depth=bptt_depth, num_classes=6 if name == "tiny-bert" else 0)
    ids = tokens(2, 48)  # 3 segments of 16
    captured = []

    def hook(module, args, output):
        if not captured:
            output.retain_grad()
            captured.append(output)

    handle = model.cell.embeddings.register_forward_hook(hook)
    try:
        if name == "tiny-bert":
            out = model(ids, labels=torch.tensor([1, 4]))
            out.loss.backward()
        else:
            labels = torch.full_like(ids, -100)
            labels[:, -4:] = ids[:, -4:]  # loss only inside the last segment
            model(ids, labels=labels).loss.backward()
    finally:
        handle.remove()
    return captured[0].grad


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-gpt2"])
def test_full_bptt_reaches_first_segment_and_k2_1_cuts_it(name):
    full = _grad_of_first_segment(-1, name)
    assert full is not None and full.abs().sum() > 0
    truncated = _grad_of_first_segment(1, name)
    assert truncated is None or torch.count_nonzero(truncated) == 0
    two = _grad_of_first_segment(2, name)  # 3 segments, k2=2: the first one is still cut off
    assert two is None or torch.count_nonzero(two) == 0
    three = _grad_of_first_segment(3, name)  # k2 = number of segments: same as full BPTT
    assert torch.allclose(three, full)


def _graph_size(tensor):
    seen, todo = set(), [tensor.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        todo.extend(next_fn for next_fn, _ in node.next_functions)
    return len(seen)


def test_truncated_graph_does_not_grow_with_the_number_of_segments():
    # The summary carried across segments must be cut with the memory, or every segment's graph
    # (and its activations) stays alive and k2 saves no memory.
    torch.manual_seed(0)
    model = tiny(bptt_depth=2, num_classes=6)
    sizes = [_graph_size(model(tokens(2, 16 * n), labels=torch.tensor([1, 4])).loss) for n in (3, 6)]
    assert sizes[0] == sizes[1]
    full = tiny(bptt_depth=-1, num_classes=6)
    assert _graph_size(full(tokens(2, 96), labels=torch.tensor([1, 4])).loss) > sizes[1]


def test_memory_changes_the_output_and_ablation_removes_it():
    model = tiny()
    last = tokens(1, 16, seed=5)
    a = torch.cat([tokens(1, 16, seed=1), last], 1)
    b = torch.cat([tokens(1, 16, seed=2), last], 1)
    with torch.no_grad():
        assert (model(a).logits - model(b).logits).abs().max() > 1e-5
        ablated_a = model(a, carry_memory=False).logits
        ablated_b = model(b, carry_memory=False).logits
        alone = model(last).logits
    assert torch.equal(ablated_a, ablated_b)
    assert torch.allclose(ablated_a, alone, atol=1e-6)


def test_stream_equals_forward_and_keeps_only_what_is_asked():
    model = tiny()
    ids = tokens(2, 80)
    with torch.no_grad():
        whole = model(ids)
        streamed = model.stream(ids.split(16, dim=1))
        kept = model(ids, keep=["memory", "summary"])
    assert whole.segments == [] and whole.n_segments == 5
    assert torch.equal(whole.memory, streamed.memory) and torch.equal(whole.logits, streamed.logits)
    assert len(kept.segments) == 5 and set(kept.segments[0]) == {"memory", "summary", "attention_mask"}
    assert torch.equal(kept.segments[-1]["memory"], whole.memory)


def test_stream_from_a_generator_of_one_dimensional_segments():
    model = tiny()
    gen = (tokens(1, 16, seed=s)[0] for s in range(50))
    with torch.no_grad():
        out = model.stream(gen)
    assert out.n_segments == 50 and out.memory.shape == (1, 4, 64)


def test_given_memory_continues_a_run():
    model = tiny()
    ids = tokens(1, 64)
    with torch.no_grad():
        whole = model(ids)
        first = model(ids[:, :32])
        rest = model(ids[:, 32:], memory=first.memory)
    assert torch.allclose(whole.memory, rest.memory, atol=1e-6)


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-gpt2"])
def test_save_load_round_trip_is_exact(tmp_path, name):
    model = tiny(name)
    ids = tokens(2, 40)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = RecurrentWrapper.from_pretrained(tmp_path / "ckpt").eval()
    assert loaded.config == model.config
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)


def test_corrupt_or_mismatched_checkpoint_fails_clearly(tmp_path):
    tiny().save_pretrained(tmp_path / "a")
    (tmp_path / "a" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="does not match the sha256"):
        RecurrentWrapper.from_pretrained(tmp_path / "a")
    meta = json.loads((tmp_path / "a" / "rmt_config.json").read_text())
    del meta["weights_sha256"]  # a checkpoint written before digests were kept
    (tmp_path / "a" / "rmt_config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="cannot be loaded"):
        RecurrentWrapper.from_pretrained(tmp_path / "a")
    tiny().save_pretrained(tmp_path / "b")
    meta = json.loads((tmp_path / "b" / "rmt_config.json").read_text())
    meta["rmt"]["num_mem_tokens"] = 5
    (tmp_path / "b" / "rmt_config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="(?s)cannot be loaded.*size mismatch for cell.memory"):
        RecurrentWrapper.from_pretrained(tmp_path / "b")
    (tmp_path / "b" / "rmt_config.json").write_text("{broken")
    with pytest.raises(ValueError, match="corrupt"):
        RecurrentWrapper.from_pretrained(tmp_path / "b")
    with pytest.raises(FileNotFoundError, match="rmt_config.json is missing"):
        RecurrentWrapper.from_pretrained(tmp_path / "nothing")


def test_bad_input_is_named():
    model = tiny()
    with pytest.raises(ValueError, match="unknown backbone 'bert-huge'.*tiny-bert"):
        RecurrentWrapper.from_backbone("bert-huge", RMTConfig())
    for bad, pattern in [
        (dict(segment_size=0), "segment_size=0"),
        (dict(num_mem_tokens=-1), "num_mem_tokens=-1"),
        (dict(bptt_depth=0), "bptt_depth=0"),
        (dict(align="center"), r"allowed values: \['left', 'right'\]"),
        (dict(keep=("attn",)), "allowed values"),
    ]:
        with pytest.raises(ConfigError, match=pattern):
            RMTConfig(**bad)
    with pytest.raises(ValueError, match="empty input"):
        model(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match=r"empty input: sample\(s\) \[1\]"):
        model(tokens(2, 8), torch.tensor([[1] * 8, [0] * 8]))
    with pytest.raises(TypeError, match="integer tensor"):
        model(torch.rand(1, 8))
    with pytest.raises(ValueError, match=r"memory has shape \(1, 4, 64\); expected .* \(2, 4, 64\)"):
        model(tokens(2, 8), memory=torch.zeros(1, 4, 64))
    with pytest.raises(ValueError, match="longer than segment_size=16"):
        model.stream([tokens(1, 17)])
    with pytest.raises(ValueError, match="no segments"):
        model.stream([])
    with pytest.raises(ValueError, match="layout"):
        RecurrentWrapper.from_backbone("tiny-gpt2", RMTConfig(layout="encoder"))


def test_an_encoder_decoder_architecture_is_refused_with_the_reason():
    from transformers import T5Config

    from rmt_lab.model import adapter_for

    with pytest.raises(ValueError, match=r"'t5' is an encoder-decoder architecture.*encoder-only or a decoder-only"):
        adapter_for(T5Config())


def test_roberta_family_runs():
    from transformers import RobertaConfig

    from rmt_lab.model import MemoryCell
    from rmt_lab.model.backbones import backbone_from_config

    config = RobertaConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    model = RecurrentWrapper(MemoryCell(backbone_from_config("roberta", config), RMTConfig(segment_size=497))).eval()
    with pytest.raises(ValueError, match="has 510 positions"):
        MemoryCell(backbone_from_config("roberta", config), RMTConfig(segment_size=498))
    with torch.no_grad():
        out = model(tokens(1, 1000))
    assert out.n_segments == 3


def test_truncated_stream_with_gradients_needs_a_length():
    model = tiny(bptt_depth=1).train()
    with pytest.raises(ValueError, match="needs n_segments"):
        model.stream(iter([tokens(1, 16)]))


def test_segment_checkpointing_gives_the_same_gradients():
    model = tiny(dropout=0.0).train()  # no dropout: both passes must see identical activations
    ids, labels = tokens(2, 48), torch.tensor([0, 3])
    model(ids, labels=labels).loss.backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.checkpoint_segments = True
    model(ids, labels=labels).loss.backward()
    for a, p in zip(plain, model.parameters(), strict=True):
        assert torch.allclose(a, p.grad, atol=1e-6)


def test_dropout_override_reaches_the_backbone():
    model = RecurrentWrapper.from_backbone("tiny-bert", RMTConfig(segment_size=16), dropout=0.0)
    assert model.cell.model.config.hidden_dropout_prob == 0.0
    with pytest.raises(ValueError, match=r"dropout=1.5 must be in \[0, 1\)"):
        RecurrentWrapper.from_backbone("tiny-bert", RMTConfig(segment_size=16), dropout=1.5)


def test_stream_hands_known_full_segments_to_the_cell_without_a_mask():
    """Raw tensors and full segments cut by `forward` reach the cell with mask None (no device read);
    a shorter last segment with its mask; the outputs equal a stream of explicit all-ones Segments."""
    model = tiny()
    masks = []
    model.cell.register_forward_pre_hook(lambda cell, args: masks.append(args[1]))
    ids = tokens(2, 40)  # 16 + 16 + 8
    with torch.no_grad():
        out = model(ids)
        assert [m is None for m in masks] == [True, True, False]
        masks.clear()
        raw = model.stream(ids[:, i:i + 16] for i in range(0, 40, 16))
        assert masks[2] is None  # a raw tensor is full however long
        ones = model.stream(Segment(ids[:, i:i + 16], torch.ones_like(ids[:, i:i + 16], dtype=torch.bool))
                            for i in range(0, 40, 16))
    assert torch.equal(raw.memory, ones.memory)
    torch.testing.assert_close(out.memory, raw.memory, atol=1e-5, rtol=1e-5)  # its last segment has padding


def test_a_segment_from_elsewhere_must_be_left_packed():
    model = tiny()
    ids = tokens(1, 8)
    holes = torch.tensor([[True, False, True, True, False, False, False, False]])
    with pytest.raises(ValueError, match="left-packed: padding only at the end of each row"):
        model.stream([Segment(ids, holes)])


def test_a_checkpoint_with_an_altered_weights_file_is_refused(tmp_path):
    model = tiny()
    model.save_pretrained(tmp_path)
    meta = json.loads((tmp_path / "rmt_config.json").read_text())
    assert len(meta["weights_sha256"]) == 64
    weights = tmp_path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0x40  # one bit inside a tensor: safetensors alone would read it as another number
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match the sha256"):
        RecurrentWrapper.from_pretrained(tmp_path)


def test_a_loaded_model_is_in_eval_mode(tmp_path):
    tiny(dropout=0.3).train().save_pretrained(tmp_path)
    loaded = RecurrentWrapper.from_pretrained(tmp_path)
    assert not loaded.training and not any(m.training for m in loaded.modules())

