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
    float64 truth, the fused one no further from it than twice torch's sdpa."""
    dim = 2 * W
    q, k, v = (heads(1, 12, length, dim, s) for s in range(3))
    grad = torch.randn(1, length, 12, dim)
    got, fp32 = gradients(kernel(dim**-0.5), q, k, v, grad), gradients(sdpa(dim**-0.5), q, k, v, grad)
    truth = gradients(sdpa(dim**-0.5), q.double(), k.double(), v.double(), grad.double())
    for name, g, f, t in zip("qkv", got, fp32, truth):
        got_err, sdpa_err = (g.double() - t).abs().max().item(), (f.double() - t).abs().max().item()
        assert got_err <= max(2 * sdpa_err, 2e-6), (name, got_err, sdpa_err)


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
@pytest.mark.parametrize("case", ["plain", "padding mask", "causal", "dropout", "float64", "odd head dim"])
@pytest.mark.parametrize("impl", [kernels.FUSED_IMPL, kernels.TRAINING_IMPL])
def test_attention_takes_the_kernel_only_where_it_applies(impl, case, grad, calls):
    """FUSED_IMPL runs the kernel in inference and training, TRAINING_IMPL only where a gradient is to come;
    a mask, a causal or dropping attention, another dtype or head size go to sdpa."""
    dim = 2 * W
    q, k, v = (heads(1, 2, 24, 3 * W if case == "odd head dim" else dim, s) for s in range(3))
    if case == "float64":
        q, k, v = q.double(), k.double(), v.double()
    mask = None
    if case == "padding mask":
        mask = torch.ones(1, 1, 24, 24, dtype=torch.bool)
        mask[..., 20:] = False
    module = Attention(is_causal=case == "causal").train(case == "dropout")
    attention = kernels.fused_attention if impl == kernels.FUSED_IMPL else kernels.fused_training_attention
    with torch.set_grad_enabled(grad):
        if grad:
            q.requires_grad_()
        out, _ = attention(module, q, k, v, mask, dropout=0.1 if case == "dropout" else 0.0, scaling=0.3)
    kernel_serves = case == "plain" and (grad or impl == kernels.FUSED_IMPL)
    assert calls == (["grad" if grad else "inference"] if kernel_serves else [])
    if case != "dropout":  # dropout: random weights, nothing to compare
        want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=case == "causal", scale=0.3)
        torch.testing.assert_close(out, want.transpose(1, 2), atol=2e-6, rtol=1e-5)
    if grad:  # the graph reaches q either way
        out.sum().backward()
        assert q.grad is not None


def test_an_rmt_runs_sdpa_in_inference_and_the_kernel_in_training(calls):
    """The whole RMT, eager, in its own attention (TRAINING_IMPL): inference is sdpa's; with FUSED_IMPL, full
    segments go through the kernel and the padded last one through sdpa. A training step (dropout off) takes
    the kernel on full segments, with the gradients of the same model running sdpa."""
    model = tiny("tiny-bert").eval()  # eval: no dropout, which the kernel does not compute
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
    for (name, p), q in zip(model.named_parameters(), with_sdpa.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=lambda text, n=name: f"{n}: {text}")


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
