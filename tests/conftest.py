"""The backend x dtype x device matrix every test runs on.

``NNTK_BACKENDS`` (comma separated, default all) narrows the libraries:
``numpy, array_api_strict, torch, jax, cupy``. ``NNTK_DEVICE=cuda`` runs torch and JAX on the
GPU. array-api-strict runs on its fake ``Device("device1")`` so that any array created on the
default device instead of the input's fails. Missing libraries and CuPy without a GPU skip.

Tests that do not take the ``backend`` fixture but use one library directly (the examples in
``tests/embedding``) say so with ``pytest.mark.backend("jax")``, and tests that parametrize
``backend`` themselves are treated alike: they are counted under that library and deselected
when ``NNTK_BACKENDS`` leaves it out.

With ``NNTK_TALLY_FILE=path.json`` the run also writes its per-backend tally as JSON (library,
version, device, dtype, passed/failed/skipped); ``backends/run`` sets it and
``backends/support_matrix.py`` turns the files into the documentation's support matrix.
"""

from __future__ import annotations

import collections
import datetime
import importlib.metadata
import json
import os
import platform
import sys
import time
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
    xp, dev = _configure_backend(name)
    _DEVICE_OF[name] = _device_label(name, dev)
    return xp, dev


def _configure_backend(name: str) -> tuple[object, object]:
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


# Per-backend tally printed at the end of the run and, with NNTK_TALLY_FILE set, written as
# JSON (backends/support_matrix.py turns it into the documentation's support matrix).
_TALLY: collections.Counter[tuple[str, str, str]] = collections.Counter()  # backend, dtype, outcome
_CASE_OF: dict[str, tuple[str, str]] = {}  # nodeid -> (backend, dtype)
_SKIPS: collections.Counter[tuple[str, str, str]] = collections.Counter()  # backend, dtype, why
_DEVICE_OF: dict[str, str] = {}  # backend -> device label, once the backend was configured
_START = time.time()
OUTCOMES = ("passed", "failed", "skipped")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "backend(name): the test uses this library directly (one of NNTK_BACKENDS' names); it "
        "is counted under it and deselected when NNTK_BACKENDS leaves it out",
    )


def _backend_of(item: pytest.Item) -> str:
    marker = item.get_closest_marker("backend")
    if marker is not None:
        return str(marker.args[0])
    callspec = getattr(item, "callspec", None)
    return str(callspec.params.get("backend", "none")) if callspec else "none"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep, drop = [], []
    for item in items:
        backend = _backend_of(item)
        if backend not in ("none", *ALL_BACKENDS):
            raise pytest.UsageError(f"{item.nodeid}: unknown backend {backend!r}")
        (keep if backend == "none" or backend in BACKENDS else drop).append(item)
        callspec = getattr(item, "callspec", None)
        dtype = callspec.params.get("dtype", "none") if callspec else "none"
        _CASE_OF[item.nodeid] = (backend, _dtype_label(dtype))
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_sessionstart(session: pytest.Session) -> None:
    global _START
    _START = time.time()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        backend, dtype = _CASE_OF.get(report.nodeid, ("none", "none"))
        _TALLY[(backend, dtype, report.outcome)] += 1
        if report.skipped and isinstance(report.longrepr, tuple):
            reason = str(report.longrepr[2]).removeprefix("Skipped: ")
            _SKIPS[(backend, dtype, reason)] += 1


def _dtype_label(dtype: object) -> str:
    """'float32' for "float32", np.float32, torch.float32, jnp.float32 alike."""
    name = dtype if isinstance(dtype, str) else getattr(dtype, "__name__", None) or str(dtype)
    return str(name).rsplit(".", 1)[-1]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _TALLY:
        return
    terminalreporter.section("tests per backend")
    per_backend: collections.Counter[tuple[str, str]] = collections.Counter()
    for (b, _, o), n in _TALLY.items():
        per_backend[(b, o)] += n
    names = sorted({b for b, _ in per_backend}, key=lambda b: (b == "none", b))
    for b in names:
        counts = ", ".join(f"{per_backend[(b, o)]} {o}" for o in OUTCOMES if per_backend[(b, o)])
        label = "backend-independent" if b == "none" else b
        terminalreporter.write_line(f"{label:>20}: {counts}")
    path = os.environ.get("NNTK_TALLY_FILE")
    if path:
        terminalreporter.write_line(f"tally written to {path}")


def _library(backend: str) -> tuple[str, str]:
    """(distribution name, version) of a backend's library, without importing it."""
    module = backend  # the backends' names are their modules' names
    dists = importlib.metadata.packages_distributions().get(module) or [module]
    try:
        meta = importlib.metadata.distribution(dists[0]).metadata
    except importlib.metadata.PackageNotFoundError:
        return module, "not installed"
    loaded = sys.modules.get(module)
    return meta["Name"], str(getattr(loaded, "__version__", meta["Version"]))


def _device_label(name: str, dev: object) -> str:
    if name == "array_api_strict":
        return repr(dev).removeprefix("array_api_strict.")
    if name == "cupy":
        import cupy

        return f"cuda:{cupy.cuda.Device().id}"
    return "cpu" if dev is None else str(dev)


def tally_rows() -> list[dict[str, object]]:
    """The tally so far: one row per (backend, dtype), backends in ALL_BACKENDS order."""
    order = {b: i for i, b in enumerate((*ALL_BACKENDS, "none"))}
    cases = sorted({(b, d) for b, d, _ in _TALLY}, key=lambda c: (order[c[0]], c[1]))
    rows = []
    for backend, dtype in cases:
        library, version = ("-", "-") if backend == "none" else _library(backend)
        row: dict[str, object] = {
            "backend": backend,
            "library": library,
            "version": version,
            "device": "-" if backend == "none" else _DEVICE_OF.get(backend, "n/a"),
            "dtype": dtype,
        }
        row.update({o: _TALLY[(backend, dtype, o)] for o in OUTCOMES})
        row["skip_reasons"] = {
            why: n for (b, d, why), n in sorted(_SKIPS.items()) if (b, d) == (backend, dtype)
        }
        rows.append(row)
    return rows


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get("NNTK_TALLY_FILE")
    if not path:
        return
    from nntk_array import __version__

    tally = {
        "schema": 1,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - _START, 1),
        "exit_status": int(exitstatus),
        "backends_selected": list(BACKENDS),
        "device_requested": "cuda" if GPU else "cpu",
        "nntk_array": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "machine": platform.machine(),
        "rows": tally_rows(),
    }
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        json.dump(tally, out, indent=2)
        out.write("\n")
