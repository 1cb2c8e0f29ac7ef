"""Kernels of Dask arrays on a two-worker ``dask.distributed`` LocalCluster (loopback only).

The Dask path must give the in-memory numbers for the same seed (every task regenerates the
perturbations from it), keep working when the kernel outgrows a worker's memory, and survive
a worker killed mid-computation.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import nntk_array as nk

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

TIMEOUT = 180  # seconds for any one result: a hung cluster fails instead of blocking CI
SEED = 3

# Dask's scheduler and workers log and warn on shutdown and on a killed worker; those are
# about the cluster, not about this library.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::ResourceWarning")


@contextlib.contextmanager
def local_cluster(**kwargs: Any) -> Iterator[Any]:
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=":0",  # any free port: never the shared default 8787
        **kwargs,
    )
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with local_cluster() as c:
        yield c


def compute(client: Any, *arrays: Any) -> list[np.ndarray]:
    return [np.asarray(f.result(timeout=TIMEOUT)) for f in client.compute(list(arrays))]


def close(got: np.ndarray, want: np.ndarray, dtype: type) -> None:
    # Same formula, same numbers; only summation order differs (blocked matmuls, per-block
    # softmax sums): a few hundred ulps of the kernel's scale.
    scale = float(np.max(np.abs(want)))
    atol = 256 * float(np.finfo(dtype).eps) * scale
    np.testing.assert_allclose(got, want, rtol=0, atol=atol)


MODEL = nk.MLP(2, (32,), 1, activation="sign")
X1 = np.random.default_rng(1).normal(size=(40, 2))
X2 = np.random.default_rng(2).normal(size=(13, 2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("outputs", ["mean", "full"])
@pytest.mark.parametrize("two_sets", [False, True], ids=["x2=None", "x2"])
def test_ntk_equals_in_memory(client: Any, dtype: type, outputs: str, two_sets: bool) -> None:
    model = nk.MLP(2, (32,), 3, activation="relu")  # O = 3: the mean over outputs too
    theta = model.init(0, xp=np, dtype=dtype)
    x1, x2 = X1.astype(dtype), X2.astype(dtype) if two_sets else None
    want = nk.ntk(model, theta, x1, x2, outputs=outputs)
    k = nk.ntk(
        model,
        theta,
        da.from_array(x1, chunks=15),
        None if x2 is None else da.from_array(x2, chunks=7),
        outputs=outputs,
    )
    assert isinstance(k, da.Array) and k.shape == want.shape and k.dtype == want.dtype
    (got,) = compute(client, k)
    close(got, want, dtype)


NNTK_CASES = {
    "unbiased": {},
    "plugin": {"estimator": "plugin"},
    "sketch": {"estimator": "sketch"},
    "directional": {"estimator": "directional"},
    "orthogonal": {"sampling": "orthogonal"},
    "qmc": {"sampling": "qmc"},
    "antithetic": {"sampling": "antithetic"},
    "paper-ball": {"form": "paper", "radial": "ball"},
    "attention-output": {"attention": nk.Attention(score="output")},
    "attention-distance": {"attention": nk.Attention(score="distance", target_ess=0.3)},
    "attention-loss": {"attention": nk.Attention(score="loss", targets=np.sign(X1[:, 0]))},
    "attention-reference": {"attention": nk.Attention(score="output", reference=X2[:9])},
    "attention-loss-reference": {
        "attention": nk.Attention(score="loss", reference=X2, targets=np.cos(X2[:, 0]))
    },
    "full": {"outputs": "full"},
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", list(NNTK_CASES))
def test_nntk_equals_in_memory(client: Any, case: str, dtype: type) -> None:
    kw = dict(NNTK_CASES[case], sigma=0.3, samples=300, seed=SEED)
    theta = MODEL.init(0, xp=np, dtype=dtype)
    x1, x2 = X1.astype(dtype), X2.astype(dtype)
    d1, d2 = da.from_array(x1, chunks=15), da.from_array(x2, chunks=7)
    plain = {"variance_reduction": "none"}  # what the graph computes
    want = [nk.nntk(MODEL, theta, x1, **kw, **plain), nk.nntk(MODEL, theta, x1, x2, **kw, **plain)]
    got = compute(client, nk.nntk(MODEL, theta, d1, **kw), nk.nntk(MODEL, theta, d1, d2, **kw))
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype
        close(g, w, dtype)


def test_nntk_stderr_and_unseeded(client: Any) -> None:
    theta = MODEL.init(0, xp=np)
    d1 = da.from_array(X1, chunks=15)
    want = nk.nntk(
        MODEL,
        theta,
        X1,
        sigma=0.3,
        samples=400,
        seed=SEED,
        return_stderr=True,
        variance_reduction="none",
    )
    k, se = nk.nntk(MODEL, theta, d1, sigma=0.3, samples=400, seed=SEED, return_stderr=True)
    for g, w in zip(compute(client, k, se), want, strict=True):
        close(g, w, np.float64)
    # Without a seed the client draws one for all tasks: still one consistent kernel (every
    # block from the same perturbations: symmetric), and an independent estimate of the same
    # kernel: within 6 standard errors of a difference of two estimates of the seeded one (an
    # unseeded run draws a new seed each time: 6, not 5, for 1600 entries), and not the same.
    (k,) = compute(client, nk.nntk(MODEL, theta, d1, sigma=0.3, samples=400))
    np.testing.assert_allclose(k, k.T, rtol=0, atol=1e-12 * np.max(np.abs(k)))
    seeded, se = want
    assert np.all(np.abs(k - seeded) <= 6 * np.sqrt(2) * se) and not np.allclose(k, seeded)


def test_nntk_streams_when_the_gram_exceeds_the_budget(client: Any) -> None:
    """A budget smaller than the M x M Gram: the pair tasks stream, with the in-memory
    stream route's numbers (value and standard errors)."""
    theta = MODEL.init(0, xp=np)
    d1, d2 = da.from_array(X1, chunks=15), da.from_array(X2, chunks=7)
    kw = {"sigma": 0.3, "samples": 300, "seed": SEED, "memory_budget": 2**20}
    plain = {"variance_reduction": "none", "route": "stream", "return_stderr": True}
    for second, dsecond in ((None, None), (X2, d2)):
        want = nk.nntk(MODEL, theta, X1, second, **kw, **plain)
        k, se = nk.nntk(MODEL, theta, d1, dsecond, return_stderr=True, **kw)
        for g, w in zip(compute(client, k, se), want, strict=True):
            close(g, w, np.float64)


