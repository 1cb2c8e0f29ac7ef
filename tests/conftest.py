"""The backend x dtype x device matrix every test runs on.

``NNTK_BACKENDS`` (comma separated) narrows the libraries: ``numpy, array_api_strict, torch,
jax, cupy``, and ``none`` (alias ``independent``) for the library-independent tests: those that
neither take the ``backend`` fixture nor carry ``pytest.mark.backend`` (doctests, the Dask
cluster, the docs pages that need no optional library, tests that make their own NumPy arrays).
Unset, it means every library and ``none``. Set, it selects exactly what it names: with
``NNTK_BACKENDS=torch`` the library-independent tests are deselected, so ``backends/run``, which
runs the suite once per library, runs them once (in its ``numpy`` environment, where it sets
``NNTK_BACKENDS=numpy,none``) instead of in every environment.

``NNTK_DEVICE=cuda`` runs torch and JAX on the GPU. array-api-strict runs twice: on its fake
``Device("device1")``, so that any array created on the default device instead of the input's
fails, and on ``Device("no_float64")`` (test id ``array_api_strict_no_float64``), a device
without float64 like Apple's MPS: there the ``float64`` cases of the ``dtype`` fixture skip with
the reason, the ``float32`` ones run, and a float64 array the library creates itself fails.
array-api-strict is set to API version 2025.12. Missing libraries and CuPy without a GPU skip.

Tests that do not take the ``backend`` fixture but use one library directly (the examples in
``tests/embedding``) say so with ``pytest.mark.backend("jax")``, and tests that parametrize
``backend`` themselves are treated alike: they are counted under that library and deselected
when ``NNTK_BACKENDS`` leaves it out.

Slow tests. Tests marked ``slow`` (long statistical studies: many samples, seeds or
parametrizations of one Monte Carlo oracle; Dask LocalCluster spill and worker-kill tests; the
``reproduce`` study on several backends) are deselected by the default ``-m "not slow"`` in
pyproject's ``addopts``; ``pytest -m slow`` runs only them (CI runs it as a separate step) and
``pytest -m ""`` runs everything. A test marked ``slow_unless(backend=..., dtype=..., <param>=...)``
is slow except for the parametrizations whose parameters all match (a value or a tuple of
values; ``backend`` compares the case id, e.g. ``array_api_strict_no_float64``); with several
``slow_unless`` markers a parametrization matching any of them is fast. The full matrix of a
long Monte Carlo oracle runs in the slow step, while its cheap cases keep every backend covered
in the default run. In the Monte Carlo and NTK test modules (``SLOW_CELL_MODULES``) the JAX
float64 cases of the ``dtype`` fixture are slow too (``SLOW_CELLS``: JAX compiles every
primitive once per shape and dtype, so they double JAX's time there, and float64 arithmetic is
covered on the other libraries in the default run), except in tests marked ``fast``. Naming a
slow test explicitly still needs ``-m slow`` or ``-m ""``.

JAX compiles every primitive once per shape and dtype in eager mode, and that compilation
dominates the JAX tests' time. On the CPU, and unless ``XLA_FLAGS`` is already set or
``NNTK_JAX_FAST_COMPILE=0``, the suite sets ``XLA_FLAGS`` to compile without LLVM optimization
and without the fusion emitters (about half the JAX time; the operations and their dtypes are
unchanged).

The suite runs in two pytest-xdist workers where there are two cores (pyproject's addopts);
each report carries its backend case and device, so the controller tallies, and only it
writes the tally file.

With ``NNTK_TALLY_FILE=path.json`` the run also writes its per-backend tally as JSON (library,
version, device, dtype, passed/failed/skipped); ``backends/run`` sets it and
``backends/support_matrix.py`` turns the files into the documentation's support matrix. The two
array-api-strict devices are separate rows.
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
from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import pytest
from array_api_compat import array_namespace

# tests/data holds the scripts that wrote the stored neural-tangents references; they need
# neural-tangents' own (older) JAX environment, so pytest must not import them
collect_ignore_glob = ["data/*.py"]

ALL_BACKENDS = ("numpy", "array_api_strict", "torch", "jax", "cupy")
INDEPENDENT = "none"  # the pseudo-library of library-independent tests
_ALIASES = {"independent": INDEPENDENT}
_SELECTED = tuple(
    _ALIASES.get(b.strip(), b.strip())
    for b in os.environ.get("NNTK_BACKENDS", ",".join((*ALL_BACKENDS, INDEPENDENT))).split(",")
    if b.strip()
)
BACKENDS = tuple(b for b in _SELECTED if b != INDEPENDENT)  # the libraries selected
RUN_INDEPENDENT = INDEPENDENT in _SELECTED
GPU = os.environ.get("NNTK_DEVICE", "cpu") == "cuda"

_unknown = set(_SELECTED) - {*ALL_BACKENDS, INDEPENDENT}
if _unknown:
    raise pytest.UsageError(
        f"NNTK_BACKENDS has unknown entries {sorted(_unknown)} "
        f"(known: {', '.join(ALL_BACKENDS)}, none)"
    )

# The backend fixture's cases: case id -> library. array-api-strict runs on two fake devices.
CASES = {
    "numpy": "numpy",
    "array_api_strict": "array_api_strict",
    "array_api_strict_no_float64": "array_api_strict",
    "torch": "torch",
    "jax": "jax",
    "cupy": "cupy",
}
STRICT_DEVICE = {"array_api_strict": "device1", "array_api_strict_no_float64": "no_float64"}
# (case, dtype) cells whose tests, in the modules named, run in the slow step only, unless a
# test is marked `fast`: JAX compiles every primitive once per shape and dtype, so its float64
# cases double its time in the Monte Carlo and NTK modules (most of JAX's time), and float64
# arithmetic is covered there by NumPy, array-api-strict and torch in the default run.
SLOW_CELLS = {("jax", "float64")}
SLOW_CELL_MODULES = {
    "test_nonlocal_ntk.py",
    "test_nonlocal_grad.py",
    "test_local_ntk.py",
    "test_protocol.py",
    "test_regressions.py",
}
STRICT_API_VERSION = "2025.12"

# JAX's eager mode compiles each primitive per shape and dtype: make that compilation cheap
# (see the module docstring). XLA reads the variable when JAX creates its CPU client, which
# happens after this module is imported; the flags exist in the jaxlib versions checked (0.10).
if (
    not GPU
    and "XLA_FLAGS" not in os.environ
    and os.environ.get("NNTK_JAX_FAST_COMPILE", "1") != "0"
    and "jax" in BACKENDS
):
    try:
        _jaxlib = tuple(int(v) for v in importlib.metadata.version("jaxlib").split(".")[:2])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        _jaxlib = (0, 0)
    if _jaxlib >= (0, 10):
        os.environ["XLA_FLAGS"] = (
            "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
        )


def _configure(case: str) -> tuple[object, object]:
    """Import and configure one backend case; return (namespace, device)."""
    xp, dev = _configure_backend(case)
    _DEVICE_OF[case] = _device_label(CASES[case], dev)
    return xp, dev


def _configure_backend(case: str) -> tuple[object, object]:
    name = CASES[case]
    if name == "numpy":
        return array_namespace(np.empty(0)), None
    if name == "array_api_strict":
        xs = pytest.importorskip("array_api_strict")
        xs.set_array_api_strict_flags(api_version=STRICT_API_VERSION)
        return xs, xs.Device(STRICT_DEVICE[case])
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


@pytest.fixture(params=[c for c, lib in CASES.items() if lib in BACKENDS])
def backend(request: pytest.FixtureRequest) -> tuple[object, object]:
    return _configure(request.param)


@pytest.fixture
def xp(backend: tuple[object, object]) -> object:
    return backend[0]


@pytest.fixture
def device(backend: tuple[object, object]) -> object:
    return backend[1]


@pytest.fixture(params=["float32", "float64"])
def dtype(request: pytest.FixtureRequest, xp: object, device: object) -> object:
    if not _supports(xp, device, request.param):
        pytest.skip(f"no {request.param} on {_device_label('', device)}")
    return getattr(xp, request.param)


_SUPPORTED: dict[tuple[int, str], frozenset[str] | None] = {}


def _supports(xp: object, device: object, dtype_name: str) -> bool:
    """Whether ``device`` supports the floating dtype named (the array API's inspection API)."""
    key = (id(xp), repr(device))
    if key not in _SUPPORTED:
        info = getattr(xp, "__array_namespace_info__", None)
        try:
            names = info().dtypes(device=device, kind="real floating") if info else None
        except (TypeError, ValueError, NotImplementedError):
            names = None
        _SUPPORTED[key] = None if names is None else frozenset(names)
    names = _SUPPORTED[key]
    return names is None or dtype_name in names


@pytest.fixture
def make(xp: object, dtype: object, device: object) -> Callable[..., object]:
    """Convert NumPy data to the backend under test, in the dtype and on the device under test."""

    def make(a: object, *, dtype: object = dtype) -> object:
        return xp.asarray(np.asarray(a), dtype=dtype, device=device)

    return make


# Per-backend tally printed at the end of the run and, with NNTK_TALLY_FILE set, written as
# JSON (backends/support_matrix.py turns it into the documentation's support matrix).
_TALLY: collections.Counter[tuple[str, str, str]] = collections.Counter()  # case, dtype, outcome
_CASE_OF: dict[str, tuple[str, str]] = {}  # nodeid -> (case, dtype)
_SKIPS: collections.Counter[tuple[str, str, str]] = collections.Counter()  # case, dtype, why
_DEVICE_OF: dict[str, str] = {}  # case -> device label, once the backend was configured
_START = time.time()
OUTCOMES = ("passed", "failed", "skipped")


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_Tally(), "nntk-tally")
    config.addinivalue_line(
        "markers",
        "backend(name): the test uses this library directly (one of NNTK_BACKENDS' names); it "
        "is counted under it and deselected when NNTK_BACKENDS leaves it out",
    )
    config.addinivalue_line(
        "markers",
        "slow_unless(**params): the test is slow (see `slow`) except for the parametrizations "
        "whose parameters all match: backend=case id(s), dtype=name(s), or any parametrize "
        "argument's value(s)",
    )
    config.addinivalue_line(
        "markers",
        "fast: every parametrization of the test runs in the default run, the JAX float64 "
        "cases included (see SLOW_CELLS)",
    )


