"""Matrix-free kernels: operator products equal the dense kernels, NNTK roots equal nk.nntk,
kernel ridge on operators and factors equals the dense path, bad inputs fail before work."""

from __future__ import annotations

import numpy as np
import pytest

import nntk_array as nk
from nntk_array.testing import to_numpy, tol


def _data(make, n=24, d=2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, d))
    xt = rng.uniform(-1, 1, (7, d))
    y = np.sin(3 * x[:, 0]) + x[:, 1] ** 2
    return make(x), make(xt), make(y)


def _close(a, b, dtype, scale=1.0):
    ref = to_numpy(b)
    atol = tol(dtype, "contraction") * scale * max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(to_numpy(a), ref, rtol=0, atol=atol)


class TestNTKOperator:
    @pytest.mark.parametrize(("hidden", "n_out"), [((16, 8), 2), ((16,), 1)])
    def test_matmul_and_diagonal_equal_dense(self, xp, make, dtype, device, hidden, n_out):
        model = nk.MLP(2, hidden, n_out, activation="tanh")
        x, xt, _ = _data(make)
        theta = model.init(0, xp=xp, dtype=dtype, device=device)
        v = make(np.random.default_rng(3).normal(size=(24, 3)))
        # a small budget: several blocks, recomputed factors, sub-blocked products
        for budget in (None, 40_000):
            op = nk.ntk_operator(model, theta, x, memory_budget=budget)
            k = nk.ntk(model, theta, x)
            assert op.shape == (24, 24) and op.dtype == dtype
            _close(op.matmul(v), xp.matmul(k, v), dtype, 10)
            _close(op.diagonal(), np.diag(to_numpy(k)), dtype, 10)
            kt = nk.ntk(model, theta, xt, x)
            _close(
                nk.ntk_operator(model, theta, xt, x, memory_budget=budget).matmul(v),
                xp.matmul(kt, v),
                dtype,
                10,
            )

    def test_bad_inputs(self):
        model = nk.MLP(1, (8,))
        theta = model.init(0, xp=np)
        x = np.ones((4, 1))
        with pytest.raises(ValueError, match="x1"):
            nk.ntk_operator(model, theta, np.ones((4, 2)))
        with pytest.raises(TypeError, match="memory_budget"):
            nk.ntk_operator(model, theta, x, memory_budget=1.5)
        with pytest.raises(TypeError, match="autodiff"):
            nk.ntk_operator(lambda t, x: x[None, :, 0] * t[:, :1], theta, x)
        op = nk.ntk_operator(model, theta, x)
        with pytest.raises(ValueError, match="`v`"):
            op.matmul(np.ones((5, 1)))
        with pytest.raises(ValueError, match="diagonal"):
            nk.ntk_operator(model, theta, x, x).diagonal()

    def test_partial_keeping_and_many_columns_equal_full(self):
        model = nk.MLP(1, (32,), 2)
        theta = model.init(0, xp=np)
        x = np.random.default_rng(0).uniform(-1, 1, (300, 1))
        v = np.random.default_rng(1).normal(size=(300, 5))
        full = nk.ntk_operator(model, theta, x)
        partial = nk.ntk_operator(model, theta, x, memory_budget=450_000)
        ref = nk.ntk(model, theta, x) @ v
        for op in (full, partial):
            for _ in range(3):  # first pass keeps nothing, then the kept blocks are reused
                np.testing.assert_allclose(op.matmul(v), ref, rtol=0, atol=1e-12)
            # many columns (taken a column at a time within tiles) equal single vectors
            cols = np.stack([op.matmul(v[:, i]) for i in range(5)], axis=1)
            np.testing.assert_allclose(op.matmul(v), cols, rtol=0, atol=1e-13)
        assert full.kept_blocks == -(-300 // full.block)  # all
        assert 0 < partial.kept_blocks < -(-300 // partial.block)  # some


class _Counting:
    """A kernel operator around a dense matrix that counts its products."""

    def __init__(self, k):
        self.k, self.shape, self.dtype, self.device = k, k.shape, k.dtype, "cpu"
        self.products = self.columns = 0

    def matmul(self, v):
        self.products += 1
        self.columns += v.shape[1] if v.ndim == 2 else 1
        return self.k @ v

    def diagonal(self):
        return np.diag(self.k).copy()


class TestNystrom:
    def _problem(self, n=400):
        # a fast-decaying spectrum (as the NTK's): ill-conditioned at a small ridge
        q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(n, n)))
        k = (q * np.exp(-np.arange(n) / 8)) @ q.T
        k = 0.5 * (k + k.T)
        y = np.random.default_rng(1).normal(size=(n, 2))
        return k, y

    def test_default_converges_in_far_fewer_products(self):
        k, y = self._problem()
        ridge = 1e-3
        _, ref = nk.kernel_regression(k, y, k[:10], ridge=ridge)
        counts = {}
        for name, pre in (("nystrom", "nystrom"), ("none", None)):
            op = _Counting(k)
            _, ft = nk.kernel_regression(
                op, y, k[:10], ridge=ridge, preconditioner=pre, maxiter=2000
            )
            np.testing.assert_allclose(ft, ref, rtol=0, atol=1e-5 * np.abs(ref).max())
            counts[name] = op.products
        # 11 products against 504 (one of them the sketch, one the final K α)
        assert counts["nystrom"] * 10 < counts["none"], counts

    def test_callable_and_budget(self):
        k, y = self._problem(200)
        ridge = 1e-3
        _, ref = nk.kernel_regression(k, y, k[:10], ridge=ridge)
        lam = ridge * np.trace(k) / 200
        inv = np.linalg.inv(k + lam * np.eye(200))
        op = _Counting(k)
        _, ft = nk.kernel_regression(op, y, k[:10], ridge=ridge, preconditioner=lambda r: inv @ r)
        np.testing.assert_allclose(ft, ref, rtol=0, atol=1e-6 * np.abs(ref).max())
        assert op.products <= 4  # the exact inverse: one CG step, then K α
        # the sketch's ℓ follows the memory budget: 3·N·ℓ numbers in half of it
        op = _Counting(k)
        budget = 2 * 3 * 200 * 8 * 7
        _, ft = nk.kernel_regression(op, y, k[:10], ridge=ridge, memory_budget=budget, maxiter=2000)
        np.testing.assert_allclose(ft, ref, rtol=0, atol=1e-6 * np.abs(ref).max())
        assert op.columns - 2 * (op.products - 1) == 7  # the sketch's 7 columns
        with pytest.raises(ValueError, match="memory_budget"):
            nk.kernel_regression(op, y, ridge=ridge, memory_budget=0)

    def test_rank_follows_the_operator_budget(self):
        from nntk_array.predict import nystrom_rank

        assert nystrom_rank(100_000, 8, 256 * 2**20) == 55
        assert nystrom_rank(4096, 8, 256 * 2**20) == 100
        assert nystrom_rank(10**9, 8, 2**20) == 1


