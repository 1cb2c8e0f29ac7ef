from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from nntk_array.__main__ import main


def test_demo_prints_a_symmetric_kernel(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "exact local NTK" in out
    rows = [line.strip(" []") for line in out.splitlines()[2:7]]
    kernel = np.array([[float(v) for v in r.split()] for r in rows])
    assert kernel.shape == (5, 5)
    np.testing.assert_allclose(kernel, kernel.T, atol=1e-4)
    diag = {
        name: np.array([float(v) for v in line.split("[")[1].strip(" ]").split()])
        for line in out.splitlines()
        for name in ("local NTK", "nonlocal NTK", "std. err.")
        if line.strip().startswith(name) or line.strip().startswith("+/- " + name)
    }
    # the first-layer term makes the nonlocal diagonal larger, well beyond its error bars
    assert np.all(diag["nonlocal NTK"] - diag["local NTK"] > 3 * diag["std. err."])
    # Against closed forms for the demo's networks (1-512-1, NTK parameterization, biases,
    # init seed 0): the ReLU NTK Σ_j [v_j² 1(z_j > 0) 1(z'_j > 0) (x x' + 1) + relu(z_j)
    # relu(z'_j)] / 512 + 1, and the sign network's local NTK sign(z) sign(z')ᵀ / 512 + 1.
    nk = sys.modules["nntk_array"]  # loaded with nntk_array.__main__
    x = np.linspace(-1.0, 1.0, 5)[:, None]
    theta = nk.MLP(1, (512,), 1, activation="relu").init(0, xp=np, dtype=np.float64)
    w, b, v = theta[:512], theta[512:1024], theta[1024:1536]
    z = x * w + b
    relu_ntk = ((z > 0) * v**2) @ (z > 0).T * (x @ x.T + 1) / 512
    relu_ntk += np.maximum(z, 0) @ np.maximum(z, 0).T / 512 + 1
    assert np.all(np.abs(kernel - relu_ntk) <= 5.1e-5), kernel - relu_ntk  # 4 decimals printed
    theta = nk.MLP(1, (512,), 1, activation="sign").init(0, xp=np, dtype=np.float64)
    z = x * theta[:512] + theta[512:1024]
    np.testing.assert_allclose(diag["local NTK"], np.sum(np.sign(z) ** 2, 1) / 512 + 1, atol=5e-4)


def test_module_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "nntk_array", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.startswith("nntk_array ")


def test_reproduce_refuses_a_bad_out_before_any_work(tmp_path, monkeypatch, capsys):
    import nntk_array.study

    def no_work(*args, **kwargs):
        raise AssertionError("the study must not start")

    monkeypatch.setattr(nntk_array.study, "run_study", no_work)
    a_file = tmp_path / "report.txt"
    a_file.write_text("")
    for bad, reason in ((a_file, "is not a directory"), (a_file / "sub", "not a writable")):
        with pytest.raises(SystemExit) as exit_:
            main(["reproduce", "--quick", "--out", str(bad)])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert "--out" in err and reason in err and "Traceback" not in err
