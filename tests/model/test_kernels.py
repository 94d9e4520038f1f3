"""The fused CPU attention kernel (`rmt_lab.model.kernels`): its output and its gradients equal sdpa's, and it is
used only where it applies.

These run the build for this machine's SIMD level (AVX-512 here; `ATEN_CPU_CAPABILITY=avx2` in the environment
runs the AVX2 build through the same tests)."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from rmt_lab.model import kernels
from tests.model.helpers import tiny, tokens

pytestmark = pytest.mark.skipif(not kernels.VECTOR_FLOATS, reason="no kernel build for this CPU (needs AVX2 / AVX-512)")
W = kernels.VECTOR_FLOATS


def heads(batch, n_heads, length, dim, seed, spread=1.0):
    """(batch, heads, length, dim) views of a (batch, length, heads * dim) tensor, as a backbone makes them."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, n_heads * dim, generator=g) * spread
    return x.view(batch, length, n_heads, dim).transpose(1, 2)


def reference(q, k, v, scale):
    return F.scaled_dot_product_attention(q, k, v, scale=scale).transpose(1, 2)  # (batch, length, heads, dim)


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 2), n_heads=st.integers(1, 3), n_q=st.integers(1, 70), n_k=st.integers(1, 70),
       vectors=st.sampled_from([1, 2, 4, 8]), seed=st.integers(0, 2**16))
def test_equals_sdpa_on_any_shape(batch, n_heads, n_q, n_k, vectors, seed):
    """Lengths off the tile sizes (blocks of 8 or 16 query rows, 2 vectors of keys), every head size, n_q != n_k."""
    dim = vectors * W
    q, k, v = heads(batch, n_heads, n_q, dim, seed), heads(batch, n_heads, n_k, dim, seed + 1), heads(
        batch, n_heads, n_k, dim, seed + 2)
    got = kernels.cpu_attention(q, k, v, dim**-0.5)
    assert got.shape == (batch, n_q, n_heads, dim) and got.is_contiguous()
    torch.testing.assert_close(got, reference(q, k, v, dim**-0.5), atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("spread", [1.0, 6.0])
def test_as_accurate_as_sdpa_on_a_segment(spread):
    """A MiniLM segment's attention (512 positions, 12 heads of 32 dims on AVX-512). With `spread` 6 the
    scores reach a few hundred, so their own fp32 rounding (~1e-5) moves the weights: both kernels are
    then compared with the float64 truth, the fused one no further from it than torch's sdpa."""
    dim = 2 * W
    q, k, v = (heads(1, 12, 512, dim, s, spread if s < 2 else 1.0) for s in range(3))
    got, sdpa = kernels.cpu_attention(q, k, v, dim**-0.5), reference(q, k, v, dim**-0.5)
    truth = reference(q.double(), k.double(), v.double(), dim**-0.5)
    got_err, sdpa_err = (got - truth).abs().max().item(), (sdpa - truth).abs().max().item()
    assert got_err <= max(2 * sdpa_err, 2e-6), (got_err, sdpa_err)
    if spread == 1.0:
        torch.testing.assert_close(got, sdpa, atol=2e-6, rtol=1e-5)


def test_rejects_what_it_does_not_compute():
    q = torch.randn(1, 2, 8, W, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="float32 only"):
        kernels.cpu_attention(q, q, q, 1.0)
    q = torch.randn(1, 2, 8, 3 * W)
    with pytest.raises(RuntimeError, match=f"head dim {3 * W} not in {W}, {2 * W}"):
        kernels.cpu_attention(q, q, q, 1.0)


def gradients(attention, q, k, v, grad):
    """Gradients of q, k and v of sum(attention(q, k, v) * grad), attention's output (batch, length, heads, dim)."""
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    attention(q, k, v).backward(grad)
    return q.grad, k.grad, v.grad


def kernel(scale):
    return lambda q, k, v: kernels.cpu_attention_with_lse(q, k, v, scale)[0]


def sdpa(scale):
    return lambda q, k, v: reference(q, k, v, scale)


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 2), n_heads=st.integers(1, 3), n_q=st.integers(1, 70), n_k=st.integers(1, 70),
       vectors=st.sampled_from([1, 2, 4, 8]), seed=st.integers(0, 2**16))
