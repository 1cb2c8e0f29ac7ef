"""The column sweep (:func:`nntk_array._mc.differences.swept`) against the row chunks: the
same directions, so the same kernel up to rounding, with each random number drawn once."""

from __future__ import annotations

import numpy as np
import pytest
from array_api_compat import is_writeable_array

import nntk_array as nk
from nntk_array._mc import differences, kernel
from nntk_array.testing import to_numpy, tol

#: a net whose directions (M = 64 rows, P = 40,513) do not fit the random-tile cache under
#: this budget per byte of its numbers, while the activations of all 64 perturbed nets do
BUDGET_PER_BYTE = 4 * 2**20
SETS = 64


def _model(outputs: int = 1) -> nk.MLP:
    return nk.MLP(16, (192, 192), outputs, "relu")


def _setup(make, xp, outputs: int = 1):
    model = _model(outputs)
    theta = make(model.init(0, xp=np, dtype=np.float64))
    if not is_writeable_array(theta):
        pytest.skip("a sweep adds into the activations in place: not for immutable arrays")
    rng = np.random.default_rng(1)
    return model, theta, make(rng.standard_normal((24, 16))), make(rng.standard_normal((8, 16)))


def _calls(monkeypatch) -> list[int]:
    taken: list[int] = []
    swept = differences.swept

    def counted(*args, **kwargs):
        taken.append(1)
        return swept(*args, **kwargs)

    monkeypatch.setattr(kernel, "swept", counted)
    return taken


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"estimator": "plugin", "outputs": "full"},
        {"return_stderr": True},
    ],
)
def test_the_sweep_gives_the_row_estimate(monkeypatch, make, xp, dtype, options):
    model, theta, x1, x2 = _setup(make, xp, outputs=2 if options.get("outputs") else 1)
    size = 4 if "float32" in str(dtype) else 8
    kw = {"sigma": 0.1, "samples": SETS, "seed": 7, "memory_budget": BUDGET_PER_BYTE * size}
    kw |= options
    for second in (None, x2):
        taken = _calls(monkeypatch)
        got = nk.nntk(model, theta, x1, second, **kw)
        assert taken == [1]
        with monkeypatch.context() as rows_only:
            rows_only.setattr(kernel, "_sweep_bytes", lambda *a, **k: None)
            want = nk.nntk(model, theta, x1, second, **kw)
        pairs = zip(got, want, strict=True) if options.get("return_stderr") else [(got, want)]
        for a, b in pairs:
            b = to_numpy(b)
            np.testing.assert_allclose(
                to_numpy(a),
                b,
                rtol=tol(dtype, "contraction"),
                atol=tol(dtype, "contraction") * np.abs(b).max(),
            )


def test_the_sweep_draws_each_number_once(monkeypatch):
    model = _model()
    theta = model.init(0, xp=np, dtype=np.float32)
    x = np.random.default_rng(1).standard_normal((32, 16)).astype(np.float32)
    drawn = []
    normal = nk.backends.random.Generator.normal

    def counted(self, shape, **kwargs):
        drawn.append(int(np.prod(shape)))
        return normal(self, shape, **kwargs)

    monkeypatch.setattr(nk.backends.random.Generator, "normal", counted)
    taken = _calls(monkeypatch)
    nk.nntk(model, theta, x, sigma=0.1, samples=SETS, seed=0, memory_budget=BUDGET_PER_BYTE * 4)
    assert taken == [1] and sum(drawn) == SETS * model.num_params


def test_a_model_that_skips_columns_is_refused():
    class Skipping(nk.MLP):
        def apply_by_columns(self, theta, x, columns, scale, *, sets, block):
            columns(0, 1)  # reads one column, then evaluates unperturbed
            return self.apply(theta, x)[None, ...] + 0.0 * theta[0]

    model = Skipping(16, (192, 192), 1)
    theta = model.init(0, xp=np, dtype=np.float32)
    x = np.zeros((32, 16), dtype=np.float32)
    budget = BUDGET_PER_BYTE * 4
    with pytest.raises(ValueError, match="must read every column of the directions"):
        nk.nntk(model, theta, x, sigma=0.1, samples=SETS, seed=0, memory_budget=budget)


def test_no_sweep_where_the_directions_fit_the_cache(monkeypatch):
    model = _model()
    theta = model.init(0, xp=np, dtype=np.float32)
    x = np.zeros((32, 16), dtype=np.float32)
    taken = _calls(monkeypatch)
    nk.nntk(model, theta, x, sigma=0.1, samples=SETS, seed=0)  # 384 MiB: U (10 MB) is cached
    assert taken == []
