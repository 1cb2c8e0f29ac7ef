"""The Monte Carlo nonlocal neural tangent kernel (entry point over :mod:`nntk_array._mc`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from array_api_compat import is_jax_namespace

from ._mc import kernel, precision
from ._typing import Array
from ._validate import check_choice
from ._xp import is_dask
from .attention import Attention
from .backends.compile import programs_of
from .models.protocol import Model
from .options import (
    Estimate,
    Estimator,
    Resources,
    Smoothing,
    check_seed,
    estimator_spec,
    renamed,
    resources_spec,
    sample_count,
    smoothing_spec,
)

__all__ = ["nntk"]

OUTPUTS = ("mean", "full")

ModelFn = Callable[[Array, Array], Array]


def nntk(
    f: Model | ModelFn,
    theta: Array,
    x1: Array,
    x2: Array | None = None,
    *,
    sigma: float | None = None,
    samples: int | Array | None = None,
    seed: Any = None,
    smoothing: Smoothing | None = None,
    form: str = "gaussian",
    radial: str = "gaussian",
    scale: str = "gradient-consistent",
    perturbation: str = "gaussian",
    rank: int | None = None,
    estimator: str | Estimator = "unbiased",
    sampling: str = "iid",
    quadrature: int = 5,
    accumulate: str = "input",
    variance_reduction: str | tuple[str, ...] = "auto",
    attention: Attention | None = None,
    outputs: str = "mean",
    resources: Resources | None = None,
    memory_budget: int | None = None,
    samples_per_call: int | None = None,
    route: str = "auto",
    return_stderr: bool = False,
    rtol: float | None = None,
    atol: float | None = None,
    max_samples: int | None = None,
    error: str = "relative",
    progress: Callable[[str], None] | None = None,
    rng: Any = None,
    batch_size: int | None = None,
) -> Array | Estimate:
    """Monte Carlo nonlocal NTK Θ_NL(x, x') = G f(x; θ) · G f(x'; θ).

    The nonlocal gradient G f is estimated from M random parameter perturbations h_m shared
    by all inputs; the model is evaluated for a chunk of perturbations at a time in one
    batched call, and no (N, P) array is ever formed.

    Parameters
    ----------
    f : model or callable
        A model (:class:`nntk_array.Model`: the built-in :class:`MLP` or any object with
        ``num_params`` and a batched ``apply``), or any ``f(thetas, x)`` mapping parameters
        (B, P) and inputs (N, ...) to outputs (B, N) or (B, N, O). No gradients are needed:
        sign or step activations, quantized weights and noisy models all work.
    theta : array, shape (P,)
    x1 : array, shape (N1, ...)
    x2 : array, shape (N2, ...), optional
        Defaults to ``x1``. Both share the same perturbations, so train and test rows of
        one estimate are consistent.
    sigma : float
        Perturbation scale σ > 0. Gaussian form: h ~ N(0, σ²I). Paper form: the paper's
        γ with ρ_γ ∝ exp(−‖h‖²/γ²) is γ = √2 σ; with ``radial="ball"``, σ is the radius.
    samples : int or array of shape (M, P)
        The number M of perturbations (any integer, NumPy integer scalars included), or
        explicit unit-scale perturbations u (h = σu; for the Gaussian forms standard normal
        rows, for the ball points of the unit ball): the same array gives the same estimate
        on every backend. Required unless ``rtol`` or ``atol`` is given; it is then the
        first M tried (default 256).
    seed : int or native generator, optional
        Seed of the perturbation stream, or a generator of the arrays' library
        (``numpy.random.Generator``, ``torch.Generator`` on ``theta``'s device, a JAX key,
        a CuPy generator), as in :meth:`MLP.init`; a fresh seed is drawn when omitted.
        Streams regenerate exactly per (seed, library, device).
    smoothing : Smoothing, optional
        ``sigma``, ``form``, ``radial``, ``scale``, ``perturbation`` and ``rank`` as one spec
        (then leave those out).
    form : {"gaussian", "paper"}
        ``"gaussian"``: Stein form, G f = E[(f(θ+h) − f(θ)) h]/σ² = ∇ of f smoothed by
        N(0, σ²I). ``"paper"``: G f = c E[(f(θ+h) − f(θ)) h/‖h‖²] with a radial density.
    radial : {"gaussian", "ball"}
        Radial density of the paper form.
    scale : {"gradient-consistent", "literal"}
        Paper form only: c = P (G f → ∇f as σ → 0) or c = 1 (the literal operator, which is
        ∇f/P for linear f; the kernel is then 1/P² of the consistent one).
    perturbation : {"gaussian", "lowrank"}
        The perturbation family (Gaussian form). ``"gaussian"`` (default): h ~ N(0, σ²I), the
        estimand is the Gaussian NNTK ∇f_σ·∇f_σ'. ``"lowrank"``: each weight matrix W
        (fan_in × fan_out) of a model that declares them (``matrix_blocks``; :class:`MLP`
        does) is perturbed by E = (σ/√r) Σ_k a_k b_kᵀ with a_k, b_k ~ N(0, I), every other
        parameter (biases) by N(0, σ²); the entries keep variance σ² and no correlation, and
        the kernel uses the same estimator with the Gram of the directions computed from
        the factors (M²·r²·(fan_in + fan_out) per matrix, in row blocks within
        ``memory_budget``; no M × P array). No M·P normals are drawn (the factors,
        M·r·(fan_in + fan_out) per matrix, are drawn once and kept) and :class:`MLP`
        evaluates each layer as one shared-weight GEMM plus rank-r products, so it is
        faster when P is large. **It estimates a different kernel**, the low-rank smoothed
        NNTK: exactly the local NTK for affine, quadratic and deep linear f at every σ, and
        for non-smooth nets a kernel that tends to the Gaussian NNTK with a bias ~ 1/r
        (about 1-4 % at r = 1 for sign nets with biases, up to 30 % without; see
        :func:`nntk_array.analytic.finite_width_nntk` with ``rank=`` for the one-hidden-layer
        closed form). It takes estimators ``"unbiased"``, ``"plugin"`` and ``"sketch"``,
        sampling ``"iid"`` or ``"antithetic"``, a count of ``samples``, no attention, no
        variance reduction (``"auto"`` applies none), the Gram route and in-memory inputs.
    rank : int, optional
        The rank r >= 1 of ``perturbation="lowrank"`` (default 4; r >= 16 for sign-like
        activations keeps the bias near 1 %); only with ``"lowrank"``.
    sampling : {"iid", "antithetic", "orthogonal", "qmc"}
        Independent normal rows; mirrored pairs f(θ+h) − f(θ−h) (exact slopes for
        quadratics, 2M evaluations); rows orthogonal within groups of at most P (lower
        gradient variance); a randomly shifted lattice per group (jointly stratified).
        Structured rows are dependent within a group, and ``"unbiased"`` then pairs only rows
        of different groups (two groups of ⌈M/2⌉ rows unless P is smaller).
    estimator : {"unbiased", "plugin", "sketch", "directional"} or Estimator
        A name, or an :class:`Estimator` spec that also carries ``sampling``,
        ``quadrature`` and ``accumulate`` (then leave those out).
        ``"unbiased"`` (U-statistic, default): drops the m = n pairs, so for the fixed kernel
        its mean is exactly ∇f_σ(x)·∇f_σ(x'); not positive semidefinite (clip or add a ridge
        before solving). ``"plugin"``: the paper's literal Gram of estimated gradients, PSD,
        biased: for linear f its mean is (1 + (P+1)/M)·∇f·∇f', so it is dominated by noise
        when M ≪ P. ``"sketch"``: (1/(Mσ²)) Σ_m D_im D_km, PSD, variance independent of P,
        but **a different kernel** for non-smooth f (E[D D']/σ² ≠ ∇f_σ·∇f_σ'). ``"directional"``:
        directional Gaussian smoothing along the M sample directions with ``quadrature``
        Gauss–Hermite nodes, (P/M) Σ_m D_m f(x) D_m f(x'); exact for affine f with M = P
        orthogonal directions; (M(quadrature − 1)) evaluations for odd ``quadrature``.
    variance_reduction : "auto", "none", or names from {"readout", "units", "jvp"}
        Exactly unbiased variance reduction of ``estimator="unbiased"`` (same estimand, the
        Gaussian NNTK ∇f_σ·∇f_σ'): ``"readout"`` treats the parameters that enter linearly
        (the readout of :class:`MLP` and of any model with ``last_layer``) exactly — their
        smoothed gradient is an average of perturbed features, estimated without their own
        P-dimensional noise; ``"units"`` (with ``"readout"``) lets each unit of the last
        hidden layer keep only its own term in its Stein sum; ``"jvp"`` subtracts the
        model's linearization σ J u from every difference and adds the exact local gradient
        back (a control variate from forward-mode derivatives: the MLP's structure, or
        PyTorch/JAX autodiff for adapters; void for sign/step activations, so ``"auto"``
        leaves it out there). ``"auto"`` (default) applies every reduction the model
        supports whose batch sums fit in half of ``memory_budget`` (about
        20·N·(P − O·width)·O numbers), and none for plain callables without autodiff, other
        estimators, the paper form, attention, structured sampling or several outputs with
        ``outputs="full"``; ``"none"`` is the plain U-statistic (math: docs, Mathematics,
        'Variance reduction'). A reduced estimate pairs samples of 20 different batches
        (unbiased: the batches are independent), so it differs from the plain one for the
        same seed. Measured on a one-hidden-layer ReLU network of width 256 at M = 2048
        (σ = 0.3): centred error 0.0016 against 0.088 for ``"none"`` at about the same
        time; see the docs' options page for each reduction's variance and cost.
    attention : Attention, optional
        Attention weights α_im instead of 1/M (the scores are this library's own; see
        :class:`Attention` for their reference inputs). ``Attention(temperature=math.inf)``
        reproduces the fixed kernel.
    quadrature : int, default 5
        Gauss–Hermite nodes of the directional estimator.
    outputs : {"mean", "full"}
        Average over the O outputs, or return every output pair (N1, N2, O, O).
    route : {"auto", "gram", "stream"}
        Contract through the M × M Gram of the directions (cost ~M²P) or stream the
        directions in column blocks (cost ~N M P); ``"auto"`` picks the cheaper, and
        streams wherever it can once the Gram's M × M matrices would exceed
        ``memory_budget``. Streaming takes estimators ``"unbiased"`` and ``"plugin"`` with
        ``"iid"``, ``"antithetic"`` or explicit samples. Routes are the plain estimator's;
        a variance-reduced estimate contracts its batch sums instead.
    samples_per_call : int, optional
        Perturbations per batched model call; by default as many as fit in a quarter of
        ``memory_budget`` (model temporaries), and no more than one drawn block of rows.
        (Called ``batch_size`` before 0.3, which elsewhere means inputs per block.)
    memory_budget : int, optional
        Bytes for perturbation chunks, model activations and cached random tiles (default
        384 MiB). **What grows beyond it:** the N × O × M differences and the kernel on
        every route (with standard errors 20 more N1 × N2 blocks), and on the Gram route of
        ``"unbiased"`` and ``"plugin"`` (``route="gram"``, structured sampling) three M × M
        matrices, so peak memory grows like M² there; the stream route and the diagonal
        estimators grow only like N·M. A variance-reduced estimate keeps 20 batch sums of
        N × F numbers (F as under ``variance_reduction``), nothing that grows with M.
    resources : Resources, optional
        ``memory_budget``, ``samples_per_call`` and ``route`` as one spec.
    accumulate : {"input", "float64"}
        Dtype of differences, Gram and contractions; ``"float64"`` protects float32 inputs
        from cancellation in the U-statistic. The result has the input dtype.
    return_stderr : bool, default False
        Also return entrywise standard errors (delete-a-batch jackknife over 20 batches of
        independent samples or groups), formed from per-batch parts of the kernel's own
        products: about 1.5x the kernel's time, on the same route and in the same memory
        but for the 20 N1 × N2 blocks. Structured samplers (``"orthogonal"``, ``"qmc"``)
        then use groups of ⌈M/20⌉ rows (at most P for orthogonal) instead of ⌈M/2⌉, so
        their value differs from a call without errors; for iid and antithetic samples the
        value is the same to rounding.
    rtol, atol : float, optional
        A requested precision: the estimate (with standard errors) is computed for
        M = ``samples``, 2M, 4M, … from the same seed until its ``error`` is <= ``rtol`` or
        its largest standard error is <= ``atol`` (either suffices when both are given), at
        most ``max_samples``. The result is exactly a plain call with
        ``samples=result.samples, return_stderr=True`` and the same seed; the earlier rounds
        cost at most as much as that call. An :class:`Estimate` is returned.
    max_samples : int, optional
        The largest M tried with ``rtol``/``atol`` (default 65536); reaching it short of the
        target warns and returns that estimate.
    error : {"relative", "centred"}
        The error compared with ``rtol`` (Frobenius norms, ``se`` the standard errors):
        ``"relative"`` ‖se‖/‖K̂‖; ``"centred"`` ‖se‖/‖C K̂ C‖ with C = I − 11ᵀ/N the
        centring matrix of each side's inputs, which bounds the RMS of
        ‖C(K̂ − K)C‖/‖C K̂ C‖ from above (C is a projection), for kernels used after
        centring (a ridge with intercept, CKA). With ``outputs="full"`` both centre over
        the inputs only.
    progress : callable, optional
        Called with one line of text after each round of ``rtol``/``atol`` (M, error, time),
        e.g. :func:`nntk_array.experiments.progress_printer`.

    rng, batch_size
        Deprecated names of ``seed`` and ``samples_per_call``; they still work and warn.

    Returns
    -------
    array or Estimate
        The kernel, shape (N1, N2), or (N1, N2, O, O) for ``outputs="full"``, in ``theta``'s
        dtype, namespace and device. With ``return_stderr=True``, ``rtol`` or ``atol`` an
        :class:`Estimate` (``.value``, ``.stderr``, ``.samples``) that unpacks as
        ``K, stderr``.

    Raises
    ------
    TypeError
        Mixed libraries, non-floating dtypes, a non-callable ``f``, a bad ``seed`` or
        ``attention``, a non-integer ``samples``, a spec given together with its loose
        keywords, ``sampling="orthogonal"`` without a linalg extension, ``samples``
        omitted without ``rtol``/``atol`` or the target options given without them.
    ValueError
        Shape mismatches, no inputs, mixed devices, NaN/inf inputs, ``sigma <= 0``,
        ``samples < 1`` (or too few independent samples for the estimator), unknown options,
        incompatible combinations (``estimator="directional"`` with attention, the
        ``"loss"`` score with antithetic sampling, ``radial``/``scale`` with the Gaussian
        form, a ``variance_reduction`` the model or options do not support or whose batch
        sums exceed the budget, ``rank`` without ``perturbation="lowrank"``, and
        ``"lowrank"`` with options it does not take (see ``perturbation``) or with a model
        that declares no ``matrix_blocks``), bad ``rtol``/``atol``/``max_samples``/``error``,
        a target with explicit ``samples`` rows or Dask inputs.

    Warns
    -----
    RuntimeWarning
        ``max_samples`` reached short of ``rtol``/``atol`` (the message gives the error
        achieved).
    DeprecationWarning
        For the old keyword names ``rng`` (now ``seed``) and ``batch_size`` (now
        ``samples_per_call``).

    Notes
    -----
    Dask arrays ``x1``/``x2`` (NumPy or CuPy chunks, any row chunking) give a lazy Dask
    kernel of the plain estimator, with the same numbers as the in-memory call with
    ``variance_reduction="none"`` and the same ``seed``: each task regenerates the
    perturbations from the seed (an int; a native generator is refused; a missing seed is
    drawn once on the client), so nothing of size M × P crosses the network. Each block of
    rows evaluates all M perturbations; row blocks of a few hundred inputs keep
    the regeneration cheap next to the evaluations. Each kernel block contracts
    through the M × M Gram, or, where that would exceed ``memory_budget`` (or with
    ``route="stream"``), streams the regenerated directions as in memory, so standard errors
    stay within the budget at any M. Callable attention scores are not available there.
    See the "Distributed" page of the docs.

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
    seed = renamed("seed", "rng", seed, rng)
    samples_per_call = renamed("samples_per_call", "batch_size", samples_per_call, batch_size)
    if attention is not None and not isinstance(attention, Attention):
        raise TypeError(f"`attention` must be an nk.Attention; got {type(attention).__name__}")
    if not isinstance(return_stderr, bool):
        raise TypeError(f"`return_stderr` must be a bool; got {type(return_stderr).__name__}")
    check_choice("outputs", outputs, OUTPUTS)
    count = None if samples is None else sample_count(samples)
    goal = precision.target(
        rtol=rtol,
        atol=atol,
        max_samples=max_samples,
        error=error,
        progress=progress,
        samples=count,
        explicit=samples is not None and count is None,
    )
    spec = kernel.KernelSpec(
        smoothing=smoothing_spec(smoothing, sigma, form, radial, scale, perturbation, rank),
        estimator=estimator_spec(estimator, sampling, quadrature, accumulate, variance_reduction),
        resources=resources_spec(resources, memory_budget, samples_per_call, route),
        samples=(samples if count is None else count) if goal is None else goal.start,
        seed=check_seed(seed),
        attention=attention,
        full=outputs == "full",
        stderr=return_stderr or goal is not None,
    )
    if is_dask(theta, x1, x2):
        if goal is not None:
            raise ValueError("`rtol`/`atol` need in-memory inputs, not Dask arrays")
        if spec.estimator.variance_reduction not in ("auto", ()):
            raise ValueError("`variance_reduction` needs in-memory inputs, not Dask arrays")
        if spec.smoothing.perturbation != "gaussian":
            raise ValueError("perturbation='lowrank' needs in-memory inputs, not Dask arrays")
        spec = replace(spec, estimator=replace(spec.estimator, variance_reduction=()))
        from .distributed.dask import nntk_graph

        return nntk_graph(f, theta, x1, x2, spec)
    if goal is None:
        return _compute(f, theta, x1, x2, spec)

    def estimate(m: int) -> Estimate:
        est = _compute(f, theta, x1, x2, replace(spec, samples=m))
        assert isinstance(est, Estimate)
        return est

    return precision.refine(estimate, goal, "nntk")


def _compute(
    f: Model | ModelFn, theta: Array, x1: Array, x2: Array | None, spec: kernel.KernelSpec
) -> Array | Estimate:
    problem = kernel.setup(f, theta, x1, x2, spec)
    if is_jax_namespace(problem.xp) and _compilable(f):
        with programs_of(f):  # the loop bodies run compiled, cached on the model
            result = kernel.compute(problem)
    else:
        result = kernel.compute(problem)
    if isinstance(result, tuple):
        return Estimate(*result, samples=problem.dirs.num_rows)
    return result


def _compilable(f: Model | ModelFn) -> bool:
    """Whether the engine may run ``f`` inside compiled JAX programs (docs: Performance,
    'JAX: compiled once per shapes'): a model that declares ``jax_compilable = True``, as
    :class:`MLP` does. Anything else may keep state between calls (a noise stream, a
    counter) that a compiled program would freeze, so it runs eagerly."""
    return getattr(f, "jax_compilable", False) is True
