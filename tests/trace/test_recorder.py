"""The recorder: maps are probability rows, summaries match full maps, outputs do not move, hooks go away."""

import pytest
import torch

from rmt_lab.model import kernels
from rmt_lab.trace import (
    METRICS, Recorder, TraceConfig, build_index, record, summaries_from_maps, where_written,
)
from rmt_lab.trace import attention
from tests.trace.helpers import FACTS, force_attention_onto, padded_batch, tiny, tokens

MODELS = ["tiny-bert", "tiny-gpt2"]


def _record(model, fused="auto", **config):
    ids, mask = padded_batch()
    config.setdefault("segments", "all")
    if fused == "auto":
        return record(model, ids, TraceConfig(**config), facts=FACTS, attention_mask=mask)
    with torch.no_grad(), Recorder(model, TraceConfig(**config), facts=FACTS, fused=fused) as rec:
        out = model(ids, attention_mask=mask)
    return out, rec.trace


@pytest.mark.parametrize("name", MODELS)
def test_rows_sum_to_one_and_masked_positions_get_zero(name):
    model = tiny(name)
    _, trace = _record(model)
    m = model.cell.config.num_mem_tokens
    assert trace.map_segments == [0, 1, 2]
    for s in trace.map_segments:
        info = trace.segment_info(s)
        for layer in (0, 1):
            maps = trace.pattern(s, layer)  # (batch, heads, L, L)
            assert maps.shape[:2] == (2, 4) and maps.shape[2] == maps.shape[3] == info["n_positions"]
            assert torch.allclose(maps.sum(-1), torch.ones(maps.shape[:3]), atol=1e-5)
            for b, n in enumerate(info["lengths"]):
                if model.cell.layout == "encoder":
                    end = model.cell.prefix_len + n  # closing [SEP]
                    assert torch.all(maps[b, :, :, end + 1 :] == 0)
                else:
                    valid = 2 * m + n
                    assert torch.all(maps[b, :, :, valid:] == 0)
                    assert torch.all(maps[b].triu(1) == 0)  # causal: GPT-2's mask survived the switch


@pytest.mark.parametrize("fused", ["lse", "channel"])
@pytest.mark.parametrize("name", MODELS)
def test_summaries_on_the_fly_equal_summaries_from_full_maps(name, fused):
    model = tiny(name)
    _, trace = _record(model, fused=fused, top_k=3)
    df = trace.summaries
    written = trace.written
    facts = torch.tensor([FACTS[0], FACTS[1] + [-1, -1]])
    checked = 0
    for s in trace.map_segments:
        info = trace.segment_info(s)
        mask = torch.arange(16)[None] < torch.tensor(info["lengths"])[:, None]
        lay = build_index(model.cell.positions(mask.sum(1), 16), 16, torch.tensor(info["starts"]), facts)
        for layer in (0, 1):
            stats, values, positions = summaries_from_maps(trace.pattern(s, layer), lay, top_k=3)
            for b in range(2):
                if not lay.active[b]:
                    assert df[(df.segment == s) & (df["sample"] == b)].empty
                    continue
                rows = df[(df.segment == s) & (df.layer == layer) & (df["sample"] == b)]
                for k, metric in enumerate(METRICS):
                    got = torch.tensor(rows[rows.metric == metric].sort_values("head")["value"].to_numpy())
                    torch.testing.assert_close(got, stats[b, :, k], atol=2e-5, rtol=0)
                    checked += 1
                top = written[(written.segment == s) & (written.layer == layer) & (written["sample"] == b)]
                for slot in range(4):
                    mine = top[top.slot == slot].sort_values("rank")
                    ref_pos = positions[b, slot][values[b, slot] > 0] - model.cell.prefix_len
                    assert mine["offset"].tolist() == ref_pos[: len(mine)].tolist()
                    torch.testing.assert_close(torch.tensor(mine["mass"].to_numpy()),
                                               values[b, slot][: len(mine)], atol=2e-5, rtol=0)
    assert checked == 70  # 5 active (segment, sample) pairs x 2 layers x 7 metrics
    precision = df[df.metric == "write_precision"]
    assert precision["value"].between(0, 1).all()


