"""Text preview of a sample: facts and question highlighted, segment by segment, with ground truth."""

from __future__ import annotations

import numpy as np

from rmt_lab.tasks.sample import Sample

ANSI = {"fact": "\033[1;33m", "question": "\033[1;36m", "end": "\033[0m"}
MARK = {"fact": (">>> ", " <<<"), "question": ("??? ", " ???")}


def _highlight(text: str, kind: str, color: bool) -> str:
    if color:
        return f"{ANSI[kind]}{text}{ANSI['end']}"
    left, right = MARK[kind]
    return f"{left}{text}{right}"


def _segment_text(tokens: np.ndarray, kinds: np.ndarray, tokenizer, color: bool) -> str:
    """Decode one segment, run by run, highlighting fact and question runs."""
    parts, run_start = [], 0
    for i in range(1, len(tokens) + 1):
        if i == len(tokens) or kinds[i] != kinds[run_start]:
            text = tokenizer.decode(tokens[run_start:i].tolist())
            kind = kinds[run_start]
            parts.append(text if kind == "noise" else _highlight(text, kind, color))
            run_start = i
    return " ".join(parts)


def format_sample(sample: Sample, tokenizer, *, color: bool = False, show_all_up_to: int = 8) -> str:
    """Readable rendering of `sample`. Segments with no fact or question are elided when the sample
    has more than `show_all_up_to` segments (it is streamed, so this also works at 10M tokens)."""
    spans = [("fact", f) for f in sample.facts] + [("question", sample.question)]
    marked = {seg for _, span in spans for seg in span.segments}
    show_all = sample.n_segments <= show_all_up_to
    lines = [
        f"task {sample.task} | split {sample.split} | index {sample.index} | {sample.n_tokens} tokens = "
        f"{sample.n_segments} segment(s) of {sample.segment_size}",
        "",
    ]
    elided = 0
    for seg, tensor in enumerate(sample.segments()):
        if not show_all and seg not in marked:
            elided += 1
            continue
        if elided:
            lines += [f"... {elided} noise-only segment(s) ...", ""]
            elided = 0
        first = seg * sample.segment_size
        kinds = np.full(len(tensor), "noise", dtype=object)
        for kind, span in spans:
            lo, hi = max(span.start, first), min(span.stop, first + len(tensor))
            kinds[lo - first : max(lo, hi) - first] = kind
        lines += [f"[segment {seg}]", _segment_text(tensor.numpy(), kinds, tokenizer, color), ""]
    if elided:
        lines += [f"... {elided} noise-only segment(s) ...", ""]
    lines.append("ground truth")
    for i, fact in enumerate(sample.facts, 1):
        lines.append(
            f"  fact {i}: {fact.text!r} tokens [{fact.start}, {fact.stop}) segment(s) {sorted(set(fact.segments))}"
        )
    q = sample.question
    lines.append(f"  question: {q.text!r} tokens [{q.start}, {q.stop}) segment(s) {sorted(set(q.segments))}")
    lines.append(f"  answer: {sample.answer!r} (label {sample.label})")
    return "\n".join(lines)
