"""Trace folders, names, selections, budgets and clear errors for bad input."""

import json

import pytest
import torch

from rmt_lab.config import ConfigError
from rmt_lab.trace import (
    Recorder, SegmentSelection, Trace, TraceBudgetError, TraceConfig, TraceMismatchError, hook_name, parse_name, record,
)
from rmt_lab.trace import recorder as recorder_module
from tests.trace.helpers import tiny, tokens


def test_names_come_from_one_helper_and_parse_back():
    assert hook_name(3, 2) == "seg.3.layer.2.attn.pattern"
    assert hook_name(7, kind="memory.state") == "seg.7.memory.state"
    assert parse_name("seg.3.layer.2.attn.pattern") == (3, 2, "attn.pattern")
    assert parse_name(hook_name(12, kind="memory.state")) == (12, None, "memory.state")
    with pytest.raises(ValueError, match="needs layer"):
        hook_name(0)  # noqa: the pattern kind is per layer
    with pytest.raises(ValueError, match="unknown trace tensor kind"):
        hook_name(0, 0, "attn.scores")
    with pytest.raises(ValueError, match="not a trace tensor name"):
        parse_name("blocks.0.attn.hook_pattern")


def test_segment_selection():
    sel = SegmentSelection.parse("0,2-4,every:10,facts,last")
    wanted = [s for s in range(25) if sel.wants(s, 25, has_fact=(s == 7))]
    assert wanted == [0, 2, 3, 4, 7, 10, 20, 24]
    assert SegmentSelection.parse("none").is_empty and SegmentSelection.parse("").is_empty
    assert SegmentSelection.parse("1,3-4").count(None) == 3
    assert SegmentSelection.parse("every:2").count(5) == 3 and SegmentSelection.parse("every:2").count(None) is None
    for bad in ("x", "3-1", "every:0", "-2", "1,,every:a"):
        with pytest.raises(ConfigError, match="TraceConfig.segments"):
            TraceConfig(segments=bad)


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="unknown TraceConfig key"):
        TraceConfig.from_dict({"segment": "all"})
    with pytest.raises(ConfigError, match="map_dtype"):
        TraceConfig(map_dtype="int8")
    with pytest.raises(ConfigError, match="budget_mib"):
        TraceConfig(budget_mib=0)
    with pytest.raises(ConfigError, match="layers"):
        TraceConfig(layers=())


def test_nonexistent_layer_or_head_is_refused_with_the_valid_range():
    model = tiny()
    with pytest.raises(ValueError, match=r"layer \[2\] does not exist; backbone 'tiny-bert' has 2 layers \(0..1\)"):
        Recorder(model, TraceConfig(layers=(0, 2))).__enter__()
    with pytest.raises(ValueError, match=r"head \[4, 9\] does not exist.*4 heads \(0..3\)"):
        with Recorder(model, TraceConfig(heads=(1, 4, 9))):
            pass
    assert not model.cell._forward_hooks
    with pytest.raises(ValueError, match="needs Recorder\\(n_segments"):
        with Recorder(model, TraceConfig(segments="last")):
            pass
    with pytest.raises(ValueError, match="needs Recorder\\(facts"):
        with Recorder(model, TraceConfig(segments="facts")):
            pass


def test_folder_trace_is_lazy_labelled_and_never_pickled(tmp_path):
    model = tiny()
    ids = tokens(2, 40)
    folder = tmp_path / "trace"
    out, trace = record(model, ids, TraceConfig(segments="0,2", layers=(1,), heads=(0, 3), keep_memory=True),
                        out=folder)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert files == ["maps/seg-00000.layer-001.safetensors", "maps/seg-00002.layer-001.safetensors",
                     "memory/part-00000.safetensors", "summaries.parquet", "trace.json", "written.parquet"]
    index = json.loads((folder / "trace.json").read_text())
    assert index["model"]["backbone"] == "tiny-bert" and index["n_segments"] == 3
    loaded = Trace.load(folder, model=model)
    assert loaded.map_segments == [0, 2]
    assert hook_name(2, 1) in loaded.names() and hook_name(0, 0) not in loaded
    maps = loaded.pattern(2, 1)
    assert maps.shape == (2, 2, 23, 23)  # heads 0 and 3; [CLS] 4 x [mem] [SEP] 16 tokens [SEP]
    assert loaded.segment_info(2)["lengths"] == [8, 8] and loaded.labels(2)[6 + 8 :] == ["[SEP]"] + ["[PAD]"] * 8
    labels = loaded.labels(0, 1)
    assert labels[:7] == ["[CLS]", "[mem 0]", "[mem 1]", "[mem 2]", "[mem 3]", "[SEP]", labels[6]]
    assert labels[-1] == "[SEP]" and len(labels) == 6 + 16 + 1
    from rmt_lab.assets import load_tokenizer

    assert labels[6:-1] == load_tokenizer().convert_ids_to_tokens(ids[1, :16].tolist())
    assert loaded.memory_states().shape == (3, 2, 4, 64)
    torch.testing.assert_close(loaded.memory_states()[-1], out.memory)
    with pytest.raises(KeyError, match="kept no map in segment 2; kept layers: \\[1\\]"):
        loaded.pattern(2, 0)
    with pytest.raises(KeyError, match="segment 1 kept no full maps; kept segments: \\[0, 2\\]"):
        loaded.pattern(1, 1)
    for path in folder.rglob("*"):
        assert not path.read_bytes().startswith(b"\x80") if path.is_file() else True  # no pickle protocol header
    assert len(loaded.summaries) == len(trace.summaries) and len(loaded.written) == len(trace.written)