@pytest.mark.parametrize("fused", ["auto", "channel"])
@pytest.mark.parametrize("name", MODELS)
def test_recording_does_not_change_outputs(name, fused):
    model = tiny(name)
    ids, mask = padded_batch()
    with torch.no_grad():
        ref = model(ids, attention_mask=mask, keep=["memory"])
    out, _ = _record(model, fused=fused)
    with torch.no_grad(), Recorder(model, TraceConfig(segments="all"), fused=fused):
        kept = model(ids, attention_mask=mask, keep=["memory"])
    if fused == "auto":  # the CPU flash kernel called directly: the very same numbers
        assert torch.equal(out.logits, ref.logits) and torch.equal(out.memory, ref.memory)
        assert all(torch.equal(a["memory"], b["memory"]) for a, b in zip(kept.segments, ref.segments))
    else:
        torch.testing.assert_close(out.logits, ref.logits, atol=1e-6, rtol=0)
        torch.testing.assert_close(out.memory, ref.memory, atol=1e-6, rtol=0)


def _assert_detached(model):
    cell = model.cell
    assert not cell._forward_hooks and not cell._forward_pre_hooks
    assert cell.model.config._attn_implementation == kernels.TRAINING_IMPL  # the model's own: sdpa in inference
    assert attention.RECORDING.get() is None


def test_hooks_and_attention_switch_are_undone_even_on_error(tmp_path):
    model = tiny()
    with pytest.raises(RuntimeError, match="boom"):
        with Recorder(model, TraceConfig(segments="all"), out=tmp_path / "t"):
            model(tokens(1, 20))
            raise RuntimeError("boom")
    _assert_detached(model)
    assert not (tmp_path / "t" / "trace.json").exists()  # an interrupted recording is not a trace
    with pytest.raises(ValueError, match="batch"):  # an error raised by the recorder itself, mid-run
        with Recorder(model, facts=[[1], [2], [3]]):
            model(tokens(2, 20))
    _assert_detached(model)
    _record(model)
    _assert_detached(model)


def test_recording_off_costs_nothing():
    """Outside a recorder the model runs plain sdpa with no hooks; the registered function stays inert."""
    model = tiny()
    _record(model)
    _assert_detached(model)
    model.cell.model.set_attn_implementation(attention.TRACE_IMPL)  # chosen by hand, no recorder: plain sdpa
    try:
        with torch.no_grad():
            out = model(tokens(1, 20))
    finally:
        model.cell.model.set_attn_implementation(kernels.TRAINING_IMPL)
    with torch.no_grad():
        assert torch.equal(out.logits, model(tokens(1, 20)).logits)


def test_forced_attention_reports_the_written_token():
    """Layer 0 of this backbone attends only to token T: the recorder must report T as what memory writes."""
    model = tiny()
    target = 7592
    force_attention_onto(model, target)
    ids = tokens(1, 48)
    ids[0, 21] = target  # segment 1, offset 5
    _, trace = record(model, ids, TraceConfig(top_k=3), facts=[[21]])
    written = trace.written
    top = written[(written.segment == 1) & (written.layer == 0) & (written["rank"] == 0)]
    assert len(top) == 4  # every memory slot
    assert (top.token_id == target).all() and (top.position == 21).all() and top.is_fact.all()
    assert (top.mass > 0.99).all()
    s = trace.summaries
    layer0 = s[(s.segment == 1) & (s.layer == 0)]
    assert (layer0[layer0.metric == "write_precision"]["value"] > 0.99).all()
    assert (layer0[layer0.metric == "write_fact"]["value"] > 0.99).all()
    assert (layer0[layer0.metric == "read_content"]["value"] < 1e-3).all()  # content reads T, not memory
    other = written[(written.segment != 1) & (written.layer == 0) & (written["rank"] == 0)]
    assert (other.token_id != target).all()