def test_gradients_equal_float64_sdpa_on_any_shape(batch, n_heads, n_q, n_k, vectors, seed):
    """Lengths off the tiles (blocks of 32 query rows, tiles of 2 vectors of keys), every head size, n_q != n_k.
    Each gradient entry sums at most 70 products of O(1) numbers, which fp32 rounds by ~1e-6 (sdpa's own
    fp32 gradients are as far from the float64 ones); 1e-5 leaves room for that and for nothing else: a wrong
    or missing weight moves entries by 1e-3 and more."""
    dim, scale = vectors * W, (vectors * W) ** -0.5
    q, k, v = heads(batch, n_heads, n_q, dim, seed), heads(batch, n_heads, n_k, dim, seed + 1), heads(
        batch, n_heads, n_k, dim, seed + 2)
    grad = torch.randn(batch, n_q, n_heads, dim, generator=torch.Generator().manual_seed(seed + 3))
    got = gradients(kernel(scale), q, k, v, grad)
    truth = gradients(sdpa(scale), q.double(), k.double(), v.double(), grad.double())
    for name, g, t in zip("qkv", got, truth):
        assert g.dtype == torch.float32 and g.transpose(1, 2).is_contiguous(), name  # the layout of q, k, v
        torch.testing.assert_close(g.double(), t, atol=1e-5, rtol=1e-5, msg=lambda text, n=name: f"d{n}: {text}")


@pytest.mark.parametrize("length", [1, 7, 75, 511])
def test_gradients_as_accurate_as_sdpa_on_a_segment(length):
    """12 heads of 2 vectors (MiniLM's 32 dims on AVX-512) at an RMT segment's lengths: the base experiments'
    64 + 11 positions, the report's 499 + 12. Sums of up to 511 products: both kernels are compared with the
    float64 truth, the fused one no further from it than four times torch's sdpa, or 5e-6 (fp32 rounding of
    such sums, whose order differs between the kernels: seen up to 3.4x sdpa's on an AMD EPYC); a wrong or
    missing weight moves entries by 1e-3 and more."""
    dim = 2 * W
    q, k, v = (heads(1, 12, length, dim, s) for s in range(3))
    grad = torch.randn(1, length, 12, dim, generator=torch.Generator().manual_seed(3))
    got, fp32 = gradients(kernel(dim**-0.5), q, k, v, grad), gradients(sdpa(dim**-0.5), q, k, v, grad)
    truth = gradients(sdpa(dim**-0.5), q.double(), k.double(), v.double(), grad.double())
    for name, g, f, t in zip("qkv", got, fp32, truth):
        got_err, sdpa_err = (g.double() - t).abs().max().item(), (f.double() - t).abs().max().item()
        assert got_err <= max(4 * sdpa_err, 5e-6), (name, got_err, sdpa_err)


def test_forward_with_lse_is_the_forward_and_the_log_sum_exp():
    dim, scale = 2 * W, 0.3
    q, k, v = heads(2, 3, 75, dim, 0), heads(2, 3, 40, dim, 1), heads(2, 3, 40, dim, 2)
    out, lse = kernels.cpu_attention_with_lse(q, k, v, scale)
    assert torch.equal(out, kernels.cpu_attention(q, k, v, scale))
    want = torch.logsumexp(scale * q.double() @ k.double().transpose(-1, -2), -1) / math.log(2)  # log2 units
    torch.testing.assert_close(lse.double(), want, atol=1e-5, rtol=1e-6)


def test_backward_takes_a_gradient_of_any_layout():
    """The output's gradient as autograd may hand it: here not contiguous in its last dim."""
    dim = W
    q, k, v = (heads(1, 2, 9, dim, s) for s in range(3))
    grad = torch.randn(1, 9, dim, 2).transpose(-1, -2)  # (batch, length, heads, dim), last stride 2
    got = gradients(kernel(0.25), q, k, v, grad)
    want = gradients(sdpa(0.25), q, k, v, grad.contiguous())
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=2e-6, rtol=1e-5)


