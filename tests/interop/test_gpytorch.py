"""nntk_array.interop.gpytorch: the kernels equal nk.ntk / nk.nntk (the low-rank operators
R Rᵀ too), and an ExactGP with them predicts and scores as the closed forms say."""

from __future__ import annotations

import math

import numpy as np
import pytest

import nntk_array as nk
from nntk_array.interop import _kernel

pytest.importorskip("gpytorch")  # and torch, linear_operator, which it needs
import gpytorch
import torch
from linear_operator.operators import LowRankRootLinearOperator, MatmulLinearOperator

from nntk_array.interop.gpytorch import NNTKKernel, NTKKernel

pytestmark = pytest.mark.backend("torch")

OPTS = {"sigma": 0.3, "samples": 16, "seed": 3}
ROOTED = ["sketch", "plugin", "directional"]


def inputs(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(0)
    x = torch.asarray(rng.uniform(-1.0, 1.0, (30, 2)), dtype=dtype)
    return x, torch.asarray(rng.uniform(-1.0, 1.0, (12, 2)), dtype=dtype)


def sign_net(dtype: torch.dtype = torch.float64) -> tuple[nk.MLP, torch.Tensor]:
    model = nk.MLP(2, (32,), activation="sign")
    return model, model.init(0, xp=torch, dtype=dtype)


def torch_net(dtype: torch.dtype) -> nk.models.TorchModel:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    return nk.from_torch(net.to(dtype))


def rtol(dtype: torch.dtype) -> float:
    return 1e-5 if dtype == torch.float32 else 1e-12


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ntk_kernel_is_nk_ntk(dtype):
    model = torch_net(dtype)
    kernel = NTKKernel(model, model.theta0)
    x, x_test = inputs(dtype)
    k = kernel(x).to_dense()
    assert k.dtype == dtype and k.shape == (30, 30)
    torch.testing.assert_close(k, nk.ntk(model, model.theta0, x), rtol=0, atol=0)
    cross = kernel(x_test, x).to_dense()
    torch.testing.assert_close(cross, nk.ntk(model, model.theta0, x_test, x), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    ("estimator", "low_rank"),
    [("unbiased", False)] + [(e, r) for e in ROOTED for r in (False, True)],  # no root: unbiased
)
def test_nntk_kernel_is_nk_nntk(dtype, estimator, low_rank):
    model, theta = sign_net(dtype)
    kernel = NNTKKernel(model, theta, estimator=estimator, low_rank=low_rank, **OPTS)
    x, x_test = inputs(dtype)
    want = nk.nntk(model, theta, x, estimator=estimator, **OPTS)
    k = kernel(x).evaluate_kernel()
    cross = kernel(x_test, x).evaluate_kernel()
    if low_rank:  # sketch, directional: rank M = 16; plugin: rank P = 129
        assert isinstance(k, LowRankRootLinearOperator)
        assert isinstance(cross, MatmulLinearOperator)
        assert k.root.shape == (30, 129 if estimator == "plugin" else 16)
    tol = {"rtol": rtol(dtype), "atol": rtol(dtype) * float(want.abs().max())}
    torch.testing.assert_close(k.to_dense(), want, **(tol if low_rank else {"rtol": 0, "atol": 0}))
    torch.testing.assert_close(
        cross.to_dense(), nk.nntk(model, theta, x_test, x, estimator=estimator, **OPTS), **tol
    )
    torch.testing.assert_close(kernel(x, diag=True), torch.diagonal(want), **tol)


@pytest.mark.parametrize("sampling", ["orthogonal", "qmc"])
def test_low_rank_with_structured_directions(sampling):
    model, theta = sign_net()
    estimator = nk.Estimator("plugin", sampling=sampling)
    kernel = NNTKKernel(model, theta, estimator=estimator, low_rank=True, **OPTS)
    x, _ = inputs(torch.float64)
    want = nk.nntk(model, theta, x, estimator=estimator, **OPTS)
    torch.testing.assert_close(kernel(x).to_dense(), want, rtol=1e-12, atol=1e-12)


def test_diag_in_blocks_is_the_diagonal(monkeypatch):
    monkeypatch.setattr(_kernel, "DIAG_ROWS", 7)  # five blocks, the last one short
    model = torch_net(torch.float64)
    kernel = NTKKernel(model, model.theta0)
    x, _ = inputs(torch.float64)
    torch.testing.assert_close(kernel(x, diag=True), torch.diagonal(kernel(x).to_dense()))


class GP(gpytorch.models.ExactGP):
    def __init__(self, x, y, likelihood, kernel):
        super().__init__(x, y, likelihood)
        self.mean = gpytorch.means.ZeroMean()
        self.kernel = kernel

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean(x), self.kernel(x))


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(
            lambda: NTKKernel(torch_net(torch.float64), torch_net(torch.float64).theta0), id="ntk"
        ),
        pytest.param(lambda: NNTKKernel(*sign_net(), estimator="sketch", **OPTS), id="nntk"),
        pytest.param(
            lambda: NNTKKernel(*sign_net(), estimator="sketch", low_rank=True, **OPTS),
            id="nntk-low-rank",
        ),
    ],
)
def test_exact_gp_is_the_closed_form(make):
    kernel = make()
    x, x_test = inputs(torch.float64)
    y = torch.sign(x[:, 0]) + 0.5 * x[:, 1]
    likelihood = gpytorch.likelihoods.GaussianLikelihood().double()
    likelihood.noise = 1e-2
    gp = GP(x, y, likelihood, kernel).double()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, gp)

    gp.train(), likelihood.train()
    loss = -mll(gp(x), y)
    loss.backward()  # the noise is trainable; the network kernel is constant
    k = kernel(x).to_dense() + likelihood.noise * torch.eye(30, dtype=torch.float64)
    want = -torch.distributions.MultivariateNormal(torch.zeros(30, dtype=k.dtype), k).log_prob(y)
    torch.testing.assert_close(loss, want / 30, rtol=1e-8, atol=0)

    gp.eval(), likelihood.eval()
    with torch.no_grad():
        pred = gp(x_test)
    k_star = kernel(x_test, x).to_dense()
    mean = k_star @ torch.linalg.solve(k, y)
    var = kernel(x_test, diag=True) - torch.sum(k_star * torch.linalg.solve(k, k_star.T).T, dim=1)
    torch.testing.assert_close(pred.mean, mean, rtol=1e-7, atol=1e-8)
    torch.testing.assert_close(pred.variance, var, rtol=1e-6, atol=1e-8)


