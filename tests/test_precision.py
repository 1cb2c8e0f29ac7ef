"""A requested precision (``rtol``/``atol``/``max_samples``) of nk.nntk and nk.nonlocal_grad."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import nntk_array as nk
from nntk_array.testing import to_numpy

from ._reference import smoothed_one_hidden_ntk

MODEL = nk.MLP(1, (16,), activation="sign")
THETA = MODEL.init(0, xp=np, dtype=np.float64)
X = np.linspace(-1.0, 1.0, 6)[:, None]


def _np(a: object) -> np.ndarray:
    return to_numpy(a).astype(np.float64)


def _rel(est: nk.Estimate) -> float:
    return float(np.linalg.norm(_np(est.stderr)) / np.linalg.norm(_np(est.value)))


def _grad_f(thetas: object) -> object:
    return MODEL.apply(thetas, X)  # type: ignore[attr-defined]


def test_nntk_rtol_is_the_plain_estimate_at_the_samples_it_used(make):
    # the default (variance-reduced) estimator meets 20% at M = 16 already
    est = nk.nntk(MODEL, make(THETA), make(X), sigma=0.3, samples=16, rtol=0.02, seed=0)
    assert isinstance(est, nk.Estimate) and est.samples > 16
    assert _rel(est) <= 0.02
    plain = nk.nntk(
        MODEL, make(THETA), make(X), sigma=0.3, samples=est.samples, seed=0, return_stderr=True
    )
    np.testing.assert_array_equal(_np(est.value), _np(plain.value))
    np.testing.assert_array_equal(_np(est.stderr), _np(plain.stderr))


def test_nonlocal_grad_rtol_is_the_plain_estimate_at_the_samples_it_used(xp, make):
    x = make(X)

    def f(thetas: object) -> object:
        return MODEL.apply(thetas, x)

    est = nk.nonlocal_grad(f, make(THETA), sigma=0.3, samples=16, rtol=0.3, seed=0)
    assert isinstance(est, nk.Estimate) and est.samples > 16
    assert _rel(est) <= 0.3
    plain = nk.nonlocal_grad(
        f, make(THETA), sigma=0.3, samples=est.samples, seed=0, return_stderr=True
    )
    np.testing.assert_array_equal(_np(est.value), _np(plain.value))
    np.testing.assert_array_equal(_np(est.stderr), _np(plain.stderr))


def test_tighter_rtol_needs_at_least_as_many_samples_and_samples_double():
    lines: list[str] = []
    loose = nk.nntk(MODEL, THETA, X, sigma=0.3, samples=16, rtol=0.3, seed=1)
    tight = nk.nntk(MODEL, THETA, X, sigma=0.3, samples=16, rtol=0.1, seed=1, progress=lines.append)
    assert tight.samples >= loose.samples
    assert [int(s.split("samples=")[1].split(",")[0]) for s in lines] == [
        16 * 2**k for k in range(len(lines))
    ]
    assert lines[-1].endswith("s)") and "target met" in lines[-1]


def test_atol_bounds_the_largest_standard_error():
    est = nk.nntk(MODEL, THETA, X, sigma=0.3, samples=16, atol=0.5, seed=2)
    assert float(np.max(est.stderr)) <= 0.5


def test_centred_error_is_more_demanding():
    rel = nk.nntk(MODEL, THETA, X, sigma=0.3, samples=16, rtol=0.2, seed=3)
    cen = nk.nntk(MODEL, THETA, X, sigma=0.3, samples=16, rtol=0.2, seed=3, error="centred")
    assert cen.samples >= rel.samples
    k = np.asarray(cen.value)
    c = np.eye(6) - 1.0 / 6.0
    assert np.linalg.norm(cen.stderr) / np.linalg.norm(c @ k @ c) <= 0.2


@pytest.mark.parametrize("fn", ["nntk", "nonlocal_grad"])
def test_max_samples_caps_and_warns(fn):
    call = (
        (lambda **kw: nk.nntk(MODEL, THETA, X, **kw))
        if fn == "nntk"
        else (lambda **kw: nk.nonlocal_grad(_grad_f, THETA, **kw))
    )
    with pytest.warns(RuntimeWarning, match=r"max_samples=40 reached .* short of rtol 1e-06"):
        est = call(sigma=0.3, samples=16, rtol=1e-6, max_samples=40, seed=0)
    assert est.samples == 40  # 16, 32, then capped at 40


def test_default_first_samples_and_no_warning_when_met():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est = nk.nonlocal_grad(_grad_f, THETA, sigma=0.3, rtol=1.0, seed=0)
    assert est.samples == 256


BAD = [
    ({"rtol": 0.0}, ValueError, "rtol"),
    ({"rtol": -0.1}, ValueError, "rtol"),
    ({"rtol": float("nan")}, ValueError, "rtol"),
    ({"rtol": "0.1"}, TypeError, "rtol"),
    ({"atol": float("inf")}, ValueError, "atol"),
    ({"rtol": 0.1, "max_samples": 8}, ValueError, "max_samples"),
    ({"rtol": 0.1, "max_samples": 100.0}, TypeError, "max_samples"),
    ({"rtol": 0.1, "progress": 3}, TypeError, "progress"),
    ({"max_samples": 100}, TypeError, "max_samples"),
    ({"rtol": 0.1, "samples": 1}, ValueError, "samples >= 2"),
    ({"rtol": 0.1, "samples": np.ones((4, 33))}, ValueError, "explicit"),
    ({"samples": None}, TypeError, "`samples` is required"),
]


@pytest.mark.parametrize("fn", ["nntk", "nonlocal_grad"])
@pytest.mark.parametrize(("kwargs", "exc", "match"), BAD)
def test_bad_arguments_raise_before_any_work(fn, kwargs, exc, match):
    calls: list[int] = []

    def f(thetas: np.ndarray, x: np.ndarray | None = None) -> np.ndarray:
        calls.append(thetas.shape[0])
        return MODEL.apply(thetas, X)

    kw = {"sigma": 0.3, "samples": 16, "seed": 0, **kwargs}
    call = nk.nntk if fn == "nntk" else nk.nonlocal_grad
    args = (f, THETA, X) if fn == "nntk" else (f, THETA)
    with pytest.raises(exc, match=match):
        call(*args, **kw)
    assert calls == []


def test_unknown_error_measure_raises():
    with pytest.raises(ValueError, match="error"):
        nk.nntk(MODEL, THETA, X, sigma=0.3, rtol=0.1, error="max")
    with pytest.raises(TypeError, match="error"):
        nk.nntk(MODEL, THETA, X, sigma=0.3, samples=16, error="centred")


def test_requested_precision_brackets_the_exact_smoothed_kernel():
    model = nk.MLP(1, (32,), activation="relu")
    theta = model.init(3, xp=np, dtype=np.float64)
    x = np.linspace(-1.0, 1.0, 5)[:, None]
    truth = smoothed_one_hidden_ntk(model, theta, x, x, 0.3)
    est = nk.nntk(model, theta, x, sigma=0.3, rtol=0.05, seed=4)
    err = np.abs(est.value - truth)
    assert np.all(err <= 4.5 * est.stderr), np.max(err / est.stderr)
    assert np.linalg.norm(est.value - truth) / np.linalg.norm(truth) < 0.15