def _case_of(item: pytest.Item) -> str:
    """The backend case of a test (a key of CASES), or "none" for a library-independent one."""
    marker = item.get_closest_marker("backend")
    if marker is not None:
        return str(marker.args[0])
    callspec = getattr(item, "callspec", None)
    case = callspec.params.get("backend", INDEPENDENT) if callspec else INDEPENDENT
    return case if isinstance(case, str) else UNSELECTED  # no library selected: NOTSET


UNSELECTED = "<no library selected>"


def _library_of(case: str) -> str:
    return CASES.get(case, case)


def _is_slow(item: pytest.Item) -> bool:
    """``SLOW_CELLS`` unless ``fast``; ``slow_unless``: slow unless every parameter one of
    these markers names matches."""
    callspec = getattr(item, "callspec", None)
    params = dict(callspec.params) if callspec else {}
    params["backend"] = _case_of(item)
    if "dtype" in params:
        params["dtype"] = _dtype_label(params["dtype"])
    if item.get_closest_marker("fast") is not None:
        return False
    if (params["backend"], params.get("dtype")) in SLOW_CELLS and (
        item.path.name in SLOW_CELL_MODULES
    ):
        return True
    markers = list(item.iter_markers("slow_unless"))
    if not markers:
        return False

    def matches(marker: pytest.Mark) -> bool:
        for name, wanted in marker.kwargs.items():
            if name not in params:
                raise pytest.UsageError(f"{item.nodeid}: slow_unless names unknown {name!r}")
            if params[name] not in (wanted if isinstance(wanted, tuple | list) else (wanted,)):
                return False
        return True

    return not any(matches(m) for m in markers)