class TestNNTKFeatures:
    @pytest.mark.parametrize("estimator", ["sketch", "plugin", "directional"])
    def test_root_equals_nntk(self, xp, make, dtype, device, estimator):
        model = nk.MLP(2, (8,), 2, activation="sign")
        x, _, _ = _data(make)
        theta = model.init(0, xp=xp, dtype=dtype, device=device)
        opts = {"sigma": 0.3, "samples": 20, "seed": 4, "estimator": estimator}
        for budget in (None, 50_000):  # one block, and many
            r = nk.nntk_features(model, theta, x, memory_budget=budget, **opts)
            k = nk.nntk(model, theta, x, **opts)
            assert r.dtype == dtype and r.shape[0] == 24
            _close(xp.matmul(r, xp.permute_dims(r, (1, 0))), k, dtype, 10)

    def test_unbiased_has_no_root(self):
        model = nk.MLP(1, (8,))
        with pytest.raises(ValueError, match="estimator"):
            nk.nntk_features(
                model,
                model.init(0, xp=np),
                np.ones((3, 1)),
                sigma=0.1,
                samples=8,
                seed=0,
                estimator="unbiased",
            )


class TestRidgeOnOperators:
    def test_cg_and_woodbury_match_dense(self, xp, make, dtype, device):
        model = nk.MLP(2, (16,), 1)
        x, xt, y = _data(make)
        theta = model.init(0, xp=xp, dtype=dtype, device=device)
        if not hasattr(xp, "linalg"):
            pytest.skip("the dense reference needs linalg")
        k, kt = nk.ntk(model, theta, x), nk.ntk(model, theta, xt, x)
        ridge = 1e-1
        f, ft = nk.kernel_regression(k, y, kt, ridge=ridge)
        g, gt = nk.kernel_regression(
            nk.ntk_operator(model, theta, x), y, nk.ntk_operator(model, theta, xt, x), ridge=ridge
        )
        _close(g, f, dtype, 1e3)
        _close(gt, ft, dtype, 1e3)
        opts = {"sigma": 0.2, "samples": 12, "seed": 1, "estimator": "sketch"}
        r, rt = (
            nk.nntk_features(model, theta, x, **opts),
            nk.nntk_features(model, theta, xt, **opts),
        )
        kr, ktr = (
            xp.matmul(r, xp.permute_dims(r, (1, 0))),
            xp.matmul(rt, xp.permute_dims(r, (1, 0))),
        )
        for ridge in (1e-1, 0.0):
            f, ft = nk.kernel_regression(kr, y, ktr, ridge=ridge)
            for test in (nk.LowRankOperator(rt, r), ktr):
                g, gt = nk.kernel_regression(nk.LowRankOperator(r), y, test, ridge=ridge)
                assert g.dtype == dtype
                _close(g, f, dtype, 1e3)
                _close(gt, ft, dtype, 1e3)

    def test_bad_inputs_fail_before_work(self):
        r = np.ones((5, 2))
        op = nk.LowRankOperator(r)
        with pytest.raises(TypeError, match="k_train"):
            nk.kernel_regression(object(), np.ones(5))
        with pytest.raises(ValueError, match="y_train"):
            nk.kernel_regression(op, np.ones(4))
        with pytest.raises(ValueError, match="k_test"):
            nk.kernel_regression(
                op, np.ones(5), nk.LowRankOperator(np.ones((3, 2)), np.ones((4, 2)))
            )
        with pytest.raises(ValueError, match="symmetric"):
            nk.kernel_regression(nk.LowRankOperator(r, r), np.ones(5))
        model = nk.MLP(1, (4,))
        ntk_op = nk.ntk_operator(model, model.init(0, xp=np), np.ones((5, 1)))
        with pytest.raises(ValueError, match="ridge"):
            nk.kernel_regression(ntk_op, np.ones(5))
        with pytest.raises(ValueError, match="solver"):
            nk.kernel_regression(ntk_op, np.ones(5), ridge=1.0, solver="eigh")
        with pytest.raises(ValueError, match="tol"):
            nk.kernel_regression(ntk_op, np.ones(5), ridge=1.0, tol=2.0)
        with pytest.raises(TypeError, match="preconditioner"):
            nk.kernel_regression(ntk_op, np.ones(5), ridge=1.0, preconditioner=3)
        with pytest.raises(ValueError, match="cg"):
            nk.kernel_regression(np.eye(5), np.ones(5), solver="cg")
        with pytest.raises(ValueError, match="right"):
            nk.LowRankOperator(r, np.ones((3, 3)))

    def test_cg_warns_without_convergence(self):
        model = nk.MLP(1, (32,))
        x = np.linspace(-1, 1, 40)[:, None]
        op = nk.ntk_operator(model, model.init(0, xp=np), x)
        with pytest.warns(RuntimeWarning, match="maxiter"):
            nk.kernel_regression(op, np.sin(5 * x[:, 0]), ridge=1e-6, maxiter=2)


