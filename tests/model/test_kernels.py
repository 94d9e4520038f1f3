"""The fused CPU attention kernel (`rmt_lab.model.kernels`): equal to sdpa, and used only where it applies."""

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


class Attention(torch.nn.Module):
    def __init__(self, is_causal):
        super().__init__()
        self.is_causal = is_causal


@pytest.fixture
def calls(monkeypatch):
    """How many times fused_attention ran the kernel."""
    seen = []
    real = kernels.cpu_attention
    monkeypatch.setattr(kernels, "cpu_attention", lambda *a: seen.append(1) or real(*a))
    return seen


@pytest.mark.parametrize("case", ["kernel", "padding mask", "causal", "grad", "float64", "odd head dim"])
def test_fused_attention_takes_the_kernel_only_where_it_applies(case, calls):
    dim = 2 * W
    q, k, v = (heads(1, 2, 24, 3 * W if case == "odd head dim" else dim, s) for s in range(3))
    if case == "float64":
        q, k, v = q.double(), k.double(), v.double()
    mask = None
    if case == "padding mask":
        mask = torch.ones(1, 1, 24, 24, dtype=torch.bool)
        mask[..., 20:] = False
    module = Attention(is_causal=case == "causal").eval()
    with torch.set_grad_enabled(case == "grad"):
        if case == "grad":
            q.requires_grad_()
        out, _ = kernels.fused_attention(module, q, k, v, mask, scaling=0.3)
        want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=case == "causal", scale=0.3)
    assert len(calls) == (case == "kernel")
    torch.testing.assert_close(out, want.transpose(1, 2), atol=2e-6, rtol=1e-5)
    if case == "grad":  # sdpa's path keeps the graph
        out.sum().backward()
        assert q.grad is not None


def test_backbone_with_the_fused_attention_equals_sdpa(calls):
    """The whole RMT, eager: full segments through the kernel, the padded last one through sdpa."""
    model = tiny("tiny-bert")
    ids = tokens(2, 40)  # 16 + 16 + 8
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, 36:] = False  # the last segment: 8 tokens and 4
    with torch.inference_mode():
        want = model(ids, mask)
        model.cell.model.set_attn_implementation(kernels.FUSED_IMPL)
        got = model(ids, mask)
    assert len(calls) == 2 * model.cell.model.config.num_hidden_layers  # two full segments per layer
    torch.testing.assert_close(got.memory, want.memory, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.logits, want.logits, atol=1e-5, rtol=1e-5)