def test_exact_gp_trains_its_noise():
    kernel = NNTKKernel(*sign_net(), estimator="sketch", low_rank=True, **OPTS)
    x, _ = inputs(torch.float64)
    y = torch.sign(x[:, 0]) + 0.5 * x[:, 1]
    likelihood = gpytorch.likelihoods.GaussianLikelihood().double()
    gp = GP(x, y, likelihood, kernel).double()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, gp)
    optimizer = torch.optim.Adam(gp.parameters(), lr=0.1)
    assert {name for name, _ in gp.named_parameters()} == {"likelihood.noise_covar.raw_noise"}
    gp.train(), likelihood.train()
    losses = []
    for _ in range(10):
        optimizer.zero_grad()
        loss = -mll(gp(x), y)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] and math.isfinite(losses[-1])


def test_bad_arguments_are_named():
    model, theta = sign_net()
    with pytest.raises(TypeError, match="`params`"):
        NTKKernel(model, theta.numpy())
    with pytest.raises(ValueError, match="`params`"):
        NTKKernel(model, theta[:-1])
    with pytest.raises(TypeError, match="`seed`"):
        NNTKKernel(model, theta, sigma=0.3, samples=8, seed=None)
    with pytest.raises(ValueError, match="`low_rank=True`"):
        NNTKKernel(model, theta, sigma=0.3, samples=8, low_rank=True)
    with pytest.raises(TypeError, match="`low_rank`"):
        NNTKKernel(model, theta, sigma=0.3, samples=8, estimator="sketch", low_rank="yes")
    kernel = NTKKernel(model, theta)
    x, _ = inputs(torch.float64)
    with pytest.raises(TypeError, match="`x1`"):
        kernel(x.float()).to_dense()
    with pytest.raises(ValueError, match="`x1`"):
        kernel(x.expand(2, 30, 2)).to_dense()
    with pytest.raises(ValueError, match="last_dim_is_batch"):
        kernel.forward(x, x, last_dim_is_batch=True)