@pytest.hookimpl(tryfirst=True)  # before -m "not slow" deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep, drop = [], []
    for item in items:
        case = _case_of(item)
        library = _library_of(case)
        if case == UNSELECTED:
            drop.append(item)
            continue
        if library not in (INDEPENDENT, *ALL_BACKENDS):
            raise pytest.UsageError(f"{item.nodeid}: unknown backend {case!r}")
        if _is_slow(item):
            item.add_marker(pytest.mark.slow)
        selected = RUN_INDEPENDENT if library == INDEPENDENT else library in BACKENDS
        (keep if selected else drop).append(item)
        callspec = getattr(item, "callspec", None)
        dtype = callspec.params.get("dtype", "none") if callspec else "none"
        _CASE_OF[item.nodeid] = (case, _dtype_label(dtype))
        # reports carry it to a pytest-xdist controller, which collects no items itself
        item.user_properties.append(("nntk_case", (case, _dtype_label(dtype))))
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_sessionstart(session: pytest.Session) -> None:
    global _START
    _START = time.time()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    report = (yield).get_result()
    case = _CASE_OF.get(item.nodeid, (INDEPENDENT, "none"))[0]
    if case in _DEVICE_OF:  # configured in this process (an xdist worker, say)
        report.user_properties.append(("nntk_device", (case, _DEVICE_OF[case])))


class _Tally:
    """Counts every report. A plugin registered at configuration, not a hook of this
    conftest: a conftest's per-item hooks see only the items below its folder, which would
    leave the package's doctests out of a one-process run."""

    @staticmethod
    def pytest_runtest_logreport(report: pytest.TestReport) -> None:
        props = dict(report.user_properties)
        if "nntk_device" in props:
            case, label = props["nntk_device"]
            _DEVICE_OF.setdefault(case, label)
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            default = (INDEPENDENT, "none")
            case, dtype = _CASE_OF.get(report.nodeid) or props.get("nntk_case", default)
            _TALLY[(case, dtype, report.outcome)] += 1
            if report.skipped and isinstance(report.longrepr, tuple):
                reason = str(report.longrepr[2]).removeprefix("Skipped: ")
                _SKIPS[(case, dtype, reason)] += 1