def test_custom_ops_pass_torch_opcheck():
    """Schemas, fake (meta) shapes and strides for torch.compile, and the autograd registration."""
    q, k, v = (heads(1, 2, 9, W, s) for s in range(3))
    torch.library.opcheck(kernels.cpu_attention, (q, k, v, 0.25))
    torch.library.opcheck(kernels.cpu_attention_with_lse, tuple(t.requires_grad_() for t in (q, k, v)) + (0.25,))
    q, k, v = (t.detach() for t in (q, k, v))
    out, lse = kernels.cpu_attention_with_lse(q, k, v, 0.25)
    torch.library.opcheck(kernels.cpu_attention_backward, (torch.randn_like(out), q, k, v, out, lse, 0.25))
    torch.library.opcheck(kernels.cpu_attention, (q, k, v, 0.25, True))
    torch.library.opcheck(kernels.cpu_attention_with_lse,
                          tuple(t.clone().requires_grad_() for t in (q, k, v)) + (0.25, 0.1, seed(5), True))
    out, lse = kernels.cpu_attention_with_lse(q, k, v, 0.25, 0.1, seed(5), True)
    torch.library.opcheck(kernels.cpu_attention_backward,
                          (torch.randn_like(out), q, k, v, out, lse, 0.25, 0.1, seed(5), True))


def masked_reference(q, k, v, scale, causal=False, factors=None):
    """softmax(scale q k^T) in float64, the keys past each query's last visible one removed where `causal` (the
    queries the last positions of the keys' sequence), times the dropout `factors` (0 or 1 / (1 - p), `dropout_mask`),
    times v: (batch, length, heads, dim)."""
    q, k, v = q.double(), k.double(), v.double()
    scores = scale * q @ k.transpose(-1, -2)  # (batch, heads, n_q, n_k)
    if causal:
        n_q, n_k = scores.shape[-2:]
        seen = torch.ones(n_q, n_k, dtype=torch.bool).tril(n_k - n_q)
        scores = scores.masked_fill(~seen, float("-inf"))
    weights = scores.softmax(-1)
    if factors is not None:
        weights = weights * factors.double()
    return (weights @ v).transpose(1, 2)


def seed(n):
    return torch.tensor(n, dtype=torch.int64)


def test_dropout_zero_and_no_causal_are_the_plain_kernel():
    """p = 0 runs the very code of no dropout: the same bits, whatever the seed."""
    dim, scale = 2 * W, 0.3
    q, k, v = heads(2, 3, 75, dim, 0), heads(2, 3, 40, dim, 1), heads(2, 3, 40, dim, 2)
    out, lse = kernels.cpu_attention_with_lse(q, k, v, scale)
    out0, lse0 = kernels.cpu_attention_with_lse(q, k, v, scale, 0.0, seed(7), False)
    assert torch.equal(out, out0) and torch.equal(lse, lse0)
    grad = torch.randn_like(out)
    plain = kernels.cpu_attention_backward(grad, q, k, v, out, lse, scale)
    zero = kernels.cpu_attention_backward(grad, q, k, v, out, lse, scale, 0.0, seed(7), False)
    for a, b in zip(plain, zero):
        assert torch.equal(a, b)


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 2), n_heads=st.integers(1, 3), n_q=st.integers(1, 70), extra_keys=st.integers(0, 30),
       vectors=st.sampled_from([1, 2, 4, 8]), p=st.sampled_from([0.0, 0.1, 0.5]), causal=st.booleans(),
       seed_=st.integers(0, 2**16))
def test_dropout_and_causal_equal_a_float64_reference_on_any_shape(batch, n_heads, n_q, extra_keys, vectors, p,
                                                                   causal, seed_):
    """Forward, log-sum-exp and gradients with dropout and / or a causal mask, against attention built in float64
    torch from the kernel's own keep mask (`dropout_mask`): lengths off the tiles and vectors (the forward takes a
    row's last keys one by one, the backward in whole vectors: both must draw the same mask), n_q <= n_k.
    Tolerances as for the plain gradients; kept weights are up to 2x larger at p = 0.5."""
    dim, scale = vectors * W, (vectors * W) ** -0.5
    n_k = n_q + extra_keys
    q, k, v = heads(batch, n_heads, n_q, dim, seed_), heads(batch, n_heads, n_k, dim, seed_ + 1), heads(
        batch, n_heads, n_k, dim, seed_ + 2)
    grad = torch.randn(batch, n_q, n_heads, dim, generator=torch.Generator().manual_seed(seed_ + 3))
    s = seed(seed_ * 7919)
    factors = kernels.dropout_mask(p, s, batch, n_heads, n_q, n_k)
    out, lse = kernels.cpu_attention_with_lse(q, k, v, scale, p, s, causal)
    torch.testing.assert_close(out.double(), masked_reference(q, k, v, scale, causal, factors), atol=1e-5, rtol=1e-5)
    scores = scale * q.double() @ k.double().transpose(-1, -2)
    if causal:
        scores = scores.masked_fill(~torch.ones(n_q, n_k, dtype=torch.bool).tril(n_k - n_q), float("-inf"))
    torch.testing.assert_close(lse.double(), torch.logsumexp(scores, -1) / math.log(2), atol=1e-5, rtol=1e-6)
    got = gradients(lambda *t: kernels.cpu_attention_with_lse(*t, scale, p, s, causal)[0], q, k, v, grad)
    truth = gradients(lambda *t: masked_reference(*t, scale, causal, factors), q.double(), k.double(), v.double(),
                      grad.double())
    for name, g, t in zip("qkv", got, truth):
        torch.testing.assert_close(g.double(), t, atol=2e-5, rtol=1e-5, msg=lambda text, n=name: f"d{n}: {text}")