def test_dask_input_errors() -> None:
    theta = MODEL.init(0, xp=np)
    d1 = da.from_array(X1, chunks=15)
    with pytest.raises(TypeError, match="seed"):
        nk.nntk(MODEL, theta, d1, sigma=0.3, samples=64, seed=np.random.default_rng(0))
    with pytest.raises(ValueError, match="callable attention"):
        nk.nntk(
            MODEL,
            theta,
            d1,
            sigma=0.3,
            samples=64,
            seed=0,
            attention=nk.Attention(score=lambda d, h: -h, temperature=1.0),
        )
    with pytest.raises(ValueError, match="sigma"):  # validated before any task runs
        nk.nntk(MODEL, theta, d1, sigma=-1.0, samples=64, seed=0)
    with pytest.raises(TypeError, match="floating"):
        nk.ntk(MODEL, theta, da.from_array(np.zeros((4, 2), dtype=np.int64), chunks=2))


@pytest.mark.slow  # a second LocalCluster, a 450 MB kernel spilled to disk
def test_kernel_larger_than_a_worker_spills_to_disk(tmp_path: Any) -> None:
    """A 440 MB kernel persisted on two workers of 300 MB each: Dask spills blocks to disk
    (or pauses the worker) instead of failing, and the numbers are those of NumPy."""
    model = nk.MLP(2, (16,), 1, activation="relu")
    theta = model.init(0, xp=np)
    n = 7_500  # 7500² float64 = 450 MB > one worker's 300 MB
    x = np.random.default_rng(0).normal(size=(n, 2))
    with local_cluster(memory_limit="300MB", local_directory=str(tmp_path)) as c:
        k = nk.ntk(model, theta, da.from_array(x, chunks=750)).persist()
        distributed.wait(k, timeout=TIMEOUT)
        spilled = c.run(lambda dask_worker: len(dask_worker.data.slow))
        assert sum(spilled.values()) > 0, spilled
        rows = c.compute(k.sum(axis=1)).result(timeout=TIMEOUT)
        corner = c.compute(k[-500:, :500]).result(timeout=TIMEOUT)
    want = nk.ntk(model, theta, x[-500:], x)
    np.testing.assert_allclose(rows[-500:], want.sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(corner, want[:, :500], rtol=1e-12)


@pytest.mark.slow  # a third LocalCluster, a worker process killed and restarted
def test_worker_killed_mid_computation_is_recovered() -> None:
    theta = MODEL.init(0, xp=np)
    x = np.random.default_rng(4).normal(size=(96, 2))
    kw = {"sigma": 0.3, "samples": 3000, "seed": SEED}
    want = nk.nntk(MODEL, theta, x, variance_reduction="none", **kw)  # what the graph computes
    with local_cluster() as c:
        before = set(c.scheduler_info()["workers"])
        future = c.compute(nk.nntk(MODEL, theta, da.from_array(x, chunks=8), **kw))
        deadline = time.monotonic() + TIMEOUT
        busy: list[str] = []
        while not busy and time.monotonic() < deadline:  # wait until a worker holds work
            busy = [w for w, tasks in c.processing().items() if tasks]
            time.sleep(0.05)
        assert busy and not future.done()
        (pid,) = c.run(os.getpid, workers=busy[:1]).values()
        os.kill(pid, signal.SIGKILL)  # the worker process dies; its nanny starts a new one
        got = future.result(timeout=TIMEOUT)
        after = set(c.scheduler_info()["workers"])
    assert busy[0] not in after and before != after
    close(np.asarray(got), want, np.float64)
