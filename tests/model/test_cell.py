"""The memory cell: parity with the plain backbone, layouts and attention rules."""

import pytest
import torch

from rmt_lab.model import load_backbone
from tests.model.helpers import tiny, tokens


def test_encoder_without_memory_reproduces_backbone():
    model = tiny("tiny-bert", num_mem_tokens=0)
    ids = tokens(2, 16)
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, 11:] = False
    with torch.no_grad():
        out = model.cell(ids, mask, model.init_memory(2))
        sp = model.cell.special
        for b in range(2):
            n = int(mask[b].sum())
            full = torch.cat([torch.tensor([sp.cls]), ids[b, :n], torch.tensor([sp.sep])]).unsqueeze(0)
            ref = model.cell.model(input_ids=full).last_hidden_state[0]
            assert torch.allclose(out.hidden[b, :n], ref[1 : 1 + n], atol=1e-5)
            assert torch.allclose(out.summary[b], ref[0], atol=1e-5)


def test_decoder_without_memory_reproduces_backbone_logits():
    model = tiny("tiny-gpt2", num_mem_tokens=0)
    ids = tokens(2, 16)
    with torch.no_grad():
        out = model(ids, keep=["lm_logits"])
        ref = model.cell.model(input_ids=ids).logits
    assert torch.allclose(out.segments[0]["lm_logits"], ref, atol=1e-5)


@pytest.mark.parametrize("m", [0, 3])
@pytest.mark.parametrize("name", ["tiny-bert", "tiny-gpt2"])
def test_positions_follow_the_documented_layouts(name, m):
    cell = tiny(name, num_mem_tokens=m).cell
    lengths, seg_len = torch.tensor([5, 0, 8, 2]), 8  # a short last segment, padded rows and an empty one

    def labels(n):
        tokens = [f"t{i}" for i in range(n)]
        if cell.layout == "encoder":
            return ["[CLS]"] + ([f"[mem {i}]" for i in range(m)] + ["[SEP]"] if m else []) + tokens + ["[SEP]"]
        return [f"[read {i}]" for i in range(m)] + tokens + [f"[write {i}]" for i in range(m)]

    where = cell.positions(lengths, seg_len)
    n_positions = len(labels(seg_len))
    assert where.layout == cell.layout and where.n_mem == m and where.n_positions == n_positions
    assert where.valid.shape == (4, n_positions) and where.write.shape == (4, m)
    reads = [f"[mem {i}]" if cell.layout == "encoder" else f"[read {i}]" for i in range(m)]
    writes = [f"[mem {i}]" if cell.layout == "encoder" else f"[write {i}]" for i in range(m)]
    full = labels(seg_len)
    assert list(range(n_positions)[where.read]) == [full.index(x) for x in reads]
    assert where.content == slice(full.index("t0"), full.index("t0") + seg_len)
    for b, n in enumerate(lengths.tolist()):
        row = labels(n)
        row += ["[PAD]"] * (n_positions - len(row))
        assert row[where.content][:n] == [f"t{i}" for i in range(n)]
        assert where.write[b].tolist() == [row.index(x) for x in writes]
        assert where.valid[b].tolist() == [x != "[PAD]" for x in row]
        if cell.layout == "encoder":
            summary = row.index("[CLS]")
        else:  # the last token; for an empty row the position before the write slots
            summary = row.index(f"t{n - 1}") if n else max(m - 1, 0)
        assert int(where.summary[b]) == summary


def test_decoder_content_never_sees_later_content():
    model = tiny("tiny-gpt2")
    ids = tokens(1, 16)
    changed = ids.clone()
    changed[0, 9] += 7
    with torch.no_grad():
        a = model(ids, keep=["lm_logits"]).segments[0]["lm_logits"]
        b = model(changed, keep=["lm_logits"]).segments[0]["lm_logits"]
    assert torch.allclose(a[0, :9], b[0, :9], atol=1e-6)
    assert not torch.allclose(a[0, 9:], b[0, 9:], atol=1e-4)


def test_decoder_read_memory_sees_no_content_and_write_memory_sees_all():
    model = tiny("tiny-gpt2")
    cell = model.cell
    ids = tokens(1, 16)
    changed = ids.clone()
    changed[0, 15] += 3  # the last content token
    mem = model.init_memory(1)
    mask = torch.ones_like(ids, dtype=torch.bool)
    with torch.no_grad():
        a, b = cell(ids, mask, mem), cell(changed, mask, mem)
        hidden = {}
        for key, x in (("a", ids), ("b", changed)):
            embeds, full_mask, _, _ = cell._decoder_inputs(cell.embeddings(x), mask.sum(1), mem)
            hidden[key] = cell.model.base_model(inputs_embeds=embeds, attention_mask=full_mask).last_hidden_state
    m = cell.config.num_mem_tokens
    assert torch.equal(hidden["a"][:, :m], hidden["b"][:, :m])  # read slots are blind to the segment
    assert not torch.allclose(a.memory, b.memory, atol=1e-4)  # every write slot sees the last token


