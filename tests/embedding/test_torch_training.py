"""Track the NTK and the NNTK of a network while PyTorch trains it.

``model.apply(theta, x)`` is array-API code, so with ``theta`` a torch leaf tensor that
requires grad, autograd and any ``torch.optim`` optimizer train the network as usual. Every
few steps, ``nk.ntk`` / ``nk.nntk`` on ``theta.detach()`` give the kernel at the current
parameters, outside the autograd graph.

What the tracked kernels show:

* lazy training: a wide ReLU network's NTK barely moves while its loss falls, and the
  relative change shrinks like 1/sqrt(width);
* the NNTK is a Monte Carlo estimate with standard errors (``return_stderr=True``); for a
  ReLU network and a small σ it estimates the NTK, and it stays within its error of the NTK
  at every step of training;
* a sign network's local NTK is frozen: sign' = 0, so autograd trains only the output layer,
  and the local NTK does not depend on it. That blind spot is what the nonlocal NTK is for.
"""

from __future__ import annotations

import pytest

import nntk_array as nk

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.backend("torch")

X = torch.linspace(-1.0, 1.0, 16, dtype=torch.float64)[:, None]


def train(model, y, *, seed, steps, track, lr=0.5, every=50):
    """Full-batch gradient descent on ½ mean (f(x) - y)² with torch autograd.

    Every ``every`` steps, ``track[name](theta)`` is called on the detached parameters.
    Returns the final parameters, the losses and, for each name, the tracked values.
    """
    theta = model.init(seed, xp=torch, dtype=torch.float64).requires_grad_()
    optimizer = torch.optim.SGD([theta], lr=lr)
    losses, tracked = [], {name: [] for name in track}
    for step in range(steps + 1):
        if step % every == 0:
            for name, kernel in track.items():
                tracked[name].append(kernel(theta.detach()))
        if step == steps:
            break
        optimizer.zero_grad()
        loss = 0.5 * torch.mean((model.apply(theta, X)[:, 0] - y) ** 2)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return theta.detach(), losses, tracked


def relative_change(kernels):
    return (torch.linalg.norm(kernels[-1] - kernels[0]) / torch.linalg.norm(kernels[0])).item()


def test_wide_relu_network_trains_lazily():
    y = torch.sin(3.0 * X[:, 0])
    change = {}
    for width in (64, 1024):
        model = nk.MLP(1, (width,), 1, activation="relu")
        track = {"ntk": lambda theta, model=model: nk.ntk(model, theta, X)}
        _, losses, tracked = train(model, y, seed=0, steps=200, track=track)
        assert losses[-1] < losses[0] / 2
        change[width] = relative_change(tracked["ntk"])
    # theory: the change scales like 1/sqrt(width), a factor sqrt(1024 / 64) = 4; ask for 2
    assert change[1024] < change[64] / 2, change


def test_nntk_tracks_the_ntk_within_its_standard_error():
    model = nk.MLP(1, (64,), 1, activation="relu")
    y = torch.sin(3.0 * X[:, 0])
    track = {
        "ntk": lambda theta: nk.ntk(model, theta, X),
        # the plain estimator, whose noise hides the σ-smoothing bias (the reduced one's
        # standard error is small enough to resolve it)
        "nntk": lambda theta: nk.nntk(
            model,
            theta,
            X,
            sigma=0.05,
            samples=1024,
            seed=0,
            return_stderr=True,
            variance_reduction="none",
        ),
    }
    _, losses, tracked = train(model, y, seed=0, steps=200, track=track)

    assert losses[-1] < losses[0] / 2
    for k, (k_nonlocal, stderr) in zip(tracked["ntk"], tracked["nntk"], strict=True):
        assert k_nonlocal.dtype == torch.float64 and k_nonlocal.device == k.device
        # |estimate - NTK|_F is about |stderr|_F when the σ-smoothing bias is negligible
        assert torch.linalg.norm(k_nonlocal - k) <= 3.0 * torch.linalg.norm(stderr)


def test_sign_network_local_ntk_is_frozen():
    model = nk.MLP(1, (256,), 1, activation="sign")
    y = torch.sign(X[:, 0])
    theta0 = model.init(0, xp=torch, dtype=torch.float64)
    track = {"ntk": lambda theta: nk.ntk(model, theta, X)}

    theta, losses, tracked = train(model, y, seed=0, steps=100, track=track)

    assert losses[-1] < losses[0] / 2  # the output layer alone fits the target
    first_layer = slice(0, 2 * 256)  # W (1 x 256), then b (256), in nk.MLP's layout
    assert torch.equal(theta[first_layer], theta0[first_layer])
    assert not torch.equal(theta, theta0)
    assert all(torch.equal(k, tracked["ntk"][0]) for k in tracked["ntk"])
