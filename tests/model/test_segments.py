"""Segmenting invariants: segments joined give the input back; masks are prefix masks."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rmt_lab.model.segments import IGNORE_INDEX, count_segments, iter_segments


@st.composite
def batches(draw):
    batch = draw(st.integers(1, 4))
    length = draw(st.integers(1, 60))
    lengths = [draw(st.integers(1, length)) for _ in range(batch)]
    pad_left = draw(st.booleans())
    ids = torch.randint(1, 10_000, (batch, length), generator=torch.Generator().manual_seed(draw(st.integers(0, 99))))
    mask = torch.zeros(batch, length, dtype=torch.bool)
    for b, n in enumerate(lengths):
        if pad_left:
            mask[b, length - n :] = True
        else:
            mask[b, :n] = True
    return ids, mask


@settings(max_examples=200, deadline=None)
@given(batches(), st.integers(1, 17), st.sampled_from(["left", "right"]))
def test_segments_join_back_to_input(data, segment_size, align):
    ids, mask = data
    labels = ids + 1
    segs = list(iter_segments(ids, mask, segment_size, align, labels))
    assert len(segs) == count_segments(mask.sum(1), segment_size)
    for b in range(ids.shape[0]):
        expected = ids[b][mask[b]]
        joined = torch.cat([s.input_ids[b][s.attention_mask[b]] for s in segs])
        assert torch.equal(joined, expected)
        joined_labels = torch.cat([s.labels[b][s.attention_mask[b]] for s in segs])
        assert torch.equal(joined_labels, expected + 1)
    for s in segs:
        m = s.attention_mask
        assert s.input_ids.shape[1] <= segment_size
        # prefix masks: no valid token after a padding position
        assert not bool((m[:, 1:] & ~m[:, :-1]).any())
        assert bool((s.input_ids[~m] == 0).all())
        assert bool((s.labels[~m] == IGNORE_INDEX).all())
        assert bool(m.any(1).any())  # every segment has at least one active sample
        assert s.full == bool(m.all())  # known on the host, as the mask says


@settings(max_examples=50, deadline=None)
@given(batches(), st.integers(1, 17))
def test_right_alignment_ends_every_sample_in_last_segment(data, segment_size):
    ids, mask = data
    segs = list(iter_segments(ids, mask, segment_size, "right"))
    last = segs[-1].attention_mask.sum(1)
    lengths = mask.sum(1)
    assert torch.equal(last, torch.minimum(lengths, torch.tensor(segment_size)))


def test_left_alignment_cuts_at_multiples_of_segment_size():
    ids = torch.arange(1, 11).unsqueeze(0)
    segs = list(iter_segments(ids, None, 4, "left"))
    assert [s.input_ids[0][s.attention_mask[0]].tolist() for s in segs] == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]
    segs = list(iter_segments(ids, None, 4, "right"))
    assert [s.input_ids[0][s.attention_mask[0]].tolist() for s in segs] == [[1, 2], [3, 4, 5, 6], [7, 8, 9, 10]]