def test_causal_equals_sdpa_is_causal_on_a_segment():
    """A MiniLM-size decoder segment (511 positions, 12 heads of 2 vectors), inference and training kernel, as
    sdpa's is_causal computes it. Gradient entries sum up to 511 products: compared with the float64 truth, within
    1e-5 (sdpa's own fp32 gradients are 1-2e-6 from it; a wrong or missing weight moves entries by 1e-3 and more)."""
    dim = 2 * W
    q, k, v = (heads(1, 12, 511, dim, s) for s in range(3))
    want = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=dim**-0.5).transpose(1, 2)
    torch.testing.assert_close(kernels.cpu_attention(q, k, v, dim**-0.5, True), want, atol=2e-6, rtol=1e-5)
    grad = torch.randn(1, 511, 12, dim)
    got = gradients(lambda *t: kernels.cpu_attention_with_lse(*t, dim**-0.5, 0.0, None, True)[0], q, k, v, grad)
    fp32 = gradients(lambda *t: F.scaled_dot_product_attention(*t, is_causal=True, scale=dim**-0.5).transpose(1, 2),
                     q, k, v, grad)
    truth = gradients(lambda *t: masked_reference(*t, dim**-0.5, causal=True), q.double(), k.double(), v.double(),
                      grad.double())
    for name, g, f, t in zip("qkv", got, fp32, truth):
        got_err, sdpa_err = (g.double() - t).abs().max().item(), (f.double() - t).abs().max().item()
        assert got_err <= 1e-5, (name, got_err, sdpa_err)


def test_dropout_keeps_one_minus_p_of_the_weights_independently():
    """The hash's keep mask: the kept fraction is 1 - p overall, per query row and per key on average, and masks of
    two seeds, or of two neighbouring rows, agree no more than chance (p^2 + (1 - p)^2)."""
    p = 0.1
    kept = kernels.dropout_mask(p, seed(3), 2, 4, 256, 256) > 0  # (batch, heads, n_q, n_k), 524,288 weights
    assert abs(kept.float().mean().item() - (1 - p)) < 0.003  # 7 standard deviations
    assert (kept.float().mean(-1) - (1 - p)).abs().max() < 0.12  # rows of 256: 6.5 standard deviations
    factors = kernels.dropout_mask(p, seed(3), 2, 4, 256, 256).unique()
    assert len(factors) == 2 and factors[0] == 0 and factors[1].item() == pytest.approx(1 / (1 - p))
    chance = p**2 + (1 - p) ** 2
    other = kernels.dropout_mask(p, seed(4), 2, 4, 256, 256) > 0
    assert abs((kept == other).float().mean().item() - chance) < 0.005
    assert abs((kept[..., 1:, :] == kept[..., :-1, :]).float().mean().item() - chance) < 0.005
    assert abs((kept[..., 1:] == kept[..., :-1]).float().mean().item() - chance) < 0.005


