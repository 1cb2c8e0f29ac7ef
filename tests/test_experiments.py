"""The study command end to end in --quick mode on each CPU backend."""

from __future__ import annotations

import re

import pytest

from nntk_array.__main__ import main

ROW = re.compile(r"^(sign|sawtooth|relu)\s+(.+?)\s{2,}([0-9.e+-]+) \+- ([0-9.e+-]+)")


@pytest.mark.parametrize("backend", ["numpy", "torch", "jax"])
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
    assert all(float(r[2]) >= 0 for r in rows)
    assert out.count("-> best nonlocal") == 3
    pytest.importorskip("matplotlib")
    assert out_png.stat().st_size > 10_000
