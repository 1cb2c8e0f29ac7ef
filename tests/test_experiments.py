"""The study command end to end in --quick mode on each CPU backend."""

from __future__ import annotations

import re

import pytest

from nntk_array.__main__ import main

ROW = re.compile(r"^(sign|sawtooth|relu)\s+(.+?)\s{2,}([0-9.e+-]+) \+- ([0-9.e+-]+)")


@pytest.mark.parametrize("backend", ["numpy", "torch", "jax"])
@pytest.mark.slow_unless(backend="numpy")  # the whole study once more per library: the slow step
def test_reproduce_quick(backend, tmp_path, capsys):
    pytest.importorskip(backend)
    out_png = tmp_path / "study.png"
    assert main(["reproduce", "--quick", "--backend", backend, "--out", str(out_png)]) == 0
    out = capsys.readouterr().out
    assert "paper's own numbers are not available" in out
    rows = [m.groups() for line in out.splitlines() if (m := ROW.match(line))]
    kernels = {r[1] for r in rows}
    assert {"NTK (local)", "NTK (infinite width)", "attention NNTK sigma=0.3"} <= kernels
    assert len(rows) == 3 * len(kernels)
    # The infinite-width rows are deterministic: recompute their ridge and flow test errors
    # with NumPy's solvers from the closed-form kernel and the study's protocol (quick mode:
    # 32 train / 128 test points, ridge 1e-4 tr(K)/N, flow time 1e3 / (tr(K)/N)).
    np = pytest.importorskip("numpy")
    nk = pytest.importorskip("nntk_array")
    x_tr, x_te = np.linspace(-1.0, 1.0, 32), np.linspace(-1.0, 1.0, 128)
    k = np.asarray(nk.analytic.ntk(np.concatenate([x_tr, x_te])[:, None], activation="relu"))
    k_tr, k_te = k[:32, :32], k[32:, :32]
    scale = np.trace(k_tr) / 32
    vals, vecs = np.linalg.eigh(k_tr)
    t = 1e3 / scale
    targets = {
        "sign": np.sign,
        "sawtooth": lambda x: 2.0 * (2 * x - np.floor(2 * x + 0.5)),
        "relu": lambda x: np.maximum(x, 0.0),
    }
    table = {
        (m.group(1), m.group(2).strip()): [
            (float(a), float(b)) for a, b in re.findall(r"([0-9.e+-]+) \+- ([0-9.e+-]+)", line)
        ]
        for line in out.splitlines()
        if (m := ROW.match(line))
    }
    for target, fn in targets.items():
        y_tr, y_te = fn(x_tr), fn(x_te)
        ridge = k_te @ np.linalg.solve(k_tr + 1e-4 * scale * np.eye(32), y_tr)
        flow = k_te @ (vecs @ (-np.expm1(-t * vals) / vals * (vecs.T @ y_tr)))
        (ridge_mse, ridge_sd), (flow_mse, flow_sd), *_ = table[(target, "NTK (infinite width)")]
        assert ridge_sd == flow_sd == 0.0  # no seed enters this kernel
        assert ridge_mse == pytest.approx(np.mean((ridge - y_te) ** 2), rel=6e-3)
        assert flow_mse == pytest.approx(np.mean((flow - y_te) ** 2), rel=6e-3)
    assert all(mse >= 0 and sd >= 0 for numbers in table.values() for mse, sd in numbers[:2])
    assert out.count("-> best nonlocal") == 3
    pytest.importorskip("matplotlib")
    assert out_png.stat().st_size > 10_000