def test_dropout_is_reproducible_and_unbiased():
    """One seed gives the same output twice, another a different one; over many seeds the mean output is the
    undropped one (the kept weights' 1 / (1 - p))."""
    dim, scale, p = W, 0.3, 0.2
    q, k, v = heads(1, 2, 12, dim, 0), heads(1, 2, 20, dim, 1), heads(1, 2, 20, dim, 2)
    first = kernels.cpu_attention_with_lse(q, k, v, scale, p, seed(11))[0]
    assert torch.equal(first, kernels.cpu_attention_with_lse(q, k, v, scale, p, seed(11))[0])
    assert not torch.equal(first, kernels.cpu_attention_with_lse(q, k, v, scale, p, seed(12))[0])
    runs = torch.stack([kernels.cpu_attention_with_lse(q, k, v, scale, p, seed(n))[0] for n in range(1000)])
    plain = kernels.cpu_attention(q, k, v, scale)
    # Within 5 standard errors of the mean, entry by entry (384 entries); a bias of the keep scale or of the kept
    # fraction by 1% moves every entry by 1% of its value, tens of standard errors for most of them.
    error = (runs.mean(0) - plain).abs() / (runs.std(0) / 1000**0.5)
    assert error.max() < 5, error.max()


def test_attention_draws_its_dropout_seed_from_torch():
    """torch.manual_seed makes a training attention's dropped weights reproducible; each call draws a fresh seed."""
    q, k, v = (heads(1, 2, 24, 2 * W, s).requires_grad_() for s in range(3))
    module = Attention(is_causal=False).train()

    def run():
        return kernels.fused_training_attention(module, q, k, v, None, dropout=0.1, scaling=0.3)[0]

    torch.manual_seed(0)
    first, second = run(), run()
    torch.manual_seed(0)
    assert torch.equal(run(), first) and not torch.equal(first, second)


class Attention(torch.nn.Module):
    def __init__(self, is_causal):
        super().__init__()
        self.is_causal = is_causal


@pytest.fixture
def calls(monkeypatch):
    """Which kernel fused attention ran, call by call: "inference" (`cpu_attention`) or "grad"
    (`cpu_attention_with_lse`)."""
    seen = []
    for name, kind in (("cpu_attention", "inference"), ("cpu_attention_with_lse", "grad")):
        real = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, real=real, kind=kind: seen.append(kind) or real(*a))
    return seen


@pytest.mark.parametrize("grad", [False, True], ids=["no grad", "grad"])
@pytest.mark.parametrize("case", ["plain", "causal", "dropout", "padding mask", "causal, fewer queries", "float64",
                                  "odd head dim"])
