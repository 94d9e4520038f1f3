"""The recorder on HF families beyond BERT and GPT-2: grouped-query (Llama, 2 KV heads for 4), multi-query
(Llama with 1 KV head, GPT-BigCode), rotary (Llama, GPT-NeoX, Qwen2), a sliding window (Mistral), and encoders
whose attention modules carry no layer index (DistilBERT) or are shared by every layer (ALBERT)."""

import dataclasses

import pytest
import torch

from rmt_lab.model import RecurrentWrapper, RMTConfig
from rmt_lab.trace import METRICS, Recorder, TraceConfig, build_index, summaries_from_maps
from tests.model.families import BY_NAME, FALCON, ids

TRACED = ["llama-gqa", "llama-mqa", "gpt-bigcode", "gpt-neox", "qwen2", "mistral", "opt", "distilbert", "albert",
          "electra", "roberta", "bloom", "mpt", "deberta-v2"]
OWN_ATTENTION = {"bloom", "mpt", "deberta-v2"}
FACTS = [[3, 4, 20], [17, 18]]


def rmt(name, **config):
    family = BY_NAME[name]
    if config:
        family = dataclasses.replace(family, config={**family.config, **config})
    return RecurrentWrapper.from_backbone(family.build(), RMTConfig(num_mem_tokens=3, segment_size=16, num_classes=3),
                                          special_tokens=family.special_tokens).eval()


def padded_batch():
    x = ids(2, 40)
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[1, 27:] = False  # padding inside the second segment, an empty third one
    return x, mask


def run(model, fused, **config):
    x, mask = padded_batch()
    with torch.no_grad(), Recorder(model, TraceConfig(segments="all", **config), facts=FACTS, fused=fused) as rec:
        out = model(x, attention_mask=mask)
    return out, rec.trace


# Families that compute attention in their own code have one way in: the maps they return.
CASES = [(name, fused) for name in TRACED for fused in (("auto",) if name in OWN_ATTENTION else ("auto", "lse", "channel"))]


@pytest.mark.parametrize(("name", "fused"), CASES)
def test_summaries_equal_full_maps_and_outputs_do_not_move(name, fused):
    model = rmt(name, sliding_window=64) if name == "mistral" else rmt(name)  # a window wider than a segment
    x, mask = padded_batch()
    with torch.no_grad():
        ref = model(x, attention_mask=mask)
    out, trace = run(model, fused)
    torch.testing.assert_close(out.memory, ref.memory, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.logits, ref.logits, atol=1e-6, rtol=0)
    df, n_heads, cell = trace.summaries, 4, model.cell
    facts = torch.tensor([FACTS[0], FACTS[1] + [-1]])
    checked = 0
    for s in trace.map_segments:
        info = trace.segment_info(s)
        lengths = torch.tensor(info["lengths"])
        lay = build_index(cell.positions(lengths, 16), 16, torch.tensor(info["starts"]), facts)
        for layer in (0, 1):
            maps = trace.pattern(s, layer)  # (batch, heads, L, L)
            assert maps.shape[:2] == (2, n_heads)
            assert torch.allclose(maps.sum(-1), torch.ones(maps.shape[:3]), atol=1e-5)
            if cell.layout == "decoder":
                assert torch.all(maps.triu(1) == 0)  # the causal mask survived the switch
            stats, _, _ = summaries_from_maps(maps, lay)
            for b in range(2):
                if not lay.active[b]:
                    continue
                rows = df[(df.segment == s) & (df.layer == layer) & (df["sample"] == b)]
                for k, metric in enumerate(METRICS):
                    got = torch.tensor(rows[rows.metric == metric].sort_values("head")["value"].to_numpy())
                    torch.testing.assert_close(got, stats[b, :, k], atol=2e-5, rtol=0)
                    checked += 1
    assert checked == 70  # 5 active (segment, sample) pairs x 2 layers x 7 metrics


def test_grouped_query_heads_share_their_keys():
    """Query heads 2h and 2h+1 read the same KV head: their maps differ (own queries) but both are proper rows."""
    model = rmt("llama-gqa")
    assert model.cell.model.config.num_key_value_heads == 2
    _, trace = run(model, "auto")
    maps = trace.pattern(0, 0)
    assert maps.shape[1] == 4 and not torch.allclose(maps[:, 0], maps[:, 1])


def test_alibi_maps_carry_the_position_bias():
    """BLOOM's ALiBi bias falls with distance: in a head with a steep slope, a query's weights on earlier keys
    rise towards the query, which no content-only softmax of random weights would do on every row."""
    _, trace = run(rmt("bloom"), "auto")
    maps = trace.pattern(0, 0)[0, 0]  # first head: the steepest ALiBi slope
    rows = maps[8:, :8]  # queries past the memory prefix, on the first 8 keys
    assert torch.all(rows[:, 1:] >= rows[:, :-1])


def test_a_family_that_cannot_be_switched_to_eager_attention_names_the_fix():
    model = RecurrentWrapper.from_backbone(FALCON.build(), RMTConfig(num_mem_tokens=3, segment_size=16,
                                                                     num_classes=3)).eval()
    with pytest.raises(ValueError, match=r"'FalconForCausalLM' \(falcon\) computes attention in its own code.*"
                                         r"runs 'sdpa'.*load it with attn_implementation='eager'"):
        run(model, "auto")
    falcon = dataclasses.replace(FALCON, config={**FALCON.config, "attn_implementation": "eager"})
    model = RecurrentWrapper.from_backbone(falcon.build(), RMTConfig(num_mem_tokens=3, segment_size=16,
                                                                     num_classes=3)).eval()
    x, mask = padded_batch()
    with torch.no_grad():
        ref = model(x, attention_mask=mask)
    out, trace = run(model, "auto")
    torch.testing.assert_close(out.logits, ref.logits, atol=0, rtol=0)
    assert trace.pattern(0, 1).shape == (2, 4, 22, 22)


def test_a_sliding_window_shorter_than_a_segment_is_refused():
    model = rmt("mistral", sliding_window=12)  # a segment has 3 + 16 + 3 positions
    with pytest.raises(ValueError, match=r"sliding window of 12 positions, fewer than the 22 of a segment"):
        run(model, "auto")