def _dtype_label(dtype: object) -> str:
    """'float32' for "float32", np.float32, torch.float32, jnp.float32 alike."""
    name = dtype if isinstance(dtype, str) else getattr(dtype, "__name__", None) or str(dtype)
    return str(name).rsplit(".", 1)[-1]


_XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # its controller tallies


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _TALLY or _XDIST_WORKER:
        return
    terminalreporter.section("tests per backend")
    per_backend: collections.Counter[tuple[str, str]] = collections.Counter()
    for (b, _, o), n in _TALLY.items():
        per_backend[(b, o)] += n
    names = sorted({b for b, _ in per_backend}, key=lambda b: (b == INDEPENDENT, b))
    for b in names:
        counts = ", ".join(f"{per_backend[(b, o)]} {o}" for o in OUTCOMES if per_backend[(b, o)])
        label = "backend-independent" if b == INDEPENDENT else b
        terminalreporter.write_line(f"{label:>28}: {counts}")
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
    if name == "array_api_strict" or type(dev).__module__.startswith("array_api_strict"):
        return repr(dev).removeprefix("array_api_strict.")
    if name == "cupy":
        import cupy

        return f"cuda:{cupy.cuda.Device().id}"
    return "cpu" if dev is None else str(dev)


def tally_rows() -> list[dict[str, object]]:
    """The tally so far: one row per (backend case, dtype), in CASES order.

    ``backend`` is the library's name (two array-api-strict cases are two rows that differ in
    ``device``)."""
    order = {c: i for i, c in enumerate((*CASES, INDEPENDENT))}
    cases = sorted({(c, d) for c, d, _ in _TALLY}, key=lambda c: (order.get(c[0], 0), c[1]))
    rows = []
    for case, dtype in cases:
        backend = _library_of(case)
        library, version = ("-", "-") if backend == INDEPENDENT else _library(backend)
        device = _DEVICE_OF.get(case) or _DEVICE_OF.get(backend, "n/a")
        row: dict[str, object] = {
            "backend": backend,
            "library": library,
            "version": version,
            "device": "-" if backend == INDEPENDENT else device,
            "dtype": dtype,
        }
        row.update({o: _TALLY[(case, dtype, o)] for o in OUTCOMES})
        row["skip_reasons"] = {
            why: n for (c, d, why), n in sorted(_SKIPS.items()) if (c, d) == (case, dtype)
        }
        rows.append(row)
    return rows


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get("NNTK_TALLY_FILE")
    if not path or _XDIST_WORKER:
        return
    from nntk_array import __version__

    tally = {
        "schema": 1,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - _START, 1),
        "exit_status": int(exitstatus),
        "backends_selected": list(BACKENDS),
        "independent_selected": RUN_INDEPENDENT,
        "device_requested": "cuda" if GPU else "cpu",
        "nntk_array": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "machine": platform.machine(),
        "rows": tally_rows(),
    }
    if os.environ.get("NNTK_TALLY_APPEND") == "1" and os.path.exists(path):
        with open(path, encoding="utf-8") as old:
            tally = _merge_tallies(json.load(old), tally)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        json.dump(tally, out, indent=2)
        out.write("\n")


def _merge_tallies(old: dict, new: dict) -> dict:
    """``NNTK_TALLY_APPEND=1``: add this run's counts to the tally file's (CI's slow step adds
    the slow tests to the default run's tally): rows matched by backend, device and dtype."""
    merged = dict(old)
    merged["duration_s"] = round(old.get("duration_s", 0.0) + new["duration_s"], 1)
    exits = [int(old.get("exit_status", 0)), new["exit_status"]]
    merged["exit_status"] = max((e for e in exits if e != 5), default=5)  # 5: none selected
    merged["backends_selected"] = list(
        dict.fromkeys([*old.get("backends_selected", []), *new["backends_selected"]])
    )
    merged["independent_selected"] = bool(old.get("independent_selected")) or bool(
        new["independent_selected"]
    )
    rows = {(r["backend"], r["device"], r["dtype"]): dict(r) for r in old.get("rows", [])}
    for r in new["rows"]:
        key = (r["backend"], r["device"], r["dtype"])
        if key not in rows:
            rows[key] = dict(r)
            continue
        row = rows[key]
        for outcome in OUTCOMES:
            row[outcome] = row.get(outcome, 0) + r[outcome]
        reasons = collections.Counter(row.get("skip_reasons", {}))
        reasons.update(r.get("skip_reasons", {}))
        row["skip_reasons"] = dict(sorted(reasons.items()))
    order = {c: i for i, c in enumerate((*ALL_BACKENDS, INDEPENDENT))}
    merged["rows"] = sorted(
        rows.values(), key=lambda r: (order.get(r["backend"], 0), r["device"], r["dtype"])
    )
    return merged
