from __future__ import annotations

import subprocess
import sys

import numpy as np

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


def test_module_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "nntk_array", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.startswith("nntk_array ")
