from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import nntk_array as nk


def test_import_loads_no_optional_backend():
    code = (
        "import sys, nntk_array as nk; import numpy as np;"
        "m = nk.MLP(1, (4,)); nk.ntk(m, m.init(0, xp=np), np.zeros((2, 1)));"
        "print(sorted(k for k in ('torch', 'jax', 'cupy') if k in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_names():
    assert sorted(nk.__all__) == ["MLP", "__version__", "ntk"]
    for name in nk.__all__:
        assert getattr(nk, name).__doc__ or name == "__version__"


def test_version_is_single_sourced():
    assert nk.__version__ == version("nntk-array")
