"""Analytic FLOPs of transformers with full attention and of the Recurrent Memory Transformer.

Pure functions of a `TransformerShape`; each returns an ordered breakdown {term: FLOPs} (Python
ints, exact) with the keys of `TERMS`, zero where a term does not apply.

Counting conventions (the same as torch's FlopCounterMode, so analytic and measured counts agree;
tests/bench checks both):
- Only matrix products count, 2 FLOPs per multiply-add (2*m*n*k). Bias adds, layer norms, softmax,
  activations, dropout and masking count 0, as do embedding lookups (a gather, not a matmul).
- Causal attention counts the full L x L score and value products. Eager attention and the fused
  kernels compute the whole square and then mask it, and FlopCounterMode counts the square, so the
  analytic count does too (as Megatron's closed form does). Halving it (Kaplan et al. 2020) would
  describe an ideal kernel that skips masked blocks, which none of the counted kernels is.
- Training = forward + backward without activation recomputation = 3 x forward: the backward of
  every matmul is two matmuls of the same size (gradient of the input and of the weight, or of both
  attention operands). This holds for every term, including the first layer, because trainable
  token embeddings need the gradient of the stack's input.

Terms, per pass over P positions, batch B, l layers, width h, MLP width f, vocab V, embedding width e:
    embeddings        OPT-350M's project_in and project_out (e != h): 2 * 2*B*P*e*h; else 0
    attention/qkv     l * 3 * 2*B*P*h*h
    attention/scores  l * 2*B*P*P*h        (Q K^T over all heads)
    attention/values  l * 2*B*P*P*h        (softmax(.) V)
    attention/output  l * 2*B*P*h*h
    mlp               l * 2 * 2*B*P*h*f
    logits            LM head over Q positions: 2*B*Q*e*V, plus 2*B*Q*h*h for BERT/RoBERTa's transform
    classifier        one position per sequence: 2*B*e*n_labels, plus 2*B*h*h for a pooler
                      (HF's GPT-2/OPT ForSequenceClassification score every position and keep
                      one; counted here is the one position a classifier needs, as the RMT reads)

The RMT (Bulatov et al. 2022; 2023) runs the same backbone once per segment, with memory tokens
taking extra positions, so its cost is the sum of its segments' passes: linear in the input length.
"""

from __future__ import annotations

from typing import Literal

from rmt_lab.bench.shapes import TransformerShape
from rmt_lab.config import ConfigError

TERMS: tuple[str, ...] = (
    "embeddings", "attention/qkv", "attention/scores", "attention/values", "attention/output",
    "mlp", "logits", "classifier",
)
Head = Literal["none", "lm", "cls"]  # none: final hidden states only; lm: vocab logits; cls: a classifier
Mode = Literal["forward", "train"]
HEADS: tuple[str, ...] = ("none", "lm", "cls")
MODES: tuple[str, ...] = ("forward", "train")
TRAIN_FACTOR = 3  # forward + backward (2x forward), no activation recomputation

Breakdown = dict[str, int]


def require_positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