def test_encoder_memory_is_read_and_written_at_same_positions():
    model = tiny("tiny-bert")
    ids = tokens(1, 16)
    mask = torch.ones_like(ids, dtype=torch.bool)
    mem = torch.randn_like(model.init_memory(1))
    cell = model.cell
    with torch.no_grad():
        out = cell(ids, mask, mem)
        embeds, full_mask, write_pos, _ = cell._encoder_inputs(cell.embeddings(ids), mask.sum(1), mem)
        hidden = cell.model(inputs_embeds=embeds, attention_mask=full_mask).last_hidden_state
    m = cell.config.num_mem_tokens
    assert torch.equal(embeds[:, 1 : 1 + m], mem)  # read: memory enters at positions 1..M
    assert torch.equal(write_pos[0], torch.arange(1, 1 + m))
    assert torch.allclose(out.memory, hidden[:, 1 : 1 + m])  # write: the same positions' final states
    sp = cell.special
    emb = cell.embeddings.weight
    assert torch.equal(embeds[0, 0], emb[sp.cls]) and torch.equal(embeds[0, 1 + m], emb[sp.sep])
    assert torch.equal(embeds[0, 2 + m + 16], emb[sp.sep])


def test_inactive_sample_keeps_its_memory():
    model = tiny("tiny-bert")
    ids = tokens(2, 16)
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1] = False
    mem = torch.randn_like(model.init_memory(2))
    with torch.no_grad():
        out = model.cell(ids, mask, mem)
    assert torch.equal(out.memory[1], mem[1])
    assert not torch.allclose(out.memory[0], mem[0])
    assert out.active.tolist() == [True, False]


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-gpt2"])
def test_padding_does_not_change_a_sample(name):
    model = tiny(name)
    ids = tokens(1, 40)
    batch = torch.cat([ids, tokens(1, 40, seed=1)])
    mask = torch.ones_like(batch, dtype=torch.bool)
    mask[1, 23:] = False
    with torch.no_grad():
        alone = model(tokens(1, 40, seed=1)[:, :23])
        both = model(batch, mask)
        first = model(ids)
    assert torch.allclose(both.memory[1], alone.memory[0], atol=1e-5)
    assert torch.allclose(both.logits[1], alone.logits[0], atol=1e-5)
    assert torch.allclose(both.logits[0], first.logits[0], atol=1e-5)


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-gpt2"])
def test_full_segment_runs_without_a_mask_and_matches_the_masked_backbone(name, monkeypatch):
    """A segment where every position is valid goes to the backbone with no mask (faster sdpa);
    its outputs equal those of the same inputs under an explicit all-ones mask."""
    model = tiny(name)
    ids = tokens(2, 16)
    body = model.cell.adapter.body(model.cell.model)
    seen, inputs = [], {}
    original = type(body).forward

    def spy(module, *args, **kwargs):
        seen.append(kwargs.get("attention_mask"))
        inputs.update(kwargs)
        return original(module, *args, **kwargs)

    monkeypatch.setattr(type(body), "forward", spy)
    with torch.no_grad():
        out = model.cell(ids, torch.ones_like(ids, dtype=torch.bool), model.init_memory(2))
        monkeypatch.undo()
        embeds = inputs["inputs_embeds"]
        ref = body(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long))
    assert seen == [None]
    p = model.cell.prefix_len
    torch.testing.assert_close(out.hidden, ref.last_hidden_state[:, p:p + 16], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-gpt2"])
def test_no_mask_means_every_token_valid(name):
    """`attention_mask=None` (a segment known to be full, nothing read on the device) equals an all-ones mask."""
    model = tiny(name)
    ids, memory = tokens(2, 16), model.init_memory(2)
    with torch.no_grad():
        a = model.cell(ids, None, memory)
        b = model.cell(ids, torch.ones_like(ids, dtype=torch.bool), memory)
    for field in ("memory", "summary", "hidden", "active"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field


def test_segment_too_long_for_backbone_names_the_numbers():
    from rmt_lab.model import MemoryCell, RMTConfig

    with pytest.raises(ValueError, match=r"needs 515 positions.*512 positions.*segment_size <= 499"):
        MemoryCell(load_backbone("tiny-bert"), RMTConfig(num_mem_tokens=10, segment_size=502))


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-gpt2"])
def test_memory_gate_starts_as_the_plain_update_and_closed_keeps_memory(name):
    from rmt_lab.model.cell import GATE_OPEN

    plain, gated = tiny(name, num_mem_tokens=3), tiny(name, num_mem_tokens=3, memory_gate=True)
    gated.load_state_dict(plain.state_dict(), strict=False)  # the same weights, the gate as initialized
    ids, memory = tokens(2, 8), torch.randn(2, 3, plain.cell.d_model)
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, 5:] = False  # a padded row takes the gathering path
    with torch.no_grad():
        for m in (None, mask):
            new, opened = plain.cell(ids, m, memory).memory, gated.cell(ids, m, memory).memory
            g = torch.sigmoid(torch.tensor(GATE_OPEN))
            assert torch.allclose(opened, memory + g * (new - memory), atol=1e-6)
            gated.cell.memory_gate.bias.fill_(-1e4)  # closed: the segment leaves memory as it was
            assert torch.equal(gated.cell(ids, m, memory).memory, memory)
            gated.cell.memory_gate.bias.fill_(GATE_OPEN)
