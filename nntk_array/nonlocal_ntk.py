"""Monte Carlo estimators of the nonlocal neural tangent kernel (math.md §4–5).

With D (N × M) the model differences under M shared perturbations, w_m the per-row gradient
weights, α (N × M) the sample weights (1/M, or attention) and ã = α ⊙ D ⊙ w, every estimator
is a ratio of two bilinear forms,

    K(x_i, x_k) = ã_i W ã_kᵀ / α_i V α_kᵀ,

with (W, V) = (G, 11ᵀ) for "plugin", (G off-group, 11ᵀ off-group) for "unbiased",
(diag d, I) for "sketch" and "directional"; G = U Uᵀ is the Gram matrix of the directions.
For uniform α this is exactly math.md's U-statistic, plug-in and sketch kernels; for
attention weights the denominator renormalizes over the pairs kept; dropping a batch of
samples from both forms gives the delete-a-batch jackknife standard error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from array_api_compat import array_namespace, device

from ._differences import (
    Differences,
    Smoothing,
    check_resources,
    check_samples_array,
    check_seed,
    chunk_rows,
    drawn_rows,
    evaluate_differences,
    make_directions,
    make_smoothing,
)
from ._typing import Array, Namespace
from ._validate import check_choice, check_finite, check_ndim, check_positive_int
from ._xp import resolve
from .attention import Attention
from .backends.dask import is_dask
from .backends.dtypes import require_dtype
from .backends.linalg import gram
from .models import MLP
from .monte_carlo import RunningMoments
from .sampling import COL_TILE, Directions

__all__ = ["ESTIMATORS", "nntk"]

ESTIMATORS = ("unbiased", "plugin", "sketch", "directional")
DIAGONAL = ("sketch", "directional")  # W = diag(d): no Gram of the directions
OUTPUTS = ("mean", "full")
ROUTES = ("auto", "gram", "stream")
ACCUMULATE = ("input", "float64")
_JACKKNIFE_BATCHES = 20

Model = Callable[[Array, Array], Array]


def nntk(
    f: MLP | Model,
    theta: Array,
    x1: Array,
    x2: Array | None = None,
    *,
    sigma: float,
    samples: int | Array,
    seed: int | None = None,
    rng: Any = None,
    form: str = "gaussian",
    radial: str = "gaussian",
    scale: str = "gradient-consistent",
    sampling: str = "iid",
    estimator: str = "unbiased",
    attention: Attention | None = None,
    quadrature: int = 5,
    outputs: str = "mean",
    route: str = "auto",
    batch_size: int | None = None,
    memory_budget: int | None = None,
    accumulate: str = "input",
    return_stderr: bool = False,
) -> Array | tuple[Array, Array]:
    """Monte Carlo nonlocal NTK Θ_NL(x, x') = G f(x; θ) · G f(x'; θ).

    The nonlocal gradient G f is estimated from M random parameter perturbations h_m shared
    by all inputs; the model is evaluated for a chunk of perturbations at a time in one
    batched call, and no (N, P) array is ever formed.

    Parameters
    ----------
    f : MLP or callable
        The built-in :class:`MLP`, or any ``f(thetas, x)`` mapping parameters (B, P) and
        inputs (N, ...) to outputs (B, N) or (B, N, O). No gradients are needed: sign or step
        activations, quantized weights and noisy models all work.
    theta : array, shape (P,)
    x1 : array, shape (N1, ...)
    x2 : array, shape (N2, ...), optional
        Defaults to ``x1``. Both share the same perturbations, so train and test rows of
        one estimate are consistent.
    sigma : float
        Perturbation scale σ > 0. Gaussian form: h ~ N(0, σ²I). Paper form: the paper's
        γ with ρ_γ ∝ exp(−‖h‖²/γ²) is γ = √2 σ; with ``radial="ball"``, σ is the radius.
    samples : int or array of shape (M, P)
        The number M of perturbations, or explicit unit-scale perturbations u (h = σu; for
        the Gaussian forms standard normal rows, for the ball points of the unit ball): the
        same array gives the same estimate on every backend.
    seed : int, optional
        Seed of the perturbation stream; a fresh one is drawn when neither ``seed`` nor
        ``rng`` is given. Streams regenerate exactly per (seed, library, device).
    rng : native generator, optional
        ``numpy.random.Generator``, ``torch.Generator``, JAX key or CuPy generator.
    form : {"gaussian", "paper"}
        ``"gaussian"``: Stein form, G f = E[(f(θ+h) − f(θ)) h]/σ² = ∇ of f smoothed by
        N(0, σ²I). ``"paper"``: G f = c E[(f(θ+h) − f(θ)) h/‖h‖²] with a radial density.
    radial : {"gaussian", "ball"}
        Radial density of the paper form.
    scale : {"gradient-consistent", "literal"}
        Paper form only: c = P (G f → ∇f as σ → 0) or c = 1 (the literal operator, which is
        ∇f/P for linear f; the kernel is then 1/P² of the consistent one).
    sampling : {"iid", "antithetic", "orthogonal", "qmc"}
        Independent normal rows; mirrored pairs f(θ+h) − f(θ−h) (exact slopes for
        quadratics, 2M evaluations); rows orthogonal within groups of at most P (lower
        gradient variance); a randomly shifted lattice per group (jointly stratified).
        Structured rows are dependent within a group, and ``"unbiased"`` then pairs only rows
        of different groups (two groups of ⌈M/2⌉ rows unless P is smaller).
    estimator : {"unbiased", "plugin", "sketch", "directional"}
        ``"unbiased"`` (U-statistic, default): drops the m = n pairs, so for the fixed kernel
        its mean is exactly ∇f_σ(x)·∇f_σ(x'); not positive semidefinite (clip or add a ridge
        before solving). ``"plugin"``: the paper's literal Gram of estimated gradients, PSD,
        biased: for linear f its mean is (1 + (P+1)/M)·∇f·∇f', so it is dominated by noise
        when M ≪ P. ``"sketch"``: (1/(Mσ²)) Σ_m D_im D_km, PSD, variance independent of P,
        but **a different kernel** for non-smooth f (E[D D']/σ² ≠ ∇f_σ·∇f_σ'). ``"directional"``:
        directional Gaussian smoothing along the M sample directions with ``quadrature``
        Gauss–Hermite nodes, (P/M) Σ_m D_m f(x) D_m f(x'); exact for affine f with M = P
        orthogonal directions; (M(quadrature − 1)) evaluations for odd ``quadrature``.
    attention : Attention, optional
        Attention weights α_im instead of 1/M (math.md §5; the scores are this library's
        reconstruction). ``Attention(temperature=math.inf)`` reproduces the fixed kernel.
    quadrature : int, default 5
        Gauss–Hermite nodes of the directional estimator.
    outputs : {"mean", "full"}
        Average over the O outputs, or return every output pair (N1, N2, O, O).
    route : {"auto", "gram", "stream"}
        Contract through the M × M Gram of the directions (cost ~M²P) or stream the
        directions in column blocks (cost ~N M P); ``"auto"`` picks the cheaper.
    batch_size : int, optional
        Perturbations per batched model call; by default as many as fit in a quarter of
        ``memory_budget`` (model temporaries), and no more than one drawn block of rows.
    memory_budget : int, optional
        Bytes for perturbation chunks, model activations and cached random tiles (default
        384 MiB); peak memory does not grow with M beyond the N × M differences.
    accumulate : {"input", "float64"}
        Dtype of differences, Gram and contractions; ``"float64"`` protects float32 inputs
        from cancellation in the U-statistic. The result has the input dtype.
    return_stderr : bool, default False
        Also return entrywise standard errors (delete-a-batch jackknife over 20 batches of
        independent samples or groups).

    Returns
    -------
    K : array, shape (N1, N2), or (N1, N2, O, O) for ``outputs="full"``
    stderr : array, same shape, only with ``return_stderr=True``

    Raises
    ------
    TypeError
        Mixed libraries, non-floating dtypes, a non-callable ``f``, a bad ``seed``/``rng``
        or ``attention``, ``sampling="orthogonal"`` without a linalg extension.
    ValueError
        Shape mismatches, mixed devices, NaN/inf inputs, ``sigma <= 0``, ``samples < 1`` (or
        too few independent samples for the estimator), unknown options, incompatible
        combinations (say, ``estimator="directional"`` with attention).

    Notes
    -----
    Dask arrays ``x1``/``x2`` (NumPy or CuPy chunks, any row chunking) give a lazy Dask
    kernel with the same numbers as the in-memory call for the same ``seed``: each task
    regenerates the perturbations from the seed (an int; ``rng`` is refused, a missing
    seed is drawn once on the client), so nothing of size M × P crosses the network. Each
    block of rows evaluates all M perturbations; row blocks of a few hundred inputs keep
    the regeneration cheap next to the evaluations. Callable attention scores and
    ``route="stream"`` are not available there. See the "Distributed" page of the docs.

    Examples
    --------
    >>> import numpy as np
    >>> import nntk_array as nk
    >>> model = nk.MLP(1, (32,), activation="sign")
    >>> theta = model.init(0, xp=np)
    >>> x = np.linspace(-1.0, 1.0, 4)[:, None]
    >>> K, se = nk.nntk(model, theta, x, sigma=0.3, samples=2000, seed=0, return_stderr=True)
    >>> K.shape, bool(np.all(se > 0)), bool(np.allclose(K, K.T))
    ((4, 4), True, True)
    """
    options = {
        "sigma": sigma,
        "samples": samples,
        "seed": seed,
        "rng": rng,
        "form": form,
        "radial": radial,
        "scale": scale,
        "sampling": sampling,
        "estimator": estimator,
        "attention": attention,
        "quadrature": quadrature,
        "outputs": outputs,
        "route": route,
        "batch_size": batch_size,
        "memory_budget": memory_budget,
        "accumulate": accumulate,
        "return_stderr": return_stderr,
    }
    if is_dask(theta, x1, x2):
        from .backends.dask import nntk_graph

        return nntk_graph(f, theta, x1, x2, options)
    run = prepare(f, theta, x1, x2, **options)
    xp, n1 = run.xp, run.n1
    diffs = evaluate_rows(run)
    a = diffs.raw * diffs.weights
    if attention is None:
        m = run.dirs.num_rows
        alpha = xp.full((a.shape[0], m), 1.0 / m, dtype=run.acc, device=device(a))
    else:
        alpha = attention._normalize(xp, attention_scores(run, diffs), a.shape[0])
    a = a * alpha[:, None, :]
    a1, al1 = a[:n1, ...], alpha[:n1, ...]
    a2, al2 = (a1, al1) if x2 is None else (a[n1:, ...], alpha[n1:, ...])
    c = run.contraction
    if run.use_stream:
        num, sq_norms = _stream(xp, run.dirs, a1, a2, run.acc, run.budget, c.full, x2 is None)
        if estimator == "unbiased":
            num = num - _quad(xp, a1, sq_norms, a2, c.full)
        den = _den(xp, estimator, al1, al2, c.group_size, c.groups)
        return xp.astype(_ratio(xp, num, den, c.full), run.theta.dtype, copy=False)
    return contract_pair(c, a1, al1, a2, al2, weight_matrix(run, diffs))


@dataclass(frozen=True)
class Contraction:
    """What turning two blocks of weighted differences into a kernel block needs."""

    estimator: str
    group_size: int
    groups: list[tuple[int, int]]
    full: bool
    stderr: bool
    dtype: Any


@dataclass(frozen=True)
class Run:
    """A validated call: the namespace, the model on the inputs, and the directions."""

    xp: Namespace
    theta: Array
    n1: int
    n_out: int
    targets: Array | None
    evaluate: Callable[[Array], Array]
    attention: Attention | None
    sm: Smoothing
    acc: Any
    budget: int
    chunk: int
    draw: int
    dirs: Directions
    use_stream: bool
    paper: bool
    contraction: Contraction


def prepare(
    f: MLP | Model,
    theta: Array,
    x1: Array,
    x2: Array | None,
    *,
    sigma: float,
    samples: int | Array,
    seed: int | None,
    rng: Any,
    form: str,
    radial: str,
    scale: str,
    sampling: str,
    estimator: str,
    attention: Attention | None,
    quadrature: int,
    outputs: str,
    route: str,
    batch_size: int | None,
    memory_budget: int | None,
    accumulate: str,
    return_stderr: bool,
) -> Run:
    """Validate the arguments of :func:`nntk` and make every decision that depends on shapes
    (not values): memory sizes, route, directions. Nothing is evaluated or drawn here."""
    samples_arr = samples if hasattr(samples, "shape") else None
    if attention is not None and not isinstance(attention, Attention):
        raise TypeError(f"`attention` must be an nk.Attention; got {type(attention).__name__}")
    targets = None if attention is None else attention.targets
    xp, (theta, x1, x2, samples_arr, targets) = resolve(
        theta=theta, x1=x1, x2=x2, samples=samples_arr, targets=targets
    )
    check_choice("estimator", estimator, ESTIMATORS)
    check_choice("outputs", outputs, OUTPUTS)
    check_choice("route", route, ROUTES)
    check_choice("accumulate", accumulate, ACCUMULATE)
    budget, batch_size = check_resources(memory_budget, batch_size, return_stderr)
    directional = estimator == "directional"
    if directional:
        quadrature = check_positive_int("quadrature", quadrature)
        if quadrature < 2:
            raise ValueError(f"`quadrature` must be >= 2; got {quadrature}")
        if attention is not None or sampling == "antithetic" or form != "gaussian":
            raise ValueError(
                "estimator='directional' is Gaussian smoothing along directions with symmetric "
                "Gauss-Hermite nodes: it takes no attention, antithetic sampling or paper form"
            )

    evaluate, n_out, per_set, p = _evaluator(f, xp, theta, x1, x2)
    if samples_arr is not None:
        check_samples_array(samples_arr, p)
    check_finite(xp, theta=theta, x1=x1, x2=x2, samples=samples_arr, targets=targets)
    n1 = x1.shape[0]
    if targets is not None and tuple(targets.shape) not in ((n1,), (n1, n_out)):
        raise ValueError(
            f"`attention.targets` must have shape ({n1},) or ({n1}, {n_out}); got "
            f"{tuple(targets.shape)}"
        )
    acc = xp.float64 if accumulate == "float64" else theta.dtype
    require_dtype(xp, acc)
    itemsize = 4 if theta.dtype == xp.float32 else 8
    acc_size = 4 if acc == xp.float32 else 8
    m_hint = (
        samples_arr.shape[0] if samples_arr is not None else check_positive_int("samples", samples)
    )
    antithetic = sampling == "antithetic"
    sm = make_smoothing(
        sigma,
        form,
        radial,
        scale,
        num_params=p,
        antithetic=antithetic,
        quadrature=quadrature if directional else None,
    )
    # Memory: directions drawn for evaluation (raw tiles and the assembled perturbed rows)
    # plus one chunk's model temporaries, or the Gram phase's column block; random tiles
    # drawn for the evaluations are cached in what remains of the budget.
    copies = 3 if antithetic or form != "gaussian" or directional else 2
    row_bytes = p * itemsize * copies
    draw = drawn_rows(budget, row_bytes)
    chunk = chunk_rows(batch_size, budget, per_set, m_hint)
    if batch_size is None:
        chunk = min(chunk, draw)
    eval_bytes = draw * row_bytes + chunk * per_set
    n2 = n1 if x2 is None else x2.shape[0]
    use_stream = _choose_stream(
        estimator,
        sampling,
        samples_arr is not None,
        route,
        return_stderr,
        m_hint,
        n1,
        n2,
        symmetric=x2 is None,
    )
    if use_stream:  # a block of rows of one column tile, and (N, O, COL_TILE) products
        gram_bytes = budget // 8 + 2 * (n1 + n2) * n_out * COL_TILE * acc_size
    else:
        gram_bytes = 2 * COL_TILE * m_hint * acc_size + 3 * m_hint**2 * acc_size
    cache = max(0, budget - max(eval_bytes, gram_bytes))
    structured_rows = max(1, (budget // 2) // (3 * itemsize * p))

    def group_size(m: int) -> int:
        # Independent groups: 20 for the jackknife, 2 for the U-statistic, else one.
        n_groups = 20 if return_stderr else 2 if estimator == "unbiased" else 1
        size = -(-m // n_groups)
        if sampling == "orthogonal":  # at most P orthogonal rows, QR within the budget
            size = min(size, p, structured_rows)
        return max(1, size)

    dirs = make_directions(
        xp,
        samples if samples_arr is None else samples_arr,
        sampling,
        check_seed(seed, rng),
        num_params=p,
        dtype=theta.dtype,
        dev=device(theta),
        group_size=group_size,
        cache_bytes=cache,
    )
    m = dirs.num_rows
    groups = dirs.groups
    if (estimator == "unbiased" or return_stderr) and len(groups) < 2:
        raise ValueError(
            f"estimator={estimator!r}{' with return_stderr' if return_stderr else ''} needs "
            f"at least 2 independent samples (or groups); got samples={m}"
        )
    full = outputs == "full"
    c = Contraction(estimator, dirs.group_size, groups, full, return_stderr, theta.dtype)
    return Run(
        xp=xp,
        theta=theta,
        n1=n1,
        n_out=n_out,
        targets=targets,
        evaluate=evaluate,
        attention=attention,
        sm=sm,
        acc=acc,
        budget=budget,
        chunk=chunk,
        draw=draw,
        dirs=dirs,
        use_stream=use_stream,
        paper=form == "paper",
        contraction=c,
    )


def evaluate_rows(run: Run) -> Differences:
    """The differences D (N, O, M) of all inputs (x1 then x2) and the per-sample vectors."""
    return evaluate_differences(
        run.evaluate,
        run.theta,
        run.dirs,
        run.sm,
        chunk=run.chunk,
        acc_dtype=run.acc,
        norms=run.attention is not None,
        draw=run.draw,
    )


def attention_scores(run: Run, diffs: Differences, num_inputs: int | None = None) -> Array:
    """The attention scores of these inputs (sums over inputs: blocks add up)."""
    xp, att, n1, t = run.xp, run.attention, run.n1, run.targets
    assert att is not None  # callers ask for scores only with attention
    base1 = tg = None
    if att.score == "loss" and t is not None:  # Attention requires targets for "loss"
        base1 = xp.astype(run.evaluate(run.theta[None, :])[0, :n1, ...], run.acc, copy=False)
        tg = xp.astype(t if t.ndim == 2 else t[:, None], run.acc, copy=False)
    return att._scores(xp, diffs.raw, diffs.h_sq, run.sm.sigma, base1, tg, num_inputs=num_inputs)


def weight_matrix(run: Run, diffs: Differences | None) -> Array:
    """W of the bilinear form: the Gram (masked off-group for "unbiased") or a diagonal.

    Only the diagonal estimators read ``diffs`` (its per-sample vectors); the Gram comes
    from the directions alone.
    """
    xp, dirs, acc, est = run.xp, run.dirs, run.acc, run.contraction.estimator
    if est in DIAGONAL:
        assert diffs is not None
        if est == "directional":
            p = float(dirs.num_params)
            return xp.full(diffs.weights.shape, p, dtype=acc, device=device(diffs.weights))
        # sketch: d = 1 (Gaussian form) or |u|²/P (paper form), math.md §4
        return diffs.sq_norms / dirs.num_params if run.paper else xp.ones_like(diffs.weights)
    g = _gram(xp, dirs, acc, run.budget)
    if est == "plugin":
        return g
    dev = device(g)
    ints = xp.__array_namespace_info__().default_dtypes(device=dev)["integral"]
    gid = xp.arange(dirs.num_rows, dtype=ints, device=dev) // dirs.group_size
    return xp.where(gid[:, None] != gid[None, :], g, 0.0)


def contract_pair(
    c: Contraction, a1: Array, al1: Array, a2: Array, al2: Array, w: Array
) -> Array | tuple[Array, Array]:
    """The kernel block (and standard error) of two blocks of weighted differences."""
    xp = array_namespace(a1, a2, w)
    est = c.estimator
    den = _den(xp, est, al1, al2, c.group_size, c.groups)
    kernel = xp.astype(_ratio(xp, _quad(xp, a1, w, a2, c.full), den, c.full), c.dtype, copy=False)
    if not c.stderr:
        return kernel
    se = _jackknife(xp, est, a1, a2, al1, al2, w, c.group_size, c.groups, c.full)
    return kernel, xp.astype(se, c.dtype, copy=False)


def _choose_stream(
    estimator: str,
    sampling: str,
    explicit: bool,
    route: str,
    return_stderr: bool,
    m: int,
    n1: int,
    n2: int,
    *,
    symmetric: bool,
) -> bool:
    """Whether to contract by streaming column tiles (cost ~N M P) instead of the M x M Gram
    (cost ~M² P); the stream needs regenerable columns and independent rows, and gives no
    standard error."""
    possible = estimator in ("plugin", "unbiased") and (
        explicit or sampling in ("iid", "antithetic")
    )
    if route == "stream":
        if not possible:
            raise ValueError(
                "route='stream' needs estimator 'plugin' or 'unbiased' and column-regenerable "
                "directions (sampling 'iid', 'antithetic' or explicit samples)"
            )
        if return_stderr:
            raise ValueError("route='stream' gives no standard error; use route='gram'")
        return True
    n_all = n1 if symmetric else n1 + n2
    return (
        route == "auto" and possible and not return_stderr and 2 * n_all * m + 2 * n1 * n2 < m * m
    )


def _evaluator(
    f: MLP | Model, xp: Namespace, theta: Array, x1: Array, x2: Array | None
) -> tuple[Callable[[Array], Array], int, int, int]:
    """(evaluate (B, P) -> (B, N, O) on x1 ∪ x2, O, bytes per parameter set, P)."""
    x = x1 if x2 is None else xp.concat([x1, x2], axis=0)
    n = x.shape[0]
    itemsize = 4 if theta.dtype == xp.float32 else 8
    if isinstance(f, MLP):
        f.check_theta(theta, batched=False)
        f.check_x("x1", x1)
        if x2 is not None:
            f.check_x("x2", x2)

        def evaluate_mlp(thetas: Array) -> Array:
            return f._forward(xp, thetas, x, keep_trace=False)[0]

        return evaluate_mlp, f.out_features, f.eval_bytes_per_set(n, itemsize), f.num_params
    if not callable(f):
        raise TypeError(f"`f` must be an nk.MLP or a callable f(thetas, x); got {type(f).__name__}")
    check_ndim("theta", theta, (1,), "(P,)")
    check_ndim("x1", x1, tuple(range(1, 33)), "(N1, ...)")
    if x2 is not None and tuple(x2.shape[1:]) != tuple(x1.shape[1:]):
        raise ValueError(
            f"`x2` must have shape (N2, {', '.join(map(str, x1.shape[1:]))}) to match `x1`; "
            f"got shape {tuple(x2.shape)}"
        )

    def evaluate(thetas: Array) -> Array:
        out = f(thetas, x)
        return out[:, :, None] if out.ndim == 2 else out

    probe = f(theta[None, :], x)
    if not hasattr(probe, "shape") or probe.ndim not in (2, 3) or tuple(probe.shape[:2]) != (1, n):
        raise ValueError(
            f"`f(thetas, x)` must return shape (B, N) or (B, N, O); for thetas of shape "
            f"(1, P) and N = {n} inputs it returned {getattr(probe, 'shape', type(probe))}"
        )
    resolve(theta=theta, output=probe)  # same library and device, floating dtype
    n_out = 1 if probe.ndim == 2 else probe.shape[2]
    return evaluate, n_out, 4 * itemsize * n * n_out, theta.shape[0]


def _quad(xp: Namespace, a1: Array, w: Array | None, a2: Array, full: bool) -> Array:
    """Σ_{m,n} a1[i, o, m] W[m, n] a2[k, o', n]: averaged over o = o', or all (o, o').

    ``w`` is an (M, M) matrix, an (M,) diagonal, or ``None`` for the identity.
    """
    n1, o, _ = a1.shape
    n2 = a2.shape[0]
    y = a1 if w is None else (a1 * w if w.ndim == 1 else xp.matmul(a1, w))
    if full:
        k = xp.matmul(
            xp.reshape(y, (n1 * o, -1)), xp.permute_dims(xp.reshape(a2, (n2 * o, -1)), (1, 0))
        )
        return xp.permute_dims(xp.reshape(k, (n1, o, n2, o)), (0, 2, 1, 3))
    k = xp.matmul(xp.reshape(y, (n1, -1)), xp.permute_dims(xp.reshape(a2, (n2, -1)), (1, 0)))
    return k / o if o > 1 else k


def _group_sums(
    xp: Namespace, alpha: Array, group_size: int, groups: list[tuple[int, int]]
) -> Array:
    if group_size == 1:
        return alpha
    return xp.stack([xp.sum(alpha[:, s:e], axis=1) for s, e in groups], axis=1)


def _den(
    xp: Namespace,
    estimator: str,
    al1: Array,
    al2: Array,
    group_size: int,
    groups: list[tuple[int, int]],
) -> Array:
    """α_i V α_kᵀ: the weight of the sample pairs each estimator keeps."""
    if estimator in ("sketch", "directional"):
        return xp.matmul(al1, xp.permute_dims(al2, (1, 0)))
    s1, s2 = xp.sum(al1, axis=1), xp.sum(al2, axis=1)
    den = s1[:, None] * s2[None, :]
    if estimator == "plugin":
        return den
    g1 = _group_sums(xp, al1, group_size, groups)
    g2 = _group_sums(xp, al2, group_size, groups)
    return den - xp.matmul(g1, xp.permute_dims(g2, (1, 0)))


def _ratio(xp: Namespace, num: Array, den: Array, full: bool) -> Array:
    """num / den, 0 where no pair of samples carries weight (fully concentrated attention)."""
    tiny = 1024 * float(xp.finfo(den.dtype).eps)
    ok = den > tiny * xp.max(xp.abs(den))
    if full:
        ok, den = ok[:, :, None, None], den[:, :, None, None]
    return xp.where(ok, num / xp.where(ok, den, 1.0), 0.0)


def _gram(xp: Namespace, dirs: Directions, acc: Any, budget: int) -> Array:
    """G = U Uᵀ from column blocks (one regeneration of U) or from row-block pairs."""
    m, p = dirs.num_rows, dirs.num_params
    itemsize = 4 if acc == xp.float32 else 8
    if dirs.has_columns:
        width = COL_TILE  # M x COL_TILE numbers at a time: memory stays flat in P
        g = None
        for c0 in range(0, p, width):
            part = gram(xp, xp.astype(dirs.columns(c0, min(c0 + width, p)), acc, copy=False))
            g = part if g is None else g + part
        return g
    rows_per = max(dirs.group_size, (budget // 4) // (p * itemsize))
    starts = list(range(0, m, rows_per))
    grid: list[list[Array]] = [[None] * len(starts) for _ in starts]
    for i, s in enumerate(starts):
        ui = xp.astype(dirs.rows(s, min(s + rows_per, m)), acc, copy=False)
        for j in range(i, len(starts)):
            stop = min(starts[j] + rows_per, m)
            uj = ui if j == i else xp.astype(dirs.rows(starts[j], stop), acc, copy=False)
            grid[i][j] = xp.matmul(ui, xp.permute_dims(uj, (1, 0)))
            if j != i:
                grid[j][i] = xp.permute_dims(grid[i][j], (1, 0))
    if len(starts) == 1:
        return grid[0][0]
    return xp.concat([xp.concat(r, axis=1) for r in grid], axis=0)


def _stream(
    xp: Namespace,
    dirs: Directions,
    a1: Array,
    a2: Array,
    acc: Any,
    budget: int,
    full: bool,
    symmetric: bool,
) -> tuple[Array, Array]:
    """Σ over column tiles c of (ã1 U_c)(ã2 U_c)ᵀ, i.e. ã U Uᵀ ãᵀ without the M × M Gram,
    and the squared row norms |u_m|² gathered on the way. U_c is consumed a block of rows at
    a time, so memory does not grow with M."""
    p = dirs.num_params
    itemsize = 4 if acc == xp.float32 else 8
    rows = max(1, (budget // 8) // (COL_TILE * itemsize))
    num: Array = None
    sq_parts: list[Array] = []
    for c0 in range(0, p, COL_TILE):
        c1 = min(c0 + COL_TILE, p)
        b1: Array = None
        b2: Array = None
        norms = []
        for r0, r1, u in dirs.column_blocks(c0, c1, rows):
            u = xp.astype(u, acc, copy=False)
            part1 = xp.matmul(a1[..., r0:r1], u)
            b1 = part1 if b1 is None else b1 + part1
            if not symmetric:
                part2 = xp.matmul(a2[..., r0:r1], u)
                b2 = part2 if b2 is None else b2 + part2
            norms.append(xp.sum(u * u, axis=1))
        part = _quad(xp, b1, None, b1 if symmetric else b2, full)
        num = part if num is None else num + part
        col_sq = norms[0] if len(norms) == 1 else xp.concat(norms)
        sq_parts.append(col_sq)
    sq = sq_parts[0]
    for extra in sq_parts[1:]:
        sq = sq + extra
    return num, sq


def _jackknife(
    xp: Namespace,
    estimator: str,
    a1: Array,
    a2: Array,
    al1: Array,
    al2: Array,
    w: Array,
    group_size: int,
    groups: list[tuple[int, int]],
    full: bool,
) -> Array:
    """Delete-a-batch jackknife standard error over up to 20 batches of whole groups."""
    n_batches = min(len(groups), _JACKKNIFE_BATCHES)
    bounds = [groups[(len(groups) * b) // n_batches][0] for b in range(n_batches)]
    bounds.append(groups[-1][1])
    m = a1.shape[-1]
    dev = device(a1)
    col = xp.arange(m, device=dev)
    moments = RunningMoments()
    for b in range(n_batches):
        keep = xp.astype((col < bounds[b]) | (col >= bounds[b + 1]), a1.dtype, copy=False)
        k = _ratio(
            xp,
            _quad(xp, a1 * keep, w, a2 * keep, full),
            _den(xp, estimator, al1 * keep, al2 * keep, group_size, groups),
            full,
        )
        moments.add(xp, k)
    return xp.sqrt(moments.m2 * ((n_batches - 1) / n_batches))
