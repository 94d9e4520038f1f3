"""The attention function the recorder registers with transformers, and the per-layer summary math.

Recording goes through transformers' public dispatch: `AttentionInterface.register("rmt_trace", ...)`
plus an `AttentionMaskInterface` entry (without it transformers would build no mask at all for an
unknown implementation and silently drop GPT-2's causal mask and every padding mask). The recorder
switches the backbone to "rmt_trace" with `set_attn_implementation` only while it records, and marks
each of the cell's calls as its own (`RECORDING`, a context variable), so the function knows which
recording a call belongs to without a table of models.

Per layer the big attention stays fused (sdpa); the summaries need only:
  * the 1 + M query rows that matter for memory (answer position, memory writers), whose softmax is
    computed explicitly against every key: (batch, heads, 1 + M, L), cheap;
  * the attention mass each content query puts on the memory keys. On CPU the fused flash kernel
    also returns each row's log-sum-exp, and mass = sum_j exp(q.k_j * scale - lse) over the M memory
    keys: an (L x M) product. Elsewhere one extra value channel does it: V gets an indicator
    column (1 on memory keys), Q and K a zero column so head sizes still match the fused kernels,
    and that output channel is exactly the attention mass on memory.
The model's own output is the fused kernel's, so recording leaves the outputs unchanged (bitwise on
the CPU path; tested within 1e-6 on the extra-channel path).
"""

from __future__ import annotations

from contextvars import ContextVar

import torch
from torch import Tensor
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from rmt_lab.trace.index import MEM, SLOT0, SegmentIndex

TRACE_IMPL = "rmt_trace"

# Per (batch, layer, head): computed from the explicit rows and the read mass. `write_precision` is
# derived when tables are built (write_span / write_content).
METRICS = (
    "read_content",  # mean over content queries of their attention mass on the incoming memory
    "read_answer",  # the answer position's mass on the incoming memory ([CLS] encoder, last token decoder)
    "retain",  # mean over memory writers of their mass on the incoming memory (Figure 6 "retain")
    "write_content",  # mean over memory writers of their mass on content tokens
    "write_span",  # ... on the reference span: the places inside a segment where the facts sit
    "write_fact",  # ... on fact tokens (0 where the segment holds none)
    "retain_diag",  # mean over slots of slot i's mass on its own incoming state (the diagonal)
)

# The Recorder whose memory-cell call is running (set from the cell's forward pre-hook to its forward hook).
RECORDING: ContextVar[object | None] = ContextVar("rmt_trace_recording", default=None)


def traced_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """Registered as "rmt_trace": plain sdpa unless called inside a recorded cell call."""
    session = RECORDING.get()
    if session is None or session.index is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    return session.attend(module, query, key, value, attention_mask, dropout, scaling, is_causal, kwargs)


AttentionInterface.register(TRACE_IMPL, traced_attention)
# The same masks sdpa gets (None where sdpa relies on is_causal or needs no mask), so the fused call is unchanged.
AttentionMaskInterface.register(TRACE_IMPL, sdpa_mask)


def lse_path_ok(query: Tensor, key: Tensor, value: Tensor, kwargs: dict) -> bool:
    """Whether the CPU flash kernel (the one F.scaled_dot_product_attention picks here) can be called directly."""
    return (
        query.device.type == "cpu"
        and hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu")
        and torch.backends.cuda.flash_sdp_enabled()  # the switch also governs the CPU flash kernel
        and query.dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16)
        and query.shape[-1] == key.shape[-1] == value.shape[-1]
        and query.shape[1] == key.shape[1]  # no grouped KV heads
        and query.stride(-1) == key.stride(-1) == value.stride(-1) == 1
        and not any(kwargs.get(k) is not None for k in ("position_bias", "softcap", "sliding_window"))
    )


class FloatMask:
    """Caches the additive float form of the (shared, per forward) boolean mask, as sdpa builds it itself."""

    def __init__(self) -> None:
        self.source: Tensor | None = None
        self.value: Tensor | None = None

    def __call__(self, mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
        if mask is None or mask.dtype != torch.bool:
            return mask
        if mask is not self.source:
            self.source = mask
            self.value = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))
        return self.value


