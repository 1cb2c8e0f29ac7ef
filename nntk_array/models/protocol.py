"""The model protocol: what the kernels ask of a model, and what they use when it offers more.

A model is anything with

``num_params``
    P, the length of the flat parameter vector θ;
``apply(thetas, x)``
    a batch of parameter vectors (B, P) and inputs (N, ...) to outputs (B, N) or (B, N, O).

A plain callable ``f(thetas, x)`` with the same contract works too: P is then read off the
``theta`` it is called at. Everything else is an optional *capability*, looked up by name, so
any model (the built-in :class:`~nntk_array.MLP`, an adapter over a framework's module, a
user's class) can offer the structured treatment without inheriting from anything:

``out_features``
    O, so that the output shape need not be probed with an evaluation.
``check_x(name, x)``
    Raise ``ValueError`` for inputs of the wrong shape (named ``name`` in the message).
``apply_unchecked(thetas, x)``
    ``apply`` without argument checks; the kernels validate once and then call this per chunk.
``jax_compilable``
    ``True`` for a pure function of (θ, x) that keeps no state between calls: on JAX the
    kernels then run its evaluations inside programs compiled once per shapes. Default
    ``False`` (a model with a noise stream or a counter runs eagerly).
``jax_program_key``
    A hashable value naming the function the model computes: models with equal keys share
    their compiled programs (one compilation for a model rebuilt per seed or experiment).
``eval_bytes_per_set(n_inputs, itemsize)``
    Bytes one parameter set needs in a batched evaluation: the memory plan sizes chunks of
    perturbations with it.
``ntk_terms(xp, theta, x)`` and ``ntk_numbers_per_input``
    Per-layer factors of the exact NTK (a list of :class:`NTKTerm`) and how many numbers they
    hold per input; without them the NTK comes from the array library's autodiff.
``independent_inputs``
    ``False`` when the outputs for one input depend on the other inputs of the batch (batch
    statistics); the autodiff NTK then differentiates whole blocks instead of one input at
    a time under ``vmap``. Default ``True``.
``jvp(theta, x, tangents)``
    Jacobian-vector products J(x) vᵀ for tangents (K, P), shape (K, N, O).
``linear_blocks``
    ``(start, stop)`` ranges of θ that enter the output linearly.
``last_layer`` and ``hidden_pass(thetas, x, tangents=None)``
    A network whose output is an affine readout of its last hidden layer (a
    :class:`LastLayer`), and that layer's input and pre-activations (with their
    forward-mode tangents): the variance-reduced kernel estimators use them.
``matrix_blocks`` and ``lowrank_apply(theta, x, perturbation)``
    The weight matrices in θ (a sequence of :class:`MatrixBlock`: start, fan_in, fan_out,
    stored row-major), and optionally the model evaluated at θ + h for a batch of low-rank
    perturbations given by their factors (a :class:`LowRankPerturbation`), without forming
    h: ``perturbation="lowrank"`` of :func:`nntk_array.nntk` needs the first and uses the
    second where it exists (else it forms a chunk's h from the factors and calls ``apply``).
``apply_by_columns(theta, x, columns, scale, *, sets, block)`` and ``column_bytes``
    The model at θ + scale·u_m for every row of a (sets, P) matrix U that it reads through
    ``columns(start, stop)`` in consecutive blocks from column 0 to P (at most ``block``
    numbers each), and ``column_bytes(sets, n_inputs, itemsize)``, the bytes it holds doing
    so besides those blocks (``None`` where the model evaluates faster by other means). A model that
    perturbs layer by layer reads each column once, so the nonlocal kernel draws every
    random number once and sums U's Gram from the same blocks, where ``column_bytes`` fits
    ``memory_budget`` (:class:`~nntk_array.MLP` holds two activations per set).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

from .._typing import Array, Namespace
from .._validate import check_ndim
from .._xp import resolve
from ..backends.autodiff import jacobian, jvp

__all__ = [
    "Bound",
    "LastLayer",
    "LowRankPerturbation",
    "MatrixBlock",
    "Model",
    "NTKTerm",
    "bind",
    "check_inputs",
]


@runtime_checkable
class Model(Protocol):
    """What every model offers: a parameter count and a batched evaluation.

    Examples
    --------
    >>> import nntk_array as nk
    >>> isinstance(nk.MLP(1, (4,)), nk.Model)
    True
    """

    @property
    def num_params(self) -> int:
        """P, the length of the flat parameter vector.

        Examples
        --------
        >>> import nntk_array as nk
        >>> nk.MLP(3, (8,)).num_params
        41
        """

    def apply(self, theta: Array, x: Array) -> Array:
        """Evaluate the model for a batch of parameter vectors.

        Parameters
        ----------
        theta : array, shape (B, P)
            B parameter vectors.
        x : array, shape (N, ...)
            The inputs, in the same library and on the same device.

        Returns
        -------
        array, shape (B, N) or (B, N, O)

        Examples
        --------
        >>> import numpy as np
        >>> import nntk_array as nk
        >>> model = nk.MLP(2, (8,), 3)
        >>> model.apply(np.zeros((4, model.num_params)), np.ones((5, 2))).shape
        (4, 5, 3)
        """


@dataclass(frozen=True)
class NTKTerm:
    """One layer's share of the structured NTK: ``(a a'ᵀ + bias_sq) ⊙ (δ·δ')``.

    ``a`` is the layer input scaled by its weight coefficient, shape ``(N, fan_in)``, or
    ``None`` where the term has no input factor (a plain Jacobian);
    ``delta`` the output sensitivities to the layer's pre-activations, shape
    ``(N, O, fan_out)``, or ``None`` for the output layer, where it is the identity.
    """

    a: Array | None
    bias_sq: float
    delta: Array | None


@dataclass(frozen=True)
class LastLayer:
    """Where the last hidden layer and the readout of a network live in θ.

    The network is ``f = c_v φ(z) V + c_o b_o`` with ``z = c_w a W + c_b b`` the last hidden
    layer's pre-activations (``a`` its input, ``W`` of shape (fan_in, width) stored
    row-major from ``w_start``, ``b`` from ``b_start``), ``φ`` the activation, ``V`` of shape
    (width, O) from ``v_start`` and ``b_o`` from ``bo_start``; parameters ``[0, w_start)``
    belong to the earlier layers. Biases are ``None`` where the network has none.
    """

    activation: str
    fan_in: int
    width: int
    w_start: int
    b_start: int | None
    v_start: int
    bo_start: int | None
    c_w: float
    c_b: float
    c_v: float
    c_o: float


class MatrixBlock(NamedTuple):
    """A weight matrix in θ: ``fan_in * fan_out`` parameters from ``start``, row-major as a
    (fan_in, fan_out) matrix W (so ``z = a @ W``). A plain ``(start, fan_in, fan_out)`` tuple
    works too.

    Examples
    --------
    >>> import nntk_array as nk
    >>> nk.MLP(3, (8,)).matrix_blocks[0]
    MatrixBlock(start=0, fan_in=3, fan_out=8)
    """

    start: int
    fan_in: int
    fan_out: int


@dataclass(frozen=True)
class LowRankPerturbation:
    """A batch of B low-rank perturbations h of θ, given by their factors.

    Block i of the model's ``matrix_blocks`` is perturbed by
    ``E_i = Σ_k left[i][:, k, :, None] * right[i][:, k, None, :]`` (B, fan_in, fan_out), the
    scales already applied; every other parameter, in θ's order, by the columns of ``rest``
    (B, P − Σ_i fan_in_i·fan_out_i).

    Examples
    --------
    >>> import numpy as np
    >>> from nntk_array.models.protocol import LowRankPerturbation
    >>> h = LowRankPerturbation((np.ones((2, 1, 3)),), (np.ones((2, 1, 4)),), np.zeros((2, 5)))
    >>> h.batch, h.rank
    (2, 1)
    """

    left: tuple[Array, ...]
    right: tuple[Array, ...]
    rest: Array

    @property
    def batch(self) -> int:
        """B, the number of perturbations."""
        return int(self.rest.shape[0])

    @property
    def rank(self) -> int:
        """r, the number of factor pairs per matrix (0 without matrices)."""
        return int(self.left[0].shape[1]) if self.left else 0


Evaluate = Callable[[Array], Array]


@dataclass(frozen=True)
class Bound:
    """A model bound to validated parameters and inputs: what the engine calls.

    ``evaluate(thetas, x)`` returns (B, N, O) without argument checks; capabilities the
    model lacks are filled in generically (autodiff Jacobians and JVPs, a memory estimate
    from the output size, no linear blocks); ``jacobian_mode`` is the autodiff Jacobian's
    mode (``None`` for a model with its own ``ntk_terms``).
    """

    num_params: int
    num_outputs: int
    evaluate: Callable[[Array, Array], Array]
    eval_bytes_per_set: Callable[[int, int], int]
    ntk_terms: Callable[[Namespace, Array, Array], list[NTKTerm]]
    ntk_numbers_per_input: int
    jvp: Callable[[Array, Array, Array], Array]
    jacobian_mode: str | None
    linear_blocks: tuple[tuple[int, int], ...]
    last_layer: LastLayer | None = None
    hidden_pass: Callable[..., tuple[Array, Array, Array | None]] | None = None
    #: the model offers its own ``jvp`` (structure or its framework's autodiff)
    own_jvp: bool = False
    #: the weight matrices of θ (``None`` when the model declares none)
    matrix_blocks: tuple[MatrixBlock, ...] | None = None
    #: the model at θ + h for factored low-rank perturbations h, (B, N, O)
    lowrank_apply: Callable[[Array, Array, LowRankPerturbation], Array] | None = None
    #: the model at θ + σu_m for every row of U read left to right by columns, (M, N, O)
    apply_by_columns: Callable[..., Array] | None = None
    #: bytes ``apply_by_columns`` holds for (sets, inputs, itemsize) besides its blocks
    #: (``None``: the model declines the sweep for these inputs)
    column_bytes: Callable[[int, int, int], int | None] | None = None


def _as_3d(out: Array) -> Array:
    return out[:, :, None] if out.ndim == 2 else out


def jacobian_mode(*, p: int, n_out: int, independent: bool) -> str:
    """How the autodiff NTK forms a block's Jacobian (a mode of
    :func:`nntk_array.backends.autodiff.jacobian`): per input under ``vmap`` when the model
    treats inputs independently, reverse mode unless P < O; else ``jacrev`` of the block.
    The measurements behind the rule are in :mod:`nntk_array._mc.plan`."""
    if not independent:
        return "batch"
    return "forward" if p < n_out else "reverse"


def bind(f: Any, xp: Namespace, theta: Array, x1: Array, x2: Array | None = None) -> Bound:
    """Validate ``theta`` and the inputs against the model ``f`` and bind them.

    Raises
    ------
    TypeError
        ``f`` is neither a model nor a callable.
    ValueError
        Shapes that do not fit the model, no inputs, or a callable whose outputs are not
        (B, N) or (B, N, O).
    """
    is_model = hasattr(f, "num_params") and hasattr(f, "apply")
    if not is_model and not callable(f):
        raise TypeError(
            f"`f` must be a model (num_params and apply(thetas, x)) or a callable "
            f"f(thetas, x); got {type(f).__name__}"
        )
    check_ndim("theta", theta, (1,), "(P,)")
    p = int(f.num_params) if is_model else theta.shape[0]
    if theta.shape[0] != p:
        raise ValueError(f"`theta` must have shape ({p},) for this model; got {tuple(theta.shape)}")
    check_inputs(f, x1, x2=x2)
    apply = getattr(f, "apply_unchecked", None) or (f.apply if is_model else f)

    def evaluate(thetas: Array, x: Array) -> Array:
        return _as_3d(apply(thetas, x))

    n_out = getattr(f, "out_features", None)
    if n_out is None:
        n_out = _probe_outputs(apply, theta, x1[: min(2, x1.shape[0]), ...])
    eval_bytes = getattr(f, "eval_bytes_per_set", None)
    if eval_bytes is None:  # outputs and a few temporaries of that size per set

        def eval_bytes(n: int, size: int) -> int:
            return 4 * size * n * n_out

    terms = getattr(f, "ntk_terms", None)
    per_input = getattr(f, "ntk_numbers_per_input", None)
    mode = None
    if terms is None:
        independent = bool(getattr(f, "independent_inputs", True))
        mode = jacobian_mode(p=p, n_out=int(n_out), independent=independent)
        terms = _autodiff_terms(apply, mode)
    if per_input is None:  # what a Jacobian term holds
        per_input = n_out * p
    model_jvp = getattr(f, "jvp", None)
    own_jvp = model_jvp is not None
    if model_jvp is None:
        model_jvp = _autodiff_jvp(xp, apply)
    return Bound(
        num_params=p,
        num_outputs=int(n_out),
        evaluate=evaluate,
        eval_bytes_per_set=eval_bytes,
        ntk_terms=terms,
        ntk_numbers_per_input=int(per_input),
        jvp=model_jvp,
        jacobian_mode=mode,
        linear_blocks=tuple(getattr(f, "linear_blocks", ())),
        last_layer=getattr(f, "last_layer", None),
        hidden_pass=getattr(f, "hidden_pass", None),
        own_jvp=own_jvp,
        matrix_blocks=_matrix_blocks(f, p),
        lowrank_apply=_lowrank_apply(f),
        **_by_columns(f),
    )


def _by_columns(f: Any) -> dict[str, Any]:
    """``apply_by_columns`` (outputs made 3-D) and ``column_bytes``, where the model has both."""
    apply, size = getattr(f, "apply_by_columns", None), getattr(f, "column_bytes", None)
    if apply is None or size is None:
        return {}

    def apply_by_columns(theta: Array, x: Array, *args: Any, **kwargs: Any) -> Array:
        return _as_3d(apply(theta, x, *args, **kwargs))

    return {"apply_by_columns": apply_by_columns, "column_bytes": size}


def _matrix_blocks(f: Any, p: int) -> tuple[MatrixBlock, ...] | None:
    """The model's ``matrix_blocks`` checked against P: sorted, inside θ, not overlapping."""
    declared = getattr(f, "matrix_blocks", None)
    if declared is None:
        return None
    try:
        blocks = sorted(MatrixBlock(*(int(v) for v in block)) for block in declared)
    except (TypeError, ValueError):
        raise ValueError(
            "`matrix_blocks` of the model must be (start, fan_in, fan_out) triples of ints"
        ) from None
    end = 0
    for block in blocks:
        if block.start < end or block.fan_in < 1 or block.fan_out < 1:
            raise ValueError(f"`matrix_blocks` of the model overlap or are empty at {tuple(block)}")
        end = block.start + block.fan_in * block.fan_out
    if end > p:
        raise ValueError(f"`matrix_blocks` of the model reach past P = {p}")
    return tuple(blocks)


