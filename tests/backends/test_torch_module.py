"""nk.from_torch: a torch.nn.Module as a model, checked against torch.func by hand."""

from __future__ import annotations

import copy

import pytest

import nntk_array as nk

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.backend("torch")

DTYPES = pytest.mark.parametrize("dtype", ["float32", "float64"])
TOL = {"float32": 1e-5, "float64": 1e-12}


def _mlp(dtype: str, seed: int = 0, out: int = 2):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, out))
    return net.to(getattr(torch, dtype))


def _x(dtype: str, n: int = 5, d: int = 3):
    gen = torch.Generator().manual_seed(1)
    return torch.randn(n, d, generator=gen, dtype=getattr(torch, dtype))


def _jacobian(net, x, names=None):
    """(N, O, P) Jacobian w.r.t. the named parameters (all by default), by torch.func.jacrev."""
    named = {k: v.detach() for k, v in net.named_parameters()}
    names = list(named) if names is None else names
    rest = {k: v for k, v in named.items() if k not in names}

    def f(p):
        return torch.func.functional_call(net, {**rest, **p}, (x,)).reshape(x.shape[0], -1)

    jac = torch.func.jacrev(f)({k: named[k] for k in names})
    n, o = f({k: named[k] for k in names}).shape
    return torch.cat([jac[k].reshape(n, o, -1) for k in names], dim=-1)


def _kernel(jac):
    return torch.einsum("aip,bjp->abij", jac, jac)


@DTYPES
def test_ntk_matches_torch_func_reference(dtype):
    net, x = _mlp(dtype), _x(dtype)
    model = nk.from_torch(net)
    assert model.num_params == 3 * 8 + 8 + 8 * 2 + 2
    k = nk.ntk(model, model.theta0, x, outputs="full")
    torch.testing.assert_close(k, _kernel(_jacobian(net, x)), rtol=TOL[dtype], atol=TOL[dtype])
    mean = nk.ntk(model, model.theta0, x, x[:2])
    assert mean.shape == (5, 2)


@DTYPES
def test_nntk_matches_a_hand_written_callable(dtype):
    net, x = _mlp(dtype), _x(dtype)
    model = nk.from_torch(net)
    names = [k for k, _ in net.named_parameters()]

    def f(thetas, x):
        def one(t):
            return torch.func.functional_call(net, model.unflatten(t), (x,))

        return torch.func.vmap(one)(thetas)

    assert names == list(model.names)
    kw = {"sigma": 0.2, "samples": 64, "seed": 3, "outputs": "full"}
    k = nk.nntk(model, model.theta0, x, **kw)
    ref = nk.nntk(f, model.theta0, x, **kw)
    torch.testing.assert_close(k, ref, rtol=TOL[dtype], atol=TOL[dtype])


def test_theta0_unflatten_and_apply_shapes():
    net, x = _mlp("float64"), _x("float64")
    model = nk.from_torch(net)
    theta = model.theta0
    assert theta.dtype == torch.float64 and theta.shape == (model.num_params,)
    parts = model.unflatten(theta)
    for name, p in net.named_parameters():
        torch.testing.assert_close(parts[name], p.detach())
    before = net[0].bias.detach().clone()
    theta.add_(1.0)  # a copy: the module is untouched
    torch.testing.assert_close(net[0].bias.detach(), before)
    theta = model.theta0
    with torch.no_grad():
        expected = net(x)
    torch.testing.assert_close(model.apply(theta, x), expected)
    batched = model.apply(torch.stack([theta, 2 * theta]), x)
    assert batched.shape == (2, 5, 2)
    torch.testing.assert_close(batched[0], expected)
    scalar = nk.from_torch(torch.nn.Sequential(torch.nn.Linear(3, 1), torch.nn.Flatten(0)).double())
    assert scalar.apply(scalar.theta0[None, :], x).shape == (1, 5, 1)  # (N,) outputs: O = 1


def _bn_net():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(3, 8), torch.nn.BatchNorm1d(8), torch.nn.Tanh(), torch.nn.Linear(8, 1)
    ).double()
    with torch.no_grad():  # running statistics away from their initial values
        for _ in range(3):
            net(3.0 * torch.randn(16, 3, dtype=torch.float64) + 1.0)
    return net


