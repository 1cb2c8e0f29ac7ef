"""The backend x dtype x device matrix every test runs on.

``NNTK_BACKENDS`` (comma separated, default all) narrows the libraries:
``numpy, array_api_strict, torch, jax, cupy``. ``NNTK_DEVICE=cuda`` runs torch and JAX on the
GPU. array-api-strict runs on its fake ``Device("device1")`` so that any array created on the
default device instead of the input's fails. Missing libraries and CuPy without a GPU skip.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable

import numpy as np
import pytest
from array_api_compat import array_namespace

ALL_BACKENDS = ("numpy", "array_api_strict", "torch", "jax", "cupy")
BACKENDS = tuple(
    b.strip() for b in os.environ.get("NNTK_BACKENDS", ",".join(ALL_BACKENDS)).split(",") if b
)
GPU = os.environ.get("NNTK_DEVICE", "cpu") == "cuda"

_unknown = set(BACKENDS) - set(ALL_BACKENDS)
if _unknown:
    raise pytest.UsageError(f"NNTK_BACKENDS has unknown entries {sorted(_unknown)}")


def _configure(name: str) -> tuple[object, object]:
    """Import and configure one backend; return (namespace, device)."""
    if name == "numpy":
        return array_namespace(np.empty(0)), None
    if name == "array_api_strict":
        xs = pytest.importorskip("array_api_strict")
        xs.set_array_api_strict_flags(api_version="2024.12")
        return xs, xs.Device("device1")
    if name == "torch":
        torch = pytest.importorskip("torch")
        torch.set_float32_matmul_precision("highest")
        torch.backends.cudnn.allow_tf32 = False
        if GPU and not torch.cuda.is_available():
            pytest.skip("NNTK_DEVICE=cuda but torch sees no GPU")
        dev = torch.empty(0, device="cuda" if GPU else "cpu").device  # "cuda" -> "cuda:0"
        return array_namespace(torch.empty(0)), dev
    if name == "jax":
        jax = pytest.importorskip("jax")
        jax.config.update("jax_enable_x64", True)
        jax.config.update("jax_default_matmul_precision", "float32")
        kind = "gpu" if GPU else "cpu"
        try:
            dev = jax.devices(kind)[0]
        except RuntimeError:
            pytest.skip(f"JAX has no {kind} device")
        import jax.numpy as jnp

        return jnp, dev
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("CuPy sees no GPU")
    except cupy.cuda.runtime.CUDARuntimeError:
        pytest.skip("CuPy sees no GPU")
    return array_namespace(cupy.empty(0)), None


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> tuple[object, object]:
    return _configure(request.param)


@pytest.fixture
def xp(backend: tuple[object, object]) -> object:
    return backend[0]


@pytest.fixture
def device(backend: tuple[object, object]) -> object:
    return backend[1]


@pytest.fixture(params=["float32", "float64"])
def dtype(request: pytest.FixtureRequest, xp: object) -> object:
    return getattr(xp, request.param)


@pytest.fixture
def make(xp: object, dtype: object, device: object) -> Callable[..., object]:
    """Convert NumPy data to the backend under test, in the dtype and on the device under test."""

    def make(a: object, *, dtype: object = dtype) -> object:
        return xp.asarray(np.asarray(a), dtype=dtype, device=device)

    return make


# Per-backend tally printed at the end of the run (the support matrix comes from this).
_TALLY: collections.Counter[tuple[str, str]] = collections.Counter()
_BACKEND_OF: dict[str, str] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        _BACKEND_OF[item.nodeid] = callspec.params.get("backend", "none") if callspec else "none"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        _TALLY[(_BACKEND_OF.get(report.nodeid, "none"), report.outcome)] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _TALLY:
        return
    terminalreporter.section("tests per backend")
    names = sorted({b for b, _ in _TALLY}, key=lambda b: (b == "none", b))
    for b in names:
        counts = ", ".join(
            f"{_TALLY[(b, o)]} {o}" for o in ("passed", "failed", "skipped") if _TALLY[(b, o)]
        )
        label = "backend-independent" if b == "none" else b
        terminalreporter.write_line(f"{label:>20}: {counts}")