def attention_with_read_mass(module, query, key, value, attention_mask, dropout, scaling, is_causal, kwargs,
                    read_keys: slice, read_rows: slice, float_mask: FloatMask,
                    use_lse: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """The layer's attention output (batch, L, heads, d) exactly as sdpa computes it, and for the queries
    `read_rows` (R of them) either their log-sum-exp (batch, heads, R) (lse path: with `read_scores` this
    gives their mass on the keys `read_keys`, see `read_mass`) or that mass itself (batch, heads, R)
    (extra-channel path). Returns (output, mass or None, lse or None)."""
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    if use_lse:
        # The flash kernel wants a key and value head per query head (grouped-query attention has fewer).
        key, value = (repeat_kv(t, query.shape[1] // t.shape[1]) for t in (key, value))
        causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
        causal = bool(query.shape[2] > 1 and attention_mask is None and causal)  # sdpa_attention_forward's rule
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query, key, value, dropout, causal, attn_mask=float_mask(attention_mask, query.dtype), scale=scale
        )  # out (batch, heads, L, d); lse (batch, heads, L)
        return out.transpose(1, 2).contiguous(), None, lse.detach()[:, :, read_rows]
    d = query.shape[-1]
    indicator = torch.zeros(*value.shape[:-1], 1, dtype=value.dtype, device=value.device)  # (batch, heads, L, 1)
    indicator[:, :, read_keys] = 1
    out, _ = sdpa_attention_forward(
        module,
        torch.cat([query, torch.zeros_like(query[..., :1])], -1),
        torch.cat([key, torch.zeros_like(key[..., :1])], -1),
        torch.cat([value, indicator], -1),
        attention_mask, dropout=dropout, scaling=scale, is_causal=is_causal, **kwargs,
    )  # (batch, L, heads, d + 1)
    return out[..., :d].contiguous(), out[:, read_rows, :, d].transpose(1, 2).detach(), None


def read_scores(query: Tensor, key: Tensor, read_rows: slice, read_keys: slice, out: Tensor | None = None) -> Tensor:
    """Unscaled scores of the keys `read_keys` with the queries `read_rows`, keys first: (batch, heads, M, R).
    (Keys first keeps the long axis innermost, where the elementwise work and the sum over M vectorize.)"""
    return torch.matmul(key[:, :, read_keys], query[:, :, read_rows].transpose(-1, -2), out=out)


def read_mass(scores: Tensor, lse: Tensor, scale: float) -> Tensor:
    """Per-query attention mass on the memory keys (..., heads, R) from `read_scores` (..., heads, M, R)
    and the log-sum-exp (..., heads, R) that `attention_with_read_mass` returned: sum_j exp(s_j * scale - lse)."""
    return torch.add(lse.float().unsqueeze(-2).neg(), scores.float(), alpha=scale).exp_().sum(-2)


def row_scores(query: Tensor, key: Tensor, ix: SegmentIndex, out: Tensor | None = None) -> Tensor:
    """Unscaled scores of the answer row and the memory writers against every key: (batch, heads, 1 + M, L).
    softmax(scores * scale + ix.row_bias) are their attention rows."""
    r = ix.n_mem + 1
    if ix.rows_contiguous:
        q = query[:, :, :r]
    else:
        q = query.gather(2, ix.rows[:, None, :, None].expand(query.shape[0], query.shape[1], r, query.shape[-1]))
    return torch.matmul(q, key.transpose(-1, -2), out=out)


def row_metrics(probs: Tensor, read_content: Tensor, ix: SegmentIndex, top_k: int):
    """Summary statistics from the answer and writer rows' probabilities (..., batch, heads, 1 + M, L),
    any leading dims (e.g. layers), and the mean read mass of content queries (..., batch, heads).

    Returns stats (..., batch, heads, len(METRICS)) and, if top_k, the head-mean write attention's
    top-k content keys per slot: values and backbone positions, each (..., batch, M, k)."""
    mass = torch.matmul(probs, ix.keys.unsqueeze(1))  # (..., batch, heads, 1 + M, K)
    writers = mass[..., 1:, :]  # (..., batch, heads, M, K)
    diag = writers[..., SLOT0:].diagonal(dim1=-2, dim2=-1)  # (..., batch, heads, M)
    stats = torch.cat(
        [
            read_content.unsqueeze(-1),
            mass[..., 0, MEM : MEM + 1],
            writers[..., :SLOT0].mean(-2),  # retain, write_content, write_span, write_fact (key-group order)
            diag.mean(-1, keepdim=True),
        ],
        dim=-1,
    )
    if not top_k:
        return stats, None, None
    written = probs[..., 1:, :].sum(-3) * ix.content_mask  # (..., batch, M, L) head sum: same order as the mean
    values, positions = written.topk(min(top_k, written.shape[-1]), dim=-1)
    return stats, values / probs.shape[-3], positions


def mean_over_content(read: Tensor, ix: SegmentIndex) -> Tensor:
    """(..., batch, heads, seg_len) mass of the content_rows queries -> (..., batch, heads), the mean over
    each row's content queries."""
    return torch.matmul(read, ix.content_weight.unsqueeze(-1)).squeeze(-1)


def full_probs(query: Tensor, key: Tensor, attention_mask: Tensor | None, scale: float, causal: bool) -> Tensor:
    """Eager attention probabilities (batch, heads, L, L) under the mask the backbone actually used."""
    scores = torch.matmul(query, key.transpose(-1, -2)).float() * scale
    if attention_mask is None:
        if causal:
            n = scores.shape[-1]
            scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool, device=scores.device).triu(1), float("-inf"))
    elif attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask, float("-inf"))
    else:
        scores = scores + attention_mask
    return scores.softmax(-1)


def summaries_from_maps(probs: Tensor, ix: SegmentIndex, top_k: int = 0):
    """The same summaries as the recorder's on-the-fly path, computed from full maps (batch, heads, L, L)
    of every head. The reference the fast path is tested against."""
    b, h, n, _ = probs.shape
    rows = ix.rows[:, None, :, None].expand(b, h, ix.n_mem + 1, n)
    read = probs[:, :, ix.content_rows, ix.read_keys].sum(-1)  # (batch, heads, seg_len)
    return row_metrics(probs.gather(2, rows).float(), mean_over_content(read.float(), ix), ix, top_k)


def row_probs(scores: Tensor, scale: float, ix: SegmentIndex, bias: Tensor | None = None) -> Tensor:
    """softmax(scores * scale + row bias) over keys, for `row_scores` of any leading dims (..., batch, heads,
    1 + M, L). `bias`: the row bias already expanded to (batch, heads, 1 + M, L), which adds much faster than
    the broadcast (batch, 1, 1 + M, L) one; skipped entirely where every key is visible."""
    if ix.all_visible:
        return (scores.float() * scale).softmax(-1)
    bias = ix.row_bias if bias is None else bias
    return torch.add(bias, scores.float(), alpha=scale).softmax(-1)