def test_buffers_are_constants_in_eval_mode():
    net, x = _bn_net(), _x("float64")
    net.train()  # the module's own mode, restored after every call
    buffers = {k: v.clone() for k, v in net.named_buffers()}
    model = nk.from_torch(net)
    assert model.num_params == 3 * 8 + 8 + 8 + 8 + 8 + 1
    ref = copy.deepcopy(net).eval()
    with torch.no_grad():
        expected = ref(x)
    torch.testing.assert_close(model.apply(model.theta0, x), expected)
    nk.ntk(model, model.theta0, x)
    nk.nntk(model, model.theta0, x, sigma=0.1, samples=8, seed=0)
    for k, v in net.named_buffers():
        torch.testing.assert_close(v, buffers[k])
    assert net.training and all(m.training for m in net.modules())
    torch.testing.assert_close(
        nk.ntk(model, model.theta0, x, outputs="full"),
        _kernel(_jacobian(ref, x)),
        rtol=1e-12,
        atol=1e-12,
    )


def test_train_flag_uses_batch_statistics_without_updating_buffers():
    net, x = _bn_net(), _x("float64")
    net.eval()
    buffers = {k: v.clone() for k, v in net.named_buffers()}
    model = nk.from_torch(net, train=True)
    ref = copy.deepcopy(net).train()
    with torch.no_grad():
        expected = ref(x)  # batch statistics (this copy's running statistics move)
        eval_out = copy.deepcopy(net).eval()(x)
    out = model.apply(model.theta0, x)
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out, eval_out)
    nk.nntk(model, model.theta0, x, sigma=0.1, samples=8, seed=0)
    nk.ntk(model, model.theta0, x)
    for k, v in net.named_buffers():
        torch.testing.assert_close(v, buffers[k])
    assert not any(m.training for m in net.modules())  # the module's own mode, restored
    assert all(m.track_running_stats for m in net.modules() if hasattr(m, "track_running_stats"))


def test_params_selects_a_subset():
    net, x = _mlp("float64"), _x("float64")
    model = nk.from_torch(net, params=["2.weight", "0.bias"])
    assert model.names == ("0.bias", "2.weight")  # the module's order
    assert model.num_params == 8 + 16
    k = nk.ntk(model, model.theta0, x, outputs="full")
    ref = _kernel(_jacobian(net, x, ["0.bias", "2.weight"]))
    torch.testing.assert_close(k, ref, rtol=1e-12, atol=1e-12)
    net[2].bias.requires_grad_(False)
    assert nk.from_torch(net).names == ("0.weight", "0.bias", "2.weight")


def test_jvp_equals_jacobian_times_tangents():
    net, x = _mlp("float64"), _x("float64")
    model = nk.from_torch(net)
    gen = torch.Generator().manual_seed(2)
    v = torch.randn(4, model.num_params, generator=gen, dtype=torch.float64)
    out = model.jvp(model.theta0, x, v)
    assert out.shape == (4, 5, 2)
    ref = torch.einsum("nop,kp->kno", _jacobian(net, x), v)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