def _lowrank_apply(f: Any) -> Callable[[Array, Array, LowRankPerturbation], Array] | None:
    apply = getattr(f, "lowrank_apply", None)
    if apply is None:
        return None

    def lowrank_apply(theta: Array, x: Array, h: LowRankPerturbation) -> Array:
        return _as_3d(apply(theta, x, h))

    return lowrank_apply


def check_inputs(f: Any, x1: Array, **others: Array | None) -> None:
    """Raise ``ValueError`` unless ``x1`` and the named ``others`` (``None`` skipped) are
    inputs of the model ``f`` (its ``check_x`` where it has one, else (N, ...)) with at least
    one row each, the others shaped like ``x1`` after the first axis."""
    check_x = getattr(f, "check_x", None)
    for name, x in {"x1": x1, **others}.items():
        if x is None:
            continue
        if check_x is not None:
            check_x(name, x)
        else:
            check_ndim(name, x, tuple(range(1, 33)), "(N, ...)")
        if x.shape[0] == 0:
            raise ValueError(f"`{name}` must hold at least one input; got shape {tuple(x.shape)}")
        if tuple(x.shape[1:]) != tuple(x1.shape[1:]):
            raise ValueError(
                f"`{name}` must have shape (N, {', '.join(map(str, x1.shape[1:]))}) to match "
                f"`x1`; got shape {tuple(x.shape)}"
            )