@pytest.mark.parametrize("impl", [kernels.FUSED_IMPL, kernels.TRAINING_IMPL])
def test_attention_takes_the_kernel_only_where_it_applies(impl, case, grad, calls):
    """FUSED_IMPL runs the kernel in inference and training, TRAINING_IMPL only where a gradient is to come (dropped
    weights in inference: the kernel that drops, `cpu_attention_with_lse`); a mask, a causal attention with fewer
    queries than keys, another dtype or head size go to sdpa."""
    dim = 2 * W
    q, k, v = (heads(1, 2, 24, 3 * W if case == "odd head dim" else dim, s) for s in range(3))
    if case == "causal, fewer queries":
        k, v = heads(1, 2, 30, dim, 1), heads(1, 2, 30, dim, 2)
    if case == "float64":
        q, k, v = q.double(), k.double(), v.double()
    mask = None
    if case == "padding mask":
        mask = torch.ones(1, 1, 24, 24, dtype=torch.bool)
        mask[..., 20:] = False
    causal = case.startswith("causal")
    module = Attention(is_causal=causal).train(case == "dropout")
    attention = kernels.fused_attention if impl == kernels.FUSED_IMPL else kernels.fused_training_attention
    with torch.set_grad_enabled(grad):
        if grad:
            q.requires_grad_()
        out, _ = attention(module, q, k, v, mask, dropout=0.1 if case == "dropout" else 0.0, scaling=0.3)
    kernel_serves = case in ("plain", "causal", "dropout") and (grad or impl == kernels.FUSED_IMPL)
    kind = "grad" if grad or case == "dropout" else "inference"
    assert calls == ([kind] if kernel_serves else [])
    if case != "dropout":  # dropout: random weights, compared with a reference from the same mask elsewhere
        want = F.scaled_dot_product_attention(q, k[:, :, :24] if causal else k, v[:, :, :24] if causal else v,
                                              attn_mask=mask, is_causal=causal, scale=0.3)
        torch.testing.assert_close(out, want.transpose(1, 2), atol=2e-6, rtol=1e-5)
    if grad:  # the graph reaches q either way
        out.sum().backward()
        assert q.grad is not None


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-gpt2"])
def test_an_rmt_runs_sdpa_in_inference_and_the_kernel_in_training(name, calls):
    """The whole RMT, eager, in its own attention (TRAINING_IMPL), encoder and decoder (causal) layouts: inference
    is sdpa's; with FUSED_IMPL, full segments go through the kernel and the padded last one through sdpa. A
    training step takes the kernel on full segments, with dropout off the gradients of the same model running
    sdpa, with dropout on reproducibly under torch.manual_seed."""
    model = tiny(name).eval()  # eval: no dropout, so the numbers can be compared with sdpa's
    assert model.cell.model.config._attn_implementation == kernels.TRAINING_IMPL
    with_sdpa = copy.deepcopy(model)
    with_sdpa.cell.model.set_attn_implementation("sdpa")
    ids = tokens(2, 40)  # 16 + 16 + 8
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, 36:] = False  # the last segment: 8 tokens and 4
    layers = model.cell.model.config.num_hidden_layers
    with torch.inference_mode():
        want = with_sdpa(ids, mask)
        assert torch.equal(model(ids, mask).logits, want.logits) and calls == []
        model.cell.model.set_attn_implementation(kernels.FUSED_IMPL)
        got = model(ids, mask)
    assert calls == ["inference"] * 2 * layers  # two full segments per layer
    torch.testing.assert_close(got.memory, want.memory, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.logits, want.logits, atol=1e-5, rtol=1e-5)
    calls.clear()
    model.cell.model.set_attn_implementation(kernels.TRAINING_IMPL)
    labels = torch.tensor([1, 4])
    for m in (model, with_sdpa):
        m(ids, mask, labels=labels).loss.backward()
    assert calls == ["grad"] * 2 * layers
    for (param, p), q in zip(model.named_parameters(), with_sdpa.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=lambda text, n=param: f"{n}: {text}")
    calls.clear()
    model.train()  # the backbones' own dropout, attention's included
    losses = []
    for _ in range(2):
        torch.manual_seed(0)
        losses.append(model(ids, mask, labels=labels).loss)
    assert calls == ["grad"] * 2 * 2 * layers and torch.equal(*losses) and torch.isfinite(losses[0])


def test_sdpa_serves_where_the_kernel_cannot_be_built(monkeypatch, calls, caplog):
    def fail():
        raise RuntimeError("could not build the CPU attention kernel")

    monkeypatch.setattr(kernels, "extension", fail)
    monkeypatch.setattr(kernels, "_built", None)
    q, k, v = (heads(1, 2, 24, 2 * W, s).requires_grad_() for s in range(3))
    out, _ = kernels.fused_training_attention(Attention(is_causal=False).eval(), q, k, v, None, scaling=0.3)
    assert calls == [] and kernels._built is False and "sdpa serves" in caplog.text
    want = F.scaled_dot_product_attention(q, k, v, scale=0.3).transpose(1, 2)
    torch.testing.assert_close(out, want, atol=0, rtol=0)


def test_torch_compile_keeps_the_kernel_and_its_backward_as_one_op_each():
    """A training step's graphs as torch.compile traces them (aot_eager: traced, then run as traced)."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    graphs = {}

    def keep(kind):
        def compiler(gm, example_inputs):
            graphs[kind] = [n.target for n in gm.graph.nodes if n.op == "call_function"]
            return make_boxed_func(gm.forward)

        return compiler

    module = Attention(is_causal=False).eval()

    def step(q, k, v):
        return kernels.fused_training_attention(module, q, k, v, None, scaling=0.3)[0]

    compiled = torch.compile(step, backend=aot_autograd(fw_compiler=keep("forward"), bw_compiler=keep("backward")),
                             fullgraph=True)
    q, k, v = (heads(1, 2, 24, 2 * W, s) for s in range(3))
    grad = torch.randn(1, 24, 2, 2 * W)
    got, want = gradients(compiled, q, k, v, grad), gradients(step, q, k, v, grad)
    assert torch.ops.rmt_lab.cpu_attention_with_lse.default in graphs["forward"]
    assert torch.ops.rmt_lab.cpu_attention_backward.default in graphs["backward"]
    for g, w in zip(got, want):
        assert torch.equal(g, w)