def test_in_memory_trace_saves_to_the_same_folder_layout(tmp_path):
    model = tiny("tiny-gpt2")
    _, trace = record(model, tokens(1, 40), TraceConfig(segments="1", keep_memory=True))
    assert trace.root is None
    saved = trace.save(tmp_path / "saved")
    assert saved.names() == trace.names()
    torch.testing.assert_close(saved.pattern(1, 0), trace.pattern(1, 0))
    assert saved.labels(1)[:4] == ["[read 0]", "[read 1]", "[read 2]", "[read 3]"]
    assert saved.summaries.equals(trace.summaries)
    with pytest.raises(FileExistsError):
        trace.save(tmp_path / "saved")


def test_trace_of_another_model_is_refused(tmp_path):
    bert, gpt2 = tiny(), tiny("tiny-gpt2")
    record(bert, tokens(1, 20), TraceConfig(segments="0"), out=tmp_path / "t")
    with pytest.raises(TraceMismatchError, match="recorded with another model: backbone 'tiny-bert' there vs "
                                                 "'tiny-gpt2' here"):
        Trace.load(tmp_path / "t", model=gpt2)
    torch.manual_seed(1)
    other_weights = tiny()
    with pytest.raises(TraceMismatchError, match="other weights of the same architecture"):
        Trace.load(tmp_path / "t", model=other_weights)
    with pytest.raises(TraceMismatchError, match="segment_size 16 there vs 32 here"):
        Trace.load(tmp_path / "t", model=tiny(segment_size=32))
    Trace.load(tmp_path / "t", model=bert)  # the right model loads
    with pytest.raises(FileExistsError, match="already holds a trace"):
        record(gpt2, tokens(1, 20), out=tmp_path / "t")
    record(gpt2, tokens(1, 20), out=tmp_path / "t", overwrite=True)
    Trace.load(tmp_path / "t", model=gpt2)
    with pytest.raises(FileNotFoundError, match="not a finished trace folder"):
        Trace.load(tmp_path / "nothing")


def test_budget_too_small_is_refused_with_the_size_needed(tmp_path):
    model = tiny()
    ids = tokens(2, 64)  # 4 segments of 23 positions
    per_segment = 2 * 4 * 23 * 23 * 2 * 4 / 2**20  # batch x heads x L x L x layers x 4 bytes, in MiB
    with pytest.raises(TraceBudgetError, match=rf"one selected segment need {per_segment:.1f} MiB"):
        record(model, ids, TraceConfig(segments="0", budget_mib=per_segment / 2))
    with pytest.raises(TraceBudgetError, match=rf"full maps of 4 segments, {4 * per_segment:.1f} MiB in all.*out="):
        record(model, ids, TraceConfig(segments="0-3", budget_mib=per_segment * 2.5))
    _, trace = record(model, ids, TraceConfig(segments="0-3", budget_mib=per_segment * 2.5), out=tmp_path / "spill")
    assert trace.map_segments == [0, 1, 2, 3]
    assert trace.index["peak_held_mib"] <= per_segment * 2.5  # spilled layer by layer
    with pytest.raises(TraceBudgetError, match=rf"one selected layer needs {per_segment / 2:.1f} MiB"):
        record(model, ids, TraceConfig(segments="0", budget_mib=per_segment / 4), out=tmp_path / "small")
    _, spilled = record(model, ids, TraceConfig(segments="0", budget_mib=per_segment * 0.6), out=tmp_path / "half")
    assert spilled.map_segments == [0] and spilled.index["peak_held_mib"] <= per_segment * 0.6
    with pytest.raises(TraceBudgetError, match="over the trace budget"):  # open-ended selection: refused when reached
        record(model, ids, TraceConfig(segments="every:1", budget_mib=per_segment * 2.5))
    assert not model.cell._forward_hooks


def test_long_stream_flushes_summaries_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(recorder_module, "CHUNK_SEGMENTS", 3)
    model = tiny()
    segments = [tokens(1, 16, seed=i) for i in range(10)]
    with torch.no_grad(), Recorder(model, out=tmp_path / "t") as rec:
        model.stream(iter(segments))
    import pyarrow.parquet as pq

    assert pq.ParquetFile(tmp_path / "t" / "summaries.parquet").num_row_groups == 4  # 3 + 3 + 3 + 1
    s = rec.trace.summaries
    assert sorted(s.segment.unique()) == list(range(10))
    assert len(s) == 10 * (2 * 4 * 8 + 3 * 4 + 4)  # attention rows + per-slot + whole-memory rows per segment
    with torch.no_grad(), Recorder(model) as rec2:
        model.stream(iter(segments))
    assert rec2.trace.summaries.equals(s)