def _probe_outputs(apply: Callable[[Array, Array], Array], theta: Array, x: Array) -> int:
    """O from one evaluation on a couple of inputs; checks the output contract."""
    n = x.shape[0]
    out = apply(theta[None, :], x)
    if not hasattr(out, "shape") or out.ndim not in (2, 3) or tuple(out.shape[:2]) != (1, n):
        raise ValueError(
            f"`f(thetas, x)` must return shape (B, N) or (B, N, O); for thetas of shape "
            f"(1, P) and N = {n} inputs it returned {getattr(out, 'shape', type(out))}"
        )
    resolve(theta=theta, output=out)  # same library and device, floating dtype
    return 1 if out.ndim == 2 else int(out.shape[2])


def _autodiff_terms(
    apply: Callable[[Array, Array], Array], mode: str
) -> Callable[[Namespace, Array, Array], list[NTKTerm]]:
    def terms(xp: Namespace, theta: Array, x: Array) -> list[NTKTerm]:
        jac = jacobian(apply, theta, x, xp=xp, mode=mode)  # (N, P) or (N, O, P)
        return [NTKTerm(None, 0.0, jac[:, None, :] if jac.ndim == 2 else jac)]

    return terms


def _autodiff_jvp(
    xp: Namespace, apply: Callable[[Array, Array], Array]
) -> Callable[[Array, Array, Array], Array]:
    def model_jvp(theta: Array, x: Array, tangents: Array) -> Array:
        outs = [
            _as_3d(jvp(apply, theta, x, tangents[k, :], xp=xp)[1][None, ...])[0]
            for k in range(tangents.shape[0])
        ]
        return xp.stack(outs)

    return model_jvp
