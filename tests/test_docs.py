"""The documentation's code runs: every top-level ```python block of the Markdown pages in
``docs/``, page by page (blocks of one page share a namespace, as a reader's session does).

Indented blocks (inside lists) show configuration for machines CI does not have (batch
schedulers, Kubernetes) and are not run. Pages for a library that is not installed skip.

Running is not enough: ``CHECKS`` says, per page, what the page's results must be (closed-form
kernels of the page's networks, the exact Gaussian-smoothed kernel of ``tests/_reference.py``
within the estimate's standard errors, NumPy's solvers, the in-memory kernel for the Dask
page), and a page with code but no entry fails. The torch, JAX and CuPy pages count under
their library (``pytest.mark.backend``); the Dask page starts a LocalCluster and is ``slow``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
NEEDS = {  # page -> modules it imports that are optional
    "getting-started/cupy.md": ("cupy",),
    "getting-started/pytorch.md": ("torch",),
    "getting-started/jax.md": ("jax",),
    "distributed.md": ("dask", "distributed"),
    "examples/cnn-digits.md": ("torch", "jax", "flax", "equinox", "sklearn"),
    "examples/transformer.md": ("torch", "jax", "flax", "equinox"),
    "examples/nondifferentiable.md": ("torch",),
    "guide/kernels-out.md": ("torch", "sklearn", "gpytorch"),
}
PAGES = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md") if "_build" not in p.parts)


LIBRARY = {  # page -> the one array library it is about: counted under it (conftest)
    "getting-started/cupy.md": "cupy",
    "getting-started/pytorch.md": "torch",
    "getting-started/jax.md": "jax",
    "examples/nondifferentiable.md": "torch",
    "guide/kernels-out.md": "torch",
}
SLOW = {"distributed.md"}  # starts a Dask LocalCluster for a 2000 x 2000 kernel


def _page_param(page: str) -> object:
    marks = [pytest.mark.backend(LIBRARY[page])] if page in LIBRARY else []
    if page in SLOW:
        marks.append(pytest.mark.slow)
    return pytest.param(page, marks=marks, id=page)


def _np() -> object:
    return pytest.importorskip("numpy")


def _one_hidden_ntk(theta: object, x1: object, x2: object, width: int, act: str) -> object:
    """Local NTK of nk.MLP(d, (width,), 1, act) in NTK parameterization with biases:
    Σ_j [v_j² φ'(z_j) φ'(z'_j) (x·x'/d + 1) + φ(z_j) φ(z'_j)] / width + 1 (output bias)."""
    np = _np()
    theta, x1, x2 = (np.asarray(a, dtype=np.float64) for a in (theta, x1, x2))
    d = x1.shape[1]
    w, b = theta[: d * width].reshape(d, width), theta[d * width : (d + 1) * width]
    v = theta[(d + 1) * width : (d + 2) * width]
    phi = {"relu": lambda z: np.maximum(z, 0.0), "sign": np.sign}[act]
    dphi = {"relu": lambda z: (z > 0).astype(np.float64), "sign": np.zeros_like}[act]
    z1, z2 = x1 @ w / np.sqrt(d) + b, x2 @ w / np.sqrt(d) + b
    first = ((dphi(z1) * v**2) @ dphi(z2).T) * (x1 @ x2.T / d + 1.0)
    return (first + phi(z1) @ phi(z2).T) / width + 1.0


def _tanh_ntk(theta: object, x: object) -> object:
    """f(θ, x) = tanh(w·x + b), θ = (w1, w2, b): ∇f = sech²(z) (x1, x2, 1)."""
    np = _np()
    theta, x = np.asarray(theta, dtype=np.float64), np.asarray(x, dtype=np.float64)
    s = 1.0 - np.tanh(x @ theta[:2] + theta[2]) ** 2
    return np.outer(s, s) * (x @ x.T + 1.0)


def _within(estimate: object, se: object, truth: object, slack: float = 0.0) -> None:
    """A Monte Carlo estimate within 5 of its standard errors (+ slack) of the truth."""
    np = _np()
    err = np.abs(np.asarray(estimate, dtype=np.float64) - truth)
    bound = 5.0 * np.asarray(se, dtype=np.float64) + slack + 1e-9 * np.abs(truth).max()
    assert np.all(err <= bound), f"max err/bound {np.max(err / bound):.2f}"


def _host(a: object) -> object:
    np = _np()
    return np.asarray(a.cpu() if hasattr(a, "cpu") else a, dtype=np.float64)


def _check_numpy(blocks: list[dict]) -> None:
    ns = blocks[0]
    np, nk = ns["np"], ns["nk"]
    model, theta, x = ns["model"], ns["theta"], ns["x"]
    want = _one_hidden_ntk(theta, x, x, 512, "relu")
    np.testing.assert_allclose(ns["K"], want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ns["K_cross"], want[:, :3], rtol=1e-12, atol=1e-12)
    assert ns["K_full"].shape == (8, 3, 1, 1)
    np.testing.assert_allclose(ns["K_full"][..., 0, 0], ns["K_cross"], rtol=1e-12)
    assert ns["y"].shape == (8, 1)
    ns = blocks[1]
    # The sign network: the local NTK sees the output layer only; the NNTK is within its
    # standard errors of the exact Gaussian-smoothed kernel of this finite network.
    ref = pytest.importorskip("tests._reference")
    sign_theta = ns["sign_net"].init(0, xp=np)
    np.testing.assert_allclose(ns["K_local"], _one_hidden_ntk(sign_theta, x, x, 512, "sign"))
    smoothed = ref.smoothed_one_hidden_ntk(ns["sign_net"], sign_theta, x, x, 0.3)
    _within(ns["K_nl"], ns["se"], smoothed)
    assert np.all(np.diag(smoothed) > np.diag(ns["K_local"]) + 0.5)  # the first layer's term
    # The quantized model: f = tanh(q(w) x + b), q rounding to multiples of 1/4. Its smoothed
    # gradient in closed form, with the Gaussian expectation over b by Gauss-Hermite:
    # ∂w: Σ_k φ_σ((k+½)/4 - w) E[tanh((k+1)/4 x + b') - tanh(k/4 x + b')],
    # ∂b: Σ_k P(q(w') = k/4) E[sech²(k/4 x + b')].
    ns = blocks[2]
    w0, b0 = ns["theta_q"]
    sigma, xs = 0.2, ns["x"][:, 0]
    nodes, weights = np.polynomial.hermite_e.hermegauss(60)
    weights = weights / weights.sum()
    bs = b0 + sigma * nodes  # b' = b + σ g
    ks = np.arange(-40, 41)
    levels = ks[:, None, None] / 4 * xs[None, :, None] + bs[None, None, :]  # (K, N, nodes)
    tanh_k = np.tanh(levels) @ weights  # E_b' tanh(k/4 x + b'), (K, N)
    sech_k = (1 - np.tanh(levels) ** 2) @ weights
    edges = (ks + 0.5) / 4
    dens = np.exp(-(((edges - w0) / sigma) ** 2) / 2) / (sigma * np.sqrt(2 * np.pi))
    erf = np.vectorize(pytest.importorskip("math").erf)
    cdf = 0.5 * (1 + erf((edges - w0) / (sigma * np.sqrt(2))))
    prob = np.diff(np.concatenate([[0.0], cdf]))  # P(q(w') = k/4), k = -40 .. 40
    d_w = (dens[:-1, None] * (tanh_k[1:] - tanh_k[:-1])).sum(0)
    d_b = (prob[:, None] * sech_k).sum(0)
    truth = np.stack([d_w, d_b], axis=1)  # (N, 2)
    quantized = ns["quantized"]
    g, g_se = nk.nonlocal_grad(
        lambda t: quantized(t, x),
        ns["theta_q"],
        sigma=0.2,
        samples=2048,
        seed=0,
        return_stderr=True,
    )
    np.testing.assert_allclose(ns["g"], g, rtol=1e-12)  # the page's estimate
    assert ns["g"].shape == (8, 2)
    _within(ns["g"], g_se, truth)
    k_q, k_se = nk.nntk(
        quantized, ns["theta_q"], x, sigma=0.2, samples=2048, seed=0, return_stderr=True
    )
    np.testing.assert_allclose(ns["K_q"], k_q, rtol=1e-12)
    _within(ns["K_q"], k_se, truth @ truth.T)
    # Kernel regression and gradient flow with the infinite-width NTK, against NumPy.
    ns = blocks[3]
    k, y = ns["K"], np.sign(ns["x_tr"][:, 0])
    k_tr, k_te = k[:32, :32], k[32:, :32]
    alpha = np.linalg.solve(k_tr + 1e-4 * np.trace(k_tr) / 32 * np.eye(32), y)
    np.testing.assert_allclose(ns["f_tr"], k_tr @ alpha, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ns["f_te"], k_te @ alpha, rtol=1e-6, atol=1e-8)
    vals, vecs = np.linalg.eigh(k_tr)
    flow = [vecs @ ((1 - np.exp(-t * vals)) * (vecs.T @ y)) for t in (0.1, 1.0, 10.0)]
    np.testing.assert_allclose(ns["f_t"], np.stack(flow), rtol=1e-6, atol=1e-8)
    assert model.num_params == theta.shape[0]
    np.testing.assert_allclose(k, k.T, rtol=1e-12)


def _check_autodiff_page(blocks: list[dict]) -> None:
    """Both blocks of the torch and JAX pages: an MLP's exact ReLU NTK, then a callable's."""
    _check_first_block(blocks[0])
    ns = blocks[1]
    np = _np()
    theta, x, k, k_nl = ns["theta"], ns["x"], ns["K"], ns["K_nl"]
    assert k.shape == k_nl.shape == (6, 6) and k.dtype == k_nl.dtype == theta.dtype
    np.testing.assert_allclose(_host(k), _tanh_ntk(_host(theta), _host(x)), rtol=1e-10)
    # σ = 0.05: the smoothing bias is O(σ²) of the kernel's scale; the rest is Monte Carlo.
    nk = ns["nk"]
    _, se = nk.nntk(ns["f"], theta, x, sigma=0.05, samples=4096, seed=0, return_stderr=True)
    _within(_host(k_nl), _host(se), _host(k), slack=0.01 * float(np.abs(_host(k)).max()))


def _check_first_block(ns: dict, width: int = 512) -> None:
    """The MLP blocks of the torch and JAX pages: the exact ReLU NTK of the network."""
    np = _np()
    model, theta, x = ns["model"], ns["theta"], ns["x"]
    assert model.num_params == theta.shape[0]
    single = "float32" in str(theta.dtype)
    np.testing.assert_allclose(
        _host(ns["K"]),
        _one_hidden_ntk(_host(theta), _host(x), _host(x), width, "relu"),
        rtol=1e-4 if single else 1e-10,
    )


def _check_attention(blocks: list[dict]) -> None:
    ns = blocks[-1]
    np = _np()
    for name in ("K_att", "K_loss"):
        k = ns[name]
        assert k.shape == (32, 32) and np.all(np.isfinite(k)) and not np.allclose(k, ns["K_fixed"])
        np.testing.assert_allclose(k, k.T, rtol=1e-10, atol=1e-12 * np.abs(k).max())
    z = np.exp(np.array([0.0, 1.0, 2.0]) / 2.0)
    np.testing.assert_allclose(ns["w"], [z / z.sum()], rtol=1e-12)
    np.testing.assert_allclose(ns["ess"], [1.0 / np.sum((z / z.sum()) ** 2)], rtol=1e-12)


def _check_nonlocal(blocks: list[dict]) -> None:
    ns = blocks[0]
    np, nk = ns["np"], ns["nk"]
    truth = 2 * np.exp(0.0) / np.sqrt(2 * np.pi) / 0.5  # 2 φ_σ(0): d/dθ E sign(θ + σg) at 0
    g, se = nk.nonlocal_grad(
        lambda t: np.sign(t[:, 0]),
        np.zeros(1),
        sigma=0.5,
        samples=10**5,
        seed=1,
        return_stderr=True,
    )
    np.testing.assert_allclose(ns["g"], g, rtol=1e-12)
    _within(ns["g"], se, np.array([truth]))
    ns = blocks[1]
    ref = pytest.importorskip("tests._reference")
    net, theta, x = ns["net"], ns["theta"], ns["x"]
    _within(ns["K_mc"], ns["se"], ref.smoothed_one_hidden_ntk(net, theta, x, x, 0.5))
    np.testing.assert_allclose(ns["K_local"], _one_hidden_ntk(theta, x, x, 1024, "sign"))
    # the Mathematics page's numbers for the infinite-width kernel (without the output bias's 1)
    np.testing.assert_allclose(ns["K_inf"][0] - 1, [1.4392, 1.1597, 0.4768, 0.0], atol=1e-4)


def _check_distributed(blocks: list[dict]) -> None:
    ns = blocks[0]
    np, nk = ns["np"], ns["nk"]
    diag, x = ns["diag"], ns["x"]
    assert diag.shape == (2000,) and np.all(np.isfinite(diag))
    head = np.asarray(x[:20].compute())  # the same seed: the same perturbations, in memory
    want = nk.nntk(ns["model"], ns["theta"], head, sigma=0.3, samples=512, seed=0)
    np.testing.assert_allclose(diag[:20], np.diag(want), rtol=1e-9)


CHECKS = {  # page -> what its results must be (oracles: closed forms, NumPy, the library)
    "getting-started/numpy.md": _check_numpy,
    "getting-started/pytorch.md": _check_autodiff_page,
    "getting-started/jax.md": _check_autodiff_page,
    "guide/attention.md": _check_attention,
    "guide/nonlocal-ntk.md": _check_nonlocal,
    "guide/ntk.md": lambda blocks: None,  # the page asserts its oracle itself
    "guide/gp.md": lambda blocks: None,  # asserts the posterior and limits itself
    "guide/models.md": lambda blocks: None,  # asserts the NNTK of its model against J Jᵀ
    "guide/options.md": lambda blocks: None,  # asserts specs == keywords and the Estimate
    "distributed.md": _check_distributed,
    # each example page asserts its own oracle: the hand-written torch.func kernel, the other
    # framework's kernel on the same weights, a vanishing local NTK
    "examples/cnn-digits.md": lambda blocks: None,
    "examples/transformer.md": lambda blocks: None,
    "examples/nondifferentiable.md": lambda blocks: None,
    "guide/kernels-out.md": lambda blocks: None,  # asserts the kernels equal nk.ntk / nk.nntk
    "guide/large-n.md": lambda blocks: None,  # asserts operator/factor ridge == dense ridge
    "guide/spectra.md": lambda blocks: None,  # the page asserts its own results
    "guide/training.md": lambda blocks: None,  # asserts the runs against gradient_flow
}


@pytest.mark.parametrize(
    "page", [_page_param(p) for p in PAGES if BLOCK.search((DOCS / p).read_text())]
)
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::ResourceWarning")
def test_page_code_runs(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for module in NEEDS.get(page, ()):
        pytest.importorskip(module)
    monkeypatch.chdir(tmp_path)  # pages may write files (figures)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    blocks = []  # the namespace after each block: later blocks rebind K, theta, x
    try:
        for i, code in enumerate(BLOCK.findall((DOCS / page).read_text())):
            exec(compile(code, f"{page}[block {i}]", "exec"), namespace)
            blocks.append(dict(namespace))
        CHECKS.get(page, _no_check)(blocks)
    finally:
        client = namespace.get("client")
        if client is not None and hasattr(client, "close"):
            cluster = getattr(client, "cluster", None)
            client.close()
            if cluster is not None:
                cluster.close()


def _no_check(blocks: list[dict]) -> None:
    raise AssertionError("a docs page with code needs an entry in CHECKS: what must it compute?")


README_MODELS = re.compile(
    r"<!-- readme-models[^\n]*\n```python\n(.*?)^```", re.MULTILINE | re.DOTALL
)


@pytest.mark.backend("torch")
def test_readme_model_quick_start_runs() -> None:
    """The README's PyTorch/flax quick start runs (its adapters are tested in tests/backends)."""
    for module in ("torch", "flax"):
        pytest.importorskip(module)
    readme = (DOCS.parent / "README.md").read_text()
    namespace: dict[str, object] = {"__name__": "__readme__"}
    exec(compile(README_MODELS.search(readme).group(1), "README.md", "exec"), namespace)
    np, K, K_nl, se = _np(), namespace["K"], namespace["K_nl"], namespace["se"]
    assert K.shape == (16, 16) and K_nl.shape == (16, 16)
    assert np.all(np.isfinite(np.asarray(se))) and np.all(np.asarray(se) > 0)
