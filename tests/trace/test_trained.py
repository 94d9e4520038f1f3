"""On an RMT trained on the memorize task: memory writes the fact where it sits and is read at the answer."""

import pytest
import torch

from rmt_lab.trace import TraceConfig, collect_memory_states, fact_alignment, probe_memory, record
from tests.trace.helpers import train_memorize


@pytest.fixture(scope="module")
def trained():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is faster and steadier on a shared machine
    try:
        model, gen, steps = train_memorize()
    finally:
        torch.set_num_threads(threads)
    test = [gen.sample("test", i) for i in range(64)]
    out, trace = record(model, test, TraceConfig(segments="all"))
    accuracy = (out.logits.argmax(-1) == torch.tensor([s.label for s in test])).float().mean().item()
    assert accuracy > 0.9, f"the tiny RMT did not learn memorize in {steps} steps (accuracy {accuracy:.2f})"
    probe_samples = [gen.sample("validation", i) for i in range(160)]
    return {"trace": trace, "states": collect_memory_states(model, probe_samples, batch_size=80)}


def test_write_precision_is_higher_on_the_fact_segment(trained):
    trained = trained["trace"]
    table = fact_alignment(trained.summaries)
    precision = table.groupby("has_fact").write_precision.mean()
    print(f"\nwrite precision: fact segment {precision[True]:.3f}, noise segments {precision[False]:.3f}")
    assert (table[table.has_fact].segment == 0).all()  # memorize: the fact opens the input
    assert precision[True] > precision[False] + 0.2
    top = trained.written
    first = top[top["rank"] == 0]
    assert first[first.segment == 0].is_fact.mean() > 0.9  # what the slots write most in segment 0 is the fact


def test_answer_reads_memory_most_in_the_last_segment(trained):
    s = trained["trace"].summaries
    read = s[s.metric == "read_answer"].groupby("segment")["value"].mean()
    print(f"\nread mass at the answer position per segment: {read.round(3).to_dict()}")
    assert read.iloc[-1] > read.mean()


def test_probe_decodes_the_answer_from_memory_after_the_fact(trained):
    got = trained["states"]
    table = probe_memory(got["states"], got["labels"], got["fact_segment"], n_classes=6)
    accuracy = table.groupby("segment").accuracy.mean()
    print(f"\nlinear probe accuracy on memory per segment (chance 0.167): {accuracy.round(3).to_dict()}")
    assert (accuracy > 0.5).all()  # memorize: the fact is in segment 0 and must survive to the end
