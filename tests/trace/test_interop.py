"""bertviz export, run_with_cache, and the memory probe."""

import torch

from rmt_lab.trace import (
    TraceConfig, collect_memory_states, hook_name, probe_memory, record, run_with_cache, to_bertviz,
)
from tests.trace.helpers import tiny, tokens


def test_bertviz_format():
    model = tiny()
    ids = tokens(2, 40)
    _, trace = record(model, ids, TraceConfig(segments="2"))
    attention, labels = to_bertviz(trace, segment=2, sample=1)
    n = 6 + 8 + 1  # [CLS] 4 mem [SEP], 8 tokens, [SEP]; padding trimmed
    assert len(attention) == 2 and len(labels) == n
    assert all(a.shape == (1, 4, n, n) for a in attention)
    assert labels[:2] == ["[CLS]", "[mem 0]"] and labels[-1] == "[SEP]"
    torch.testing.assert_close(attention[1][0], trace.pattern(2, 1)[1, :, :n, :n])


def test_run_with_cache_names_and_outputs():
    model = tiny("tiny-gpt2")
    ids = tokens(1, 40)
    with torch.no_grad():
        ref = model(ids)
    out, cache = run_with_cache(model, ids)
    assert torch.equal(out.logits, ref.logits)
    assert set(cache) == {hook_name(s, l) for s in range(3) for l in range(2)} | {
        hook_name(s, kind="memory.state") for s in range(3)
    }
    assert cache["seg.1.layer.0.attn.pattern"].shape == (1, 4, 24, 24)
    _, only = run_with_cache(model, ids, names_filter=lambda name: name.endswith("memory.state"))
    assert sorted(only) == [hook_name(s, kind="memory.state") for s in range(3)]
    torch.testing.assert_close(only["seg.2.memory.state"], out.memory)


def test_probe_finds_where_the_answer_is_held():
    g = torch.Generator().manual_seed(0)
    n, segments, m, d = 240, 5, 2, 8
    labels = torch.randint(0, 6, (n,), generator=g)
    fact = torch.randint(0, 3, (n,), generator=g)
    states = torch.randn(n, segments, m, d, generator=g)
    for i in range(n):  # from the fact on, slot 0 holds the answer; before, noise only
        states[i, fact[i] :, 0, labels[i]] += 4.0
    table = probe_memory(states, labels, fact, n_classes=6)
    before = table[table.distance < 0]
    after = table[table.distance >= 0]
    mean = lambda t: (t.accuracy * t.n).sum() / t.n.sum()  # noqa: E731
    assert mean(after) > 0.9 and mean(before) < 0.45
    assert set(table.columns) == {"segment", "distance", "accuracy", "n", "chance", "n_train"}


def test_collect_memory_states_from_task_samples():
    from rmt_lab.tasks import TaskConfig, TaskGenerator

    gen = TaskGenerator(TaskConfig(task="detect_memorize", segment_size=16, length=4))
    samples = [gen.sample("test", i) for i in range(5)]
    got = collect_memory_states(tiny(), samples, batch_size=2)
    assert got["states"].shape == (5, 4, 4, 64)
    assert got["labels"].tolist() == [s.label for s in samples]
    assert got["fact_segment"].tolist() == [s.facts[0].segments[-1] for s in samples]


def test_memory_targets_name_each_facts_words_in_text_order_each_from_its_own_segment():
    from rmt_lab.tasks import DIRECTIONS, PLACES, TaskConfig, TaskGenerator
    from rmt_lab.trace import memory_targets

    gen = TaskGenerator(TaskConfig(task="reasoning", segment_size=16, length=6))
    samples = [gen.sample("test", i) for i in range(40)]
    targets = memory_targets(samples)
    parts = ("subject", "direction", "object")
    assert list(targets) == ["answer"] + [f"fact {k} {part}" for k in (1, 2) for part in parts]
    assert targets["answer"]["labels"].tolist() == [s.label for s in samples]
    assert targets["fact 2 direction"]["n_classes"] == 4 and targets["fact 1 object"]["n_classes"] == 6
    for i, s in enumerate(samples):
        for k, span in enumerate(sorted(s.facts, key=lambda span: span.start), 1):
            assert all(targets[f"fact {k} {part}"]["fact_segment"][i] == span.segments[-1] for part in parts)
            subject, direction, obj = (targets[f"fact {k} {part}"]["labels"][i] for part in parts)
            assert span.text == f"The {PLACES[subject]} is {DIRECTIONS[direction]} of the {PLACES[obj]}."
        assert targets["answer"]["fact_segment"][i] == max(f.segments[-1] for f in s.facts)
    assert list(memory_targets([TaskGenerator(TaskConfig(task="memorize", segment_size=16, length=2))
                                .sample("test", 0)])) == ["answer"]