class _SignNet(torch.nn.Module):
    """1 → 64 → 1 with sign activations in the NTK parametrization (standard normal θ)."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.hidden = torch.nn.Linear(1, width)
        self.readout = torch.nn.Linear(width, 1)
        for p in self.parameters():
            torch.nn.init.normal_(p)
        self.scale = width**-0.5

    def forward(self, x):
        return self.readout(self.scale * torch.sign(self.hidden(x)))


def test_sign_network_nonlocal_kernel_has_a_first_layer_term():
    torch.manual_seed(5)
    net = _SignNet().double()
    x = torch.linspace(-1.0, 1.0, 5, dtype=torch.float64)[:, None]
    model = nk.from_torch(net)
    readout = nk.from_torch(net, params=["readout.weight", "readout.bias"])
    local = nk.ntk(model, model.theta0, x)
    readout_only = nk.ntk(readout, readout.theta0, x)
    torch.testing.assert_close(local, readout_only, rtol=1e-12, atol=1e-12)  # sign' = 0
    h = torch.sign(net.hidden(x)).detach()
    torch.testing.assert_close(readout_only, h @ h.T / 64 + 1.0)
    # the first layer's term: zero locally, not under the nonlocal kernel (its readout
    # block is smoothed too, so the full kernel minus the local readout term is no measure)
    hidden = nk.from_torch(net, params=["hidden.weight", "hidden.bias"])
    assert torch.all(nk.ntk(hidden, hidden.theta0, x) == 0)
    first = nk.nntk(hidden, hidden.theta0, x, sigma=0.3, samples=2000, seed=8)
    k = nk.nntk(model, model.theta0, x, sigma=0.3, samples=2000, seed=8)
    assert torch.all(torch.diagonal(first) > 0.1 * torch.diagonal(k))


def test_bad_arguments():
    net, x = _mlp("float32"), _x("float32")
    model = nk.from_torch(net)
    theta = model.theta0
    with pytest.raises(ValueError, match=r"`theta` must have shape \(P,\) or \(B, P\) with P = 50"):
        model.apply(theta[:-1], x)
    with pytest.raises(ValueError, match=r"`theta` must have shape \(50,\)"):
        nk.ntk(model, theta[:-1], x)
    with pytest.raises(TypeError, match=r"`x` must be a torch.Tensor; got ndarray"):
        model.apply(theta, x.numpy())
    with pytest.raises(
        TypeError, match=r"`x` must have the module parameters' dtype torch.float32"
    ):
        model.apply(theta, x.double())
    with pytest.raises(TypeError, match="`x1` must have the module parameters' dtype"):
        nk.ntk(model, theta, x.double())
    with pytest.raises(TypeError, match="`theta` must have the module parameters' dtype"):
        model.apply(theta.double(), x)
    with pytest.raises(TypeError, match=r"`theta` must be a torch.Tensor"):
        model.apply(theta.tolist(), x)
    with pytest.raises(TypeError, match=r"`module` must be a torch.nn.Module; got function"):
        nk.from_torch(lambda t, x: x)
    with pytest.raises(ValueError, match=r"parameters the module does not have: \['nope'\]"):
        nk.from_torch(net, params=["nope"])
    with pytest.raises(TypeError, match="not a string"):
        nk.from_torch(net, params="0.weight")
    with pytest.raises(ValueError, match="θ is empty"):
        nk.from_torch(net, params=[])


class _AttentionNet(torch.nn.Module):
    """nn.MultiheadAttention + LayerNorm on (N, 4, 6) sequences, mean-pooled to one output."""

    def __init__(self):
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(6, 2, batch_first=True)
        self.norm = torch.nn.LayerNorm(6)
        self.readout = torch.nn.Linear(6, 1)

    def forward(self, x):
        h = self.norm(x + self.attn(x, x, x, need_weights=False)[0])
        return self.readout(h.mean(dim=1))


def test_multihead_attention_in_eval_mode():
    # Regression: in eval mode nn.MultiheadAttention took its fused fast path under
    # torch.func (no derivative: nk.ntk raised), and the fused scaled_dot_product_attention
    # kernels have no vmap rule (a warning, a per-sample loop) and no forward-mode AD (jvp
    # raised). The adapter runs the composite kernels and restores the global flag.
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    net = _AttentionNet().double().eval()
    x = torch.randn(5, 4, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    model = nk.from_torch(net)
    with sdpa_kernel(SDPBackend.MATH):  # the reference needs the composite kernel too
        jac = _jacobian(net, x)
    k = nk.ntk(model, model.theta0, x, outputs="full")
    torch.testing.assert_close(k, _kernel(jac), rtol=1e-12, atol=1e-12)
    v = torch.randn(3, model.num_params, generator=torch.Generator().manual_seed(2)).double()
    ref = torch.einsum("nop,kp->kno", jac, v)
    torch.testing.assert_close(model.jvp(model.theta0, x, v), ref, rtol=1e-12, atol=1e-12)
    k_nl = nk.nntk(model, model.theta0, x, sigma=0.1, samples=64, seed=0)
    assert k_nl.shape == (5, 5) and torch.all(torch.isfinite(k_nl))
    assert torch.backends.mha.get_fastpath_enabled()