@pytest.mark.slow
def test_operator_paths_match_dense_at_4096():
    model = nk.MLP(1, (256,), 1)
    theta = model.init(0, xp=np)
    x = np.random.default_rng(1).uniform(-1, 1, (4096, 1))
    xt = np.linspace(-1, 1, 200)[:, None]
    y = np.sin(4 * x[:, 0]) + np.abs(x[:, 0])
    _, ref = nk.kernel_regression(
        nk.ntk(model, theta, x), y, nk.ntk(model, theta, xt, x), ridge=1e-3
    )
    _, ft = nk.kernel_regression(
        nk.ntk_operator(model, theta, x), y, nk.ntk_operator(model, theta, xt, x), ridge=1e-3
    )
    assert np.abs(ft - ref).max() <= 1e-5 * np.abs(ref).max()
    opts = {"sigma": 0.1, "samples": 256, "seed": 0}
    r, rt = nk.nntk_features(model, theta, x, **opts), nk.nntk_features(model, theta, xt, **opts)
    _, ref = nk.kernel_regression(r @ r.T, y, rt @ r.T, ridge=1e-3)
    _, ft = nk.kernel_regression(nk.LowRankOperator(r), y, nk.LowRankOperator(rt, r), ridge=1e-3)
    assert np.abs(ft - ref).max() <= 1e-8 * np.abs(ref).max()