def test_stream_with_task_samples_and_fact_selection(tmp_path):
    from rmt_lab.tasks import TaskConfig, TaskGenerator

    gen = TaskGenerator(TaskConfig(task="detect_memorize", segment_size=16, length=6))
    samples = [gen.sample("test", i) for i in range(3)]
    model = tiny()
    out, trace = record(model, samples, TraceConfig(segments="facts,last"), out=tmp_path / "trace")
    fact_segments = {seg for s in samples for span in s.facts for seg in span.segments}
    assert trace.map_segments == sorted(fact_segments | {5})
    s = trace.summaries
    has_fact = s.groupby(["segment", "sample"]).has_fact.first()
    for i, sample in enumerate(samples):
        for seg in range(6):
            assert has_fact[(seg, i)] == (seg in sample.facts[0].segments)
    assert out.n_segments == trace.n_segments == 6
    events = where_written(s)
    assert events.fact_segments.tolist() == [list(sample.facts[0].segments[:1]) for sample in samples]
    assert all(w in f for w, f in zip(events.written_segment, events.fact_segments))  # write_fact is 0 elsewhere


def test_memory_dynamics():
    model = tiny()
    ids = tokens(2, 48)
    with torch.no_grad():
        ref = model(ids, keep=["memory"])
    _, trace = record(model, ids, TraceConfig(keep_memory=True))
    s = trace.summaries
    states = trace.memory_states()  # (segments, batch, M, d)
    torch.testing.assert_close(states, torch.stack([r["memory"] for r in ref.segments]))
    norm = s[(s.metric == "mem_norm") & (s.slot >= 0)].sort_values(["segment", "sample", "slot"])["value"]
    torch.testing.assert_close(torch.tensor(norm.to_numpy()), states.norm(dim=-1).flatten(), rtol=1e-5, atol=1e-5)
    prev = torch.cat([model.init_memory(2)[None].detach(), states[:-1]])
    delta = s[(s.metric == "mem_delta_l2") & (s.slot >= 0)].sort_values(["segment", "sample", "slot"])["value"]
    torch.testing.assert_close(torch.tensor(delta.to_numpy()), (states - prev).norm(dim=-1).flatten(),
                               rtol=1e-5, atol=1e-5)
    rank = s[s.metric == "mem_eff_rank"]["value"]
    assert rank.between(1, 4).all()


@pytest.mark.parametrize("name", MODELS)
def test_user_hooks_see_the_tensors_the_trace_holds_by_their_names(name):
    model = tiny(name)
    seen = {}
    hooks = {"seg.*.layer.1.attn.pattern": lambda t, n: seen.setdefault(n, t.clone()),
             "memory.state": lambda t, n: seen.setdefault(n, t.clone())}
    ids, mask = padded_batch()
    out, trace = record(model, ids, TraceConfig(segments="1"), facts=FACTS, attention_mask=mask, hooks=hooks)
    # maps: only those the config keeps and the glob names; memory: every segment, though the trace keeps none
    assert sorted(seen) == ["seg.0.memory.state", "seg.1.layer.1.attn.pattern", "seg.1.memory.state",
                            "seg.2.memory.state"]
    assert torch.equal(seen["seg.1.layer.1.attn.pattern"], trace.pattern(1, 1))
    assert torch.allclose(seen["seg.2.memory.state"], out.memory.float())


def test_bad_hooks_are_refused():
    model = tiny()
    with pytest.raises(ValueError, match="hook pattern 'attn.weights' names no trace tensor.*attn.pattern"):
        Recorder(model, hooks={"attn.weights": print})
    with pytest.raises(TypeError, match="hook for 'memory.state' must be callable"):
        Recorder(model, hooks={"memory.state": 3})
    with pytest.raises(TypeError, match="must map a kind or name glob to a function"):
        Recorder(model, hooks=[("memory.state", print)])