def require_choice(name: str, value: object, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not allowed; allowed values: {list(allowed)}")
    return value  # type: ignore[return-value]


def total(breakdown: Breakdown) -> int:
    return sum(breakdown.values())


def scaled(breakdown: Breakdown, factor: int) -> Breakdown:
    return {term: factor * flops for term, flops in breakdown.items()}


def add(*breakdowns: Breakdown) -> Breakdown:
    return {term: sum(b[term] for b in breakdowns) for term in TERMS}


def forward_pass_flops(
    shape: TransformerShape,
    positions: int,
    batch: int = 1,
    *,
    lm_positions: int = 0,
    classify: bool = False,
    num_labels: int = 6,
) -> Breakdown:
    """FLOPs of one forward pass of the backbone over `positions` positions (per sequence, x batch).

    `lm_positions`: how many positions get vocab logits (all of them for a plain LM, only content
    tokens in an RMT segment, 0 for none). `classify`: add a classifier on one position per sequence.
    """
    B, P = require_positive("batch", batch), require_positive("positions", positions)
    if isinstance(lm_positions, bool) or not isinstance(lm_positions, int) or not 0 <= lm_positions <= P:
        raise ConfigError(f"lm_positions must be an integer in [0, positions={P}], got {lm_positions!r}")
    l, h, f, e, V = shape.layers, shape.hidden, shape.ffn, shape.embed_width, shape.vocab
    Q = lm_positions
    out = dict.fromkeys(TERMS, 0)
    out["embeddings"] = 2 * (2 * B * P * e * h) if shape.has_embed_projection else 0
    out["attention/qkv"] = l * 3 * 2 * B * P * h * h
    out["attention/scores"] = l * 2 * B * P * P * h
    out["attention/values"] = l * 2 * B * P * P * h
    out["attention/output"] = l * 2 * B * P * h * h
    out["mlp"] = l * 2 * 2 * B * P * h * f
    out["logits"] = 2 * B * Q * e * V + (2 * B * Q * h * h if shape.lm_transform else 0)
    if classify:
        require_positive("num_labels", num_labels)
        # OPT's classifier reads the e-wide projected output; BERT/RoBERTa/GPT-2 have e == h.
        out["classifier"] = 2 * B * e * num_labels + (2 * B * h * h if shape.pooler else 0)
    return out


def _finish(breakdown: Breakdown, mode: str) -> Breakdown:
    return scaled(breakdown, TRAIN_FACTOR) if require_choice("mode", mode, MODES) == "train" else breakdown


def full_attention_flops(
    shape: TransformerShape,
    tokens: int,
    batch: int = 1,
    *,
    head: Head = "lm",
    mode: Mode = "forward",
    num_labels: int = 6,
    extrapolate: bool = False,
) -> Breakdown:
    """FLOPs of a plain transformer attending over all `tokens` at once.

    head: "lm" puts logits on every token, "cls" one classifier per sequence, "none" neither.
    Beyond the model's position limit the count is the formula applied to a model that does not
    exist (as Figure 3 of the report does past OPT's 2048 positions): allowed only with
    `extrapolate=True`.
    """
    require_positive("tokens", tokens)
    require_choice("head", head, HEADS)
    if tokens > shape.max_positions and not extrapolate:
        raise ConfigError(
            f"{tokens} tokens exceed the model's {shape.max_positions} positions; pass extrapolate=True "
            "to count the formula beyond them anyway"
        )
    breakdown = forward_pass_flops(
        shape, tokens, batch, lm_positions=tokens if head == "lm" else 0,
        classify=head == "cls", num_labels=num_labels,
    )
    return _finish(breakdown, mode)


def memory_positions(shape: TransformerShape, num_mem: int) -> int:
    """Positions an RMT segment spends beyond its content tokens.

    Encoder: `[CLS] mem x M [SEP] tokens [SEP]`, M + 3. Decoder: `[read mem x M] tokens [write mem x M]`, 2M.
    """
    require_positive("num_mem", num_mem)
    return 2 * num_mem if shape.causal else num_mem + 3


def segment_lengths(tokens: int, segment_len: int) -> list[int]:
    """Content tokens of each segment: full segments, then the remainder (never padded)."""
    require_positive("tokens", tokens)
    require_positive("segment_len", segment_len)
    if tokens < segment_len:
        raise ConfigError(
            f"an RMT over {tokens} tokens is shorter than one segment of {segment_len} tokens; "
            "use full_attention_flops, or a segment_len <= tokens"
        )
    full, rest = divmod(tokens, segment_len)
    return [segment_len] * full + ([rest] if rest else [])


def rmt_flops(
    shape: TransformerShape,
    tokens: int,
    segment_len: int,
    num_mem: int,
    batch: int = 1,
    *,
    head: Head = "lm",
    mode: Mode = "forward",
    num_labels: int = 6,
) -> Breakdown:
    """FLOPs of an RMT over `tokens` cut into segments of `segment_len` content tokens.

    Each segment is one backbone pass over its content plus `memory_positions(shape, num_mem)`
    positions; a shorter last segment is counted at its own length. head: "lm" puts logits on the
    content tokens of every segment (none on memory), "cls" puts one classifier on the last segment
    only (the report's classification), "none" neither. Memory is carried as hidden states, which
    costs no matmul. Raises ConfigError for fewer tokens than one segment, or segments longer than
    the model's positions.
    """
    require_choice("head", head, HEADS)
    lengths = segment_lengths(tokens, segment_len)
    extra = memory_positions(shape, num_mem)
    if segment_len + extra > shape.max_positions:
        raise ConfigError(
            f"a segment of {segment_len} tokens + {extra} memory positions exceeds the model's "
            f"{shape.max_positions} positions"
        )
    last = len(lengths) - 1
    passes = [
        forward_pass_flops(
            shape, n + extra, batch, lm_positions=n if head == "lm" else 0,
            classify=head == "cls" and i == last, num_labels=num_labels,
        )
        for i, n in enumerate(lengths)
    ]
    return _finish(add(*passes), mode)


def megatron_flops(batch: int, seq: int, layers: int, hidden: int, vocab: int) -> float:
    """Megatron-LM's closed form per training iteration, 96*B*s*l*h^2*(1 + s/(6h) + V/(16*l*h)).

    Narayanan et al. 2021, appendix. It assumes ffn = 4h, counts matmuls only, full s x s attention
    (causal not halved), logits over all s positions with embedding width h, and activation
    recomputation: the stack runs forward twice (4x forward in all), the logits once (3x).
    """
    B, s, l, h, V = batch, seq, layers, hidden, vocab
    return 96 * B * s * l * h**2 * (1 + s / (6 * h) + V / (16 * l * h))


def megatron_forward_flops(batch: int, seq: int, layers: int, hidden: int, vocab: int) -> float:
    """The forward form quoted in REFERENCE.md, 24*B*s*l*h^2*(1 + s/(6h) + V/(16*l*h)).

    It is `megatron_flops` / 4, which is exact for the stack (24*B*s*l*h^2 + 4*B*s^2*l*h) but gives the
    logits 1.5*B*s*h*V where one forward costs 2*B*s*h*V (the /4 treats the logits as recomputed too).
    So it matches `full_attention_flops` within 1% only where the logits are a small share:
    V / (48*l*h) << 1, e.g. OPT-6.7B and larger at V = 50272; not OPT-125M (6% apart at s = 2048).
    """
    B, s, l, h, V = batch, seq, layers, hidden, vocab
    return 24 * B * s * l * h**2 * (1 + s / (6 * h) + V / (16 * l * h))
