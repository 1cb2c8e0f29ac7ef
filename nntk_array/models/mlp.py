"""The built-in multilayer perceptron with a flat parameter vector.

It implements the model protocol (:mod:`nntk_array.models.protocol`) with every optional
capability: structured NTK terms, memory per evaluation, Jacobian-vector products from its
structure, and the readout layer as a linear block.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from array_api_compat import device as array_device

from .._typing import Array, Device, DType, Namespace, SeedLike
from .._validate import (
    check_choice,
    check_finite,
    check_ndim,
    check_positive_float,
    check_positive_int,
)
from .._xp import as_namespace, default_float_dtype, resolve
from ..backends.dtypes import require_dtype
from ..backends.inplace import matmul_into, writeable
from ..backends.random import Generator
from . import piecewise
from .activations import ACTIVATIONS, Activation
from .protocol import LastLayer, LowRankPerturbation, MatrixBlock, NTKTerm

__all__ = ["MLP"]

PARAMETERIZATIONS = ("ntk", "standard")
_MAX_WIDTH = 2**31 - 1
#: bytes of the per-set products :meth:`MLP.apply_by_columns` forms at once (cache-sized)
_SWEEP_PRODUCT = 2 * 2**20


#: contraction lengths up to which a dense layer is a sum of broadcast products: batched
#: matmuls with k = 1 (a scalar input) or n = 1 (one output) run as many tiny BLAS calls
SMALL_CONTRACTION = 4


def dense(xp: Namespace, a: Array, w: Array, out: Array | None = None) -> Array:
    """``a @ w`` for activations (..., N, k) and weights (..., k, n), shaped for speed: a sum
    of k broadcast products when k is small, one 2-D GEMM when the weights are shared
    (2-D ``w``; ``a`` may carry a batch of parameter sets), a reduction when n = 1.

    With ``out`` (writeable and contiguous, of the product's shape) the product is written
    there and ``out`` returned: the shared weights' GEMM writes it directly (no fresh array
    of the product's size), the other forms are assigned.

    Examples
    --------
    >>> import numpy as np
    >>> a, w = np.ones((3, 5, 2)), np.ones((3, 2, 4))
    >>> bool(np.array_equal(dense(np, a, w), a @ w))
    True
    """
    k = a.shape[-1]
    if k <= SMALL_CONTRACTION:
        product = a[..., 0:1] * w[..., 0:1, :]
        for i in range(1, k):
            product = product + a[..., i : i + 1] * w[..., i : i + 1, :]
    elif a.ndim > 2 and a.ndim >= w.ndim and math.prod(w.shape[:-2]) == 1:  # shared weights
        lead, n = tuple(a.shape[:-1]), w.shape[-1]
        rows, weights = xp.reshape(a, (-1, k)), xp.reshape(w, (k, n))
        if out is not None:
            matmul_into(xp, rows, weights, xp.reshape(out, (-1, n)))
            return out
        product = xp.reshape(xp.matmul(rows, weights), (*lead, n))
    elif w.shape[-1] == 1:
        wt = xp.reshape(w, (*w.shape[:-2], 1, k))
        product = xp.sum(a * wt, axis=-1)[..., None]
    else:
        product = xp.matmul(a, w)
    if out is None:
        return product
    out[...] = product
    return out


@dataclass(frozen=True)
class _Layer:
    fan_in: int
    fan_out: int
    w_start: int  # weights stored row-major as (fan_in, fan_out): z = a @ W
    b_start: int | None
    end: int
    w_coef: float  # multiplies a @ W in the forward pass
    b_coef: float


def _affine(xp: Namespace, layer: _Layer, a: Array, w: Array, b: Array | None) -> Array:
    """c_w a W + c_b b, scaling whichever of a W and W is smaller (usually W: a batch of
    weight sets is smaller than their activations when there are more inputs than fan-in)."""
    if layer.w_coef == 1.0:
        z = dense(xp, a, w)
    elif a.shape[-2] > layer.fan_in:
        z = dense(xp, a, layer.w_coef * w)
    else:
        z = dense(xp, a, w)
        z *= layer.w_coef  # fresh: scaled in place, no second (B, N, width) temporary
    if b is not None:
        z += b if layer.b_coef == 1.0 else layer.b_coef * b
    return z


class MLP:
    """A fully connected network ``in_features -> hidden[0] -> … -> out_features``.

    Parameters live in one flat vector ``theta`` of length :attr:`num_params`, laid out layer
    by layer as the weight matrix of shape ``(fan_in, fan_out)`` (row-major), then the bias.

    Parameters
    ----------
    in_features : int
        Input dimension d.
    hidden : sequence of int
        Widths of the hidden layers (empty for a linear model).
    out_features : int, default 1
        Number of outputs O.
    activation : str, default "relu"
        One of ``relu``, ``leaky_relu`` (slope 0.01), ``tanh``, ``erf``, ``sign``, ``step``,
        ``sawtooth`` (``2(z - floor(z + 1/2))``), ``abs``, ``identity``.
    bias : bool, default True
        Whether every layer has a bias.
    parameterization : {"ntk", "standard"}
        ``"ntk"``: ``z = weight_std/sqrt(fan_in) * a @ W + bias_std * b`` with all parameters
        initialized N(0, 1) (neural-tangents' ``stax.Dense`` convention). ``"standard"``:
        ``z = a @ W + b`` with W ~ N(0, weight_std²/fan_in) and b ~ N(0, bias_std²).
    weight_std, bias_std : float, default 1.0
        The σ_w and σ_b of both parameterizations.

    Raises
    ------
    TypeError
        ``bias`` is not a bool.
    ValueError
        A width that is not a positive int, an unknown ``activation`` or
        ``parameterization``, a ``weight_std`` or ``bias_std`` that is not > 0.

    Examples
    --------
    >>> import numpy as np
    >>> import nntk_array as nk
    >>> model = nk.MLP(1, (16, 16), 2, activation="tanh")
    >>> theta = model.init(0, xp=np)
    >>> model.apply(theta, np.ones((5, 1))).shape
    (5, 2)
    >>> model.apply(np.stack([theta, theta]), np.ones((5, 1))).shape
    (2, 5, 2)
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (),
        out_features: int = 1,
        activation: str = "relu",
        *,
        bias: bool = True,
        parameterization: str = "ntk",
        weight_std: float = 1.0,
        bias_std: float = 1.0,
    ) -> None:
        widths = [check_positive_int("in_features", in_features)]
        if isinstance(hidden, numbers.Integral):
            hidden = (int(hidden),)
        widths += [check_positive_int(f"hidden[{i}]", h) for i, h in enumerate(hidden)]
        widths.append(check_positive_int("out_features", out_features))
        names = ["in_features", *(f"hidden[{i}]" for i in range(len(widths) - 2)), "out_features"]
        for name, width in zip(names, widths, strict=True):
            if width > _MAX_WIDTH:  # BLAS (LP64) and the libraries' matmuls index with int32
                raise ValueError(f"`{name}` must be at most 2**31 - 1; got {width}")
        self.activation = check_choice("activation", activation, tuple(ACTIVATIONS))
        self.parameterization = check_choice(
            "parameterization", parameterization, PARAMETERIZATIONS
        )
        if not isinstance(bias, bool):
            raise TypeError(f"`bias` must be a bool; got {type(bias).__name__}")
        self.bias = bias
        self.weight_std = check_positive_float("weight_std", weight_std)
        self.bias_std = check_positive_float("bias_std", bias_std)
        self.in_features, self.out_features = widths[0], widths[-1]
        self.hidden = tuple(widths[1:-1])
        self._layers = self._layout(widths)

    def _layout(self, widths: list[int]) -> tuple[_Layer, ...]:
        ntk = self.parameterization == "ntk"
        layers, start = [], 0
        for fan_in, fan_out in itertools.pairwise(widths):
            b_start = start + fan_in * fan_out
            end = b_start + (fan_out if self.bias else 0)
            layers.append(
                _Layer(
                    fan_in,
                    fan_out,
                    start,
                    b_start if self.bias else None,
                    end,
                    self.weight_std / math.sqrt(fan_in) if ntk else 1.0,
                    self.bias_std if ntk else 1.0,
                )
            )
            start = end
        return tuple(layers)

    @property
    def num_params(self) -> int:
        """Length P of the flat parameter vector.

        Examples
        --------
        >>> MLP(3, (8,)).num_params   # (3·8 + 8) + (8·1 + 1)
        41
        """
        return self._layers[-1].end

    def __repr__(self) -> str:
        return (
            f"MLP(in_features={self.in_features}, hidden={self.hidden}, "
            f"out_features={self.out_features}, activation={self.activation!r}, "
            f"bias={self.bias}, parameterization={self.parameterization!r}, "
            f"weight_std={self.weight_std}, bias_std={self.bias_std})"
        )

    def init(
        self,
        seed: SeedLike,
        *,
        xp: Namespace = None,
        dtype: DType = None,
        device: Device = None,
    ) -> Array:
        """Draw initial parameters.

        Parameters
        ----------
        seed : int, native generator or None
            Seed or generator of ``xp``'s library (see
            :class:`nntk_array.backends.random.Generator`).
        xp : module or namespace, default numpy
            ``numpy``, ``torch``, ``jax.numpy``, ``cupy``, ``array_api_strict`` or their
            array-API namespaces.
        dtype : dtype, optional
            A real floating dtype of ``xp``; the library's default float dtype if omitted.
        device : device, optional
            Where the parameters live; the library's default device if omitted.

        Returns
        -------
        theta : array, shape (P,)

        Raises
        ------
        TypeError
            ``dtype`` is not real floating, or ``seed`` is not an int or a generator of ``xp``.
        ValueError
            float64 is requested on JAX without 64-bit mode; ``seed`` is negative.

        Examples
        --------
        >>> import array_api_strict as xp
        >>> theta = MLP(3, (8,)).init(0, xp=xp, dtype=xp.float32)
        >>> theta.shape, theta.dtype
        ((41,), array_api_strict.float32)
        """
        if xp is None:
            import numpy

            xp = numpy
        xp = as_namespace(xp)
        if dtype is None:
            dtype = default_float_dtype(xp, device)
        if not xp.isdtype(dtype, "real floating"):
            raise TypeError(f"`dtype` must be a real floating dtype; got {dtype!r}")
        require_dtype(xp, dtype, device, what="`dtype`")
        theta = Generator(seed, xp=xp, device=device).normal((self.num_params,), dtype=dtype)
        if self.parameterization == "ntk":
            return theta
        scales = []
        for layer in self._layers:
            scales.append((layer.w_start, self.weight_std / math.sqrt(layer.fan_in)))
            if layer.b_start is not None:
                scales.append((layer.b_start, self.bias_std))
        bounds = [s for s, _ in scales[1:]] + [self.num_params]
        scale = xp.concat(
            [
                xp.full((end - start,), value, dtype=dtype, device=array_device(theta))
                for (start, value), end in zip(scales, bounds, strict=True)
            ]
        )
        return theta * scale

    def apply(self, theta: Array, x: Array) -> Array:
        """Evaluate the network.

        Parameters
        ----------
        theta : array, shape (P,) or (B, P)
            One parameter vector, or a batch of B evaluated with one batched matmul per layer.
        x : array, shape (N, in_features)

        Returns
        -------
        array, shape (N, O) for ``theta`` of shape (P,), (B, N, O) for a batch.

        Raises
        ------
        TypeError
            Mixed array libraries, or non-floating dtypes.
        ValueError
            Wrong shapes, mixed devices, or NaN/inf in the inputs.

        Examples
        --------
        >>> import numpy as np
        >>> model = MLP(2, (8,), 3)
        >>> theta = model.init(0, xp=np)
        >>> x = np.ones((4, 2))
        >>> model.apply(theta, x).shape                     # one network
        (4, 3)
        >>> model.apply(np.stack([theta] * 5), x).shape     # a batch of 5 parameter vectors
        (5, 4, 3)
        """
        xp, (theta, x) = resolve(theta=theta, x=x)
        self.check_theta(theta, batched=True)
        self.check_x("x", x)
        check_finite(xp, theta=theta, x=x)
        return self._evaluate(xp, theta, x)

    __call__ = apply

    def apply_unchecked(self, theta: Array, x: Array) -> Array:
        """:meth:`apply` without argument checks, for callers that validated once.

        The kernels call it once per chunk of perturbations; each layer's temporaries are
        freed as soon as the next layer is computed. A network of one input with one hidden
        layer and a kinked activation, at 32 inputs or more, is evaluated exactly as a
        piecewise-linear function of the input instead (its units' breakpoints ranked among
        the sorted inputs): equal to the layer-by-layer pass up to rounding, and several
        times faster.

        Parameters
        ----------
        theta : array, shape (P,) or (B, P)
        x : array, shape (N, in_features)

        Returns
        -------
        array, shape (N, O) or (B, N, O)

        Examples
        --------
        >>> import numpy as np
        >>> model = MLP(2, (8,), 3)
        >>> model.apply_unchecked(model.init(0, xp=np)[None, :], np.ones((4, 2))).shape
        (1, 4, 3)
        """
        from array_api_compat import array_namespace

        return self._evaluate(array_namespace(theta, x), theta, x)

    @property
    def jax_compilable(self) -> bool:
        """``True``: the network is a pure function of (θ, x) that keeps no state between
        calls, so on JAX the kernels run its evaluations in programs compiled once per shapes.

        Examples
        --------
        >>> MLP(1, (4,)).jax_compilable
        True
        """
        return True

    @property
    def jax_program_key(self) -> tuple[object, ...]:
        """The architecture: on JAX, networks of the same architecture share their compiled
        kernel programs, so a network rebuilt per seed compiles once.

        Examples
        --------
        >>> MLP(1, (4,)).jax_program_key == MLP(1, (4,)).jax_program_key
        True
        """
        return (
            "nntk_array.MLP",
            self.in_features,
            self.hidden,
            self.out_features,
            self.activation,
            self.bias,
            self.parameterization,
            self.weight_std,
            self.bias_std,
        )

    @property
    def linear_blocks(self) -> tuple[tuple[int, int], ...]:
        """``(start, stop)`` of the parameters that enter the output linearly: the readout.

        Examples
        --------
        >>> MLP(3, (8,)).linear_blocks    # readout weights (8) and bias (1)
        ((32, 41),)
        """
        last = self._layers[-1]
        return ((last.w_start, last.end),)

    def jvp(self, theta: Array, x: Array, tangents: Array) -> Array:
        """Jacobian-vector products ∂f(x)/∂θ · v for a batch of tangents, from the structure.

        Forward-mode through the layers (no autodiff): for ``z = c_w a W + c_b b`` the
        tangent is ``c_w (ȧ W + a V) + c_b v_b`` and ``ȧ = φ'(z) ż``, with φ' the activation's
        almost-everywhere derivative (0 for sign and step).

        Parameters
        ----------
        theta : array, shape (P,)
        x : array, shape (N, in_features)
        tangents : array, shape (K, P)

        Returns
        -------
        array, shape (K, N, O)

        Examples
        --------
        >>> import numpy as np
        >>> model = MLP(1, (8,))
        >>> theta = model.init(0, xp=np)
        >>> v = np.eye(model.num_params)[:2]
        >>> model.jvp(theta, np.ones((3, 1)), v).shape
        (2, 3, 1)
        """
        from array_api_compat import array_namespace

        xp = array_namespace(theta, x, tangents)
        dz = self._tangent_forward(xp, theta, x, tangents, len(self._layers))[2]
        assert dz is not None  # tangents were given
        return dz

    @property
    def last_layer(self) -> LastLayer | None:
        """Where the last hidden layer and the readout live in θ (``None`` without hidden
        layers): the variance-reduced estimators of :func:`nntk_array.nntk` use it.

        Examples
        --------
        >>> m = MLP(1, (8,)).last_layer
        >>> (m.fan_in, m.width, m.w_start, m.b_start, m.v_start, m.bo_start)
        (1, 8, 0, 8, 16, 24)
        """
        if not self.hidden:
            return None
        hid, out = self._layers[-2], self._layers[-1]
        return LastLayer(
            activation=self.activation,
            fan_in=hid.fan_in,
            width=hid.fan_out,
            w_start=hid.w_start,
            b_start=hid.b_start,
            v_start=out.w_start,
            bo_start=out.b_start,
            c_w=hid.w_coef,
            c_b=hid.b_coef if hid.b_start is not None else 0.0,
            c_v=out.w_coef,
            c_o=out.b_coef if out.b_start is not None else 0.0,
        )

    def hidden_pass(
        self, thetas: Array, x: Array, tangents: Array | None = None, *, own: bool = True
    ) -> tuple[Array, Array, Array | None]:
        """The last hidden layer's input and pre-activations, and their tangents.

        Parameters
        ----------
        thetas : array, shape (B, P)
        x : array, shape (N, in_features)
        tangents : array, shape (K, P), optional
            Directions of forward-mode derivatives at ``thetas`` (broadcast against them).
        own : bool, default True
            Whether the tangent includes the layer's own parameters (else only what comes
            through earlier layers: ``None`` for the first hidden layer).

        Returns
        -------
        a : array, shape (B, N, fan_in), or ``x`` itself for the first hidden layer
            The layer's input (unscaled activations of the layer before).
        z : array, shape (B, N, width)
            Its pre-activations.
        dz : array, shape (max(B, K), N, width), or None
            ∂z/∂θ · tangent, when ``tangents`` are given.

        Raises
        ------
        ValueError
            The network has no hidden layer.

        Examples
        --------
        >>> import numpy as np
        >>> model = MLP(2, (8, 4))
        >>> theta = model.init(0, xp=np)
        >>> v = np.ones((5, model.num_params))
        >>> a, z, dz = model.hidden_pass(theta[None, :], np.ones((3, 2)), v)
        >>> a.shape, z.shape, dz.shape
        ((1, 3, 8), (1, 3, 4), (5, 3, 4))
        """
        from array_api_compat import array_namespace

        if not self.hidden:
            raise ValueError("`hidden_pass` needs a network with at least one hidden layer")
        xp = array_namespace(thetas, x)
        return self._tangent_forward(xp, thetas, x, tangents, len(self._layers) - 1, own=own)

    def _tangent_forward(
        self,
        xp: Namespace,
        theta: Array,
        x: Array,
        tangents: Array | None,
        stop: int,
        *,
        own: bool = True,
    ) -> tuple[Array, Array, Array | None]:
        """Input, pre-activation and its tangent of layer ``stop - 1``: forward mode through
        the layers, ``ż = c_w (ȧ W + a V) + c_b v_b`` and ``ȧ = φ'(z) ż`` (φ' the
        activation's almost-everywhere derivative). Without ``own`` the tangent leaves out
        layer ``stop - 1``'s own parameters (``None`` when nothing is left)."""
        act = ACTIVATIONS[self.activation]
        a, da, dz = x, None, None  # da: tangent of the layer input, (K, N, fan_in)
        for i, layer in enumerate(self._layers[:stop]):
            w, b = self._params(xp, theta, layer)
            z = _affine(xp, layer, a, w, b)
            if tangents is not None:
                dz = None if da is None else _affine(xp, layer, da, w, None)
                if own or i < stop - 1:
                    vw, vb = self._params(xp, tangents, layer)
                    mine = _affine(xp, layer, a, vw, vb)  # (K, N, fan_out)
                    dz = mine if dz is None else dz + mine
            if i == stop - 1:
                return a, z, dz
            a = act.fn(xp, z)
            if dz is not None:
                da = act.deriv(xp, z) * dz
        raise AssertionError("unreachable: an MLP has at least one layer")

    def check_theta(self, theta: Array, *, batched: bool) -> None:
        """Raise ``ValueError`` unless ``theta`` has shape (P,) (or (B, P) if ``batched``).

        Parameters
        ----------
        theta : array
        batched : bool
            Whether a batch of parameter vectors, shape (B, P), is allowed.

        Raises
        ------
        ValueError
            ``theta`` has the wrong number of dimensions or parameters.

        Examples
        --------
        >>> import numpy as np
        >>> model = MLP(3, (8,))
        >>> model.check_theta(np.zeros(41), batched=False)
        >>> model.check_theta(np.zeros((2, 40)), batched=True)
        Traceback (most recent call last):
        ...
        ValueError: `theta` must have shape (P,) or (B, P) with P = 41; got shape (2, 40)
        """
        what = f"(P,) or (B, P) with P = {self.num_params}" if batched else f"({self.num_params},)"
        check_ndim("theta", theta, (1, 2) if batched else (1,), what)
        if theta.shape[-1] != self.num_params:
            raise ValueError(f"`theta` must have shape {what}; got shape {tuple(theta.shape)}")

    def check_x(self, name: str, x: Array) -> None:
        """Raise ``ValueError`` unless ``x`` has shape (N, in_features).

        Parameters
        ----------
        name : str
            The argument's name, used in the error message.
        x : array

        Raises
        ------
        ValueError
            ``x`` is not two-dimensional with ``in_features`` columns.

        Examples
        --------
        >>> import numpy as np
        >>> MLP(3, (8,)).check_x("x1", np.zeros((5, 2)))
        Traceback (most recent call last):
        ...
        ValueError: `x1` must have shape (N, 3); got shape (5, 2)
        """
        what = f"(N, {self.in_features})"
        check_ndim(name, x, (2,), what)
        if x.shape[1] != self.in_features:
            raise ValueError(f"`{name}` must have shape {what}; got shape {tuple(x.shape)}")

    def _params(self, xp: Namespace, theta: Array, layer: _Layer) -> tuple[Array, Array | None]:
        lead = tuple(theta.shape[:-1])
        w = xp.reshape(
            theta[..., layer.w_start : layer.w_start + layer.fan_in * layer.fan_out],
            (*lead, layer.fan_in, layer.fan_out),
        )
        if layer.b_start is None:
            return w, None
        b = xp.reshape(theta[..., layer.b_start : layer.end], (*lead, 1, layer.fan_out))
        return w, b

    def _piecewise(self, n_inputs: int) -> bool:
        """Whether evaluations at ``n_inputs`` inputs go by breakpoints (:mod:`.piecewise`)."""
        return len(self.hidden) == 1 and piecewise.applies(
            self.activation, self.in_features, n_inputs
        )

    def _evaluate(self, xp: Namespace, theta: Array, x: Array) -> Array:
        """The outputs for θ (P,) or (B, P), by breakpoints where that pays. No validation."""
        if theta.ndim > 2 or not self._piecewise(x.shape[0]):
            return self._forward(xp, theta, x, keep_trace=False)[0]
        thetas = theta if theta.ndim == 2 else theta[None, :]
        hidden, readout = self._layers
        w, b = self._params(xp, thetas, hidden)
        v, c = self._params(xp, thetas, readout)
        out = piecewise.line_sums(
            xp,
            x[:, 0],
            hidden.w_coef * w[:, 0, :],
            None if b is None else hidden.b_coef * b[:, 0, :],
            readout.w_coef * v,
            ACTIVATIONS[self.activation],
        )
        if c is not None:
            out = out + readout.b_coef * c
        return out if theta.ndim == 2 else out[0, ...]

    def _forward(
        self, xp: Namespace, theta: Array, x: Array, *, keep_trace: bool = True
    ) -> tuple[Array, list[tuple[Array, Array]]]:
        """Output and, per layer, (input activation, pre-activation). No validation.

        With ``keep_trace=False`` the trace stays empty, so each layer's temporaries are freed
        as soon as the next layer is computed (batched Monte Carlo evaluations).
        """
        act = ACTIVATIONS[self.activation]
        a, trace = x, []
        last = len(self._layers) - 1
        for i, layer in enumerate(self._layers):
            w, b = self._params(xp, theta, layer)
            z = _affine(xp, layer, a, w, b)
            if keep_trace:
                trace.append((a, z))
            a = z if i == last else act.apply(xp, z, reuse=not keep_trace)
        return a, trace

    def eval_bytes_per_set(
        self, n_inputs: int, itemsize: int, *, layer_by_layer: bool = False
    ) -> int:
        """Bytes one parameter set needs in a batched untraced forward over ``n_inputs``.

        That is a copy of the largest layer's weights and three activations of the widest
        layer (for a network evaluated by its breakpoints, a few dozen numbers per unit and
        per input); :func:`nntk_array.nntk` sizes its chunks of perturbations with it.

        Parameters
        ----------
        n_inputs : int
            Number N of inputs evaluated.
        itemsize : int
            Bytes per number (4 for float32, 8 for float64).
        layer_by_layer : bool, default False
            Count a layer-by-layer pass even where :meth:`apply` goes by breakpoints (for
            callers that run :meth:`hidden_pass` or :meth:`lowrank_apply`).

        Returns
        -------
        int

        Examples
        --------
        >>> MLP(3, (8,)).eval_bytes_per_set(10, 8)   # 8 · (32 + 3 · 10 · 8)
        2176
        """
        widths = (self.in_features, *self.hidden, self.out_features)
        largest = max(layer.end - layer.w_start for layer in self._layers)
        if self._piecewise(n_inputs) and not layer_by_layer:  # per unit and input, and indices
            units, n_out = self.hidden[0], self.out_features
            per_unit, per_input = 16 + 6 * n_out, 8 + 8 * n_out
            return itemsize * (largest + units * per_unit + n_inputs * per_input) + 8 * (
                8 * units + 8 * n_inputs
            )
        return itemsize * (largest + 3 * n_inputs * max(widths))

    @property
    def ntk_numbers_per_input(self) -> int:
        """Numbers :meth:`ntk_terms` holds per input: layer inputs, then O sensitivities per unit.

        Examples
        --------
        >>> MLP(3, (8,)).ntk_numbers_per_input    # (3 + 8) + 1 · 8
        19
        """
        return sum((self.in_features, *self.hidden)) + self.out_features * sum(self.hidden)

    def ntk_terms(self, xp: Namespace, theta: Array, x: Array) -> list[NTKTerm]:
        """Per-layer factors of the exact NTK at ``theta`` (shape (P,)) for inputs ``x``.

        For a dense layer ``z = c_w a W + c_b b`` the Jacobian contraction factorizes as
        ``(c_w² a a'ᵀ + c_b²) ⊙ (δ δ'ᵀ)``, so no (N, P) Jacobian is formed. No validation:
        :func:`nntk_array.ntk` validates its inputs and contracts these terms.

        Parameters
        ----------
        xp : namespace
            The array-API namespace of ``theta`` and ``x``.
        theta : array, shape (P,)
        x : array, shape (N, in_features)

        Returns
        -------
        list of ``nntk_array.models.protocol.NTKTerm``
            One term per layer, first layer first: ``a`` the scaled layer input, shape
            (N, fan_in), ``bias_sq`` the squared bias coefficient (0.0 without biases) and
            ``delta`` the sensitivities (N, O, fan_out), ``None`` for the output layer.

        Examples
        --------
        >>> import numpy as np
        >>> from array_api_compat import array_namespace
        >>> model = MLP(1, (16,), 2)
        >>> theta, x = model.init(0, xp=np), np.ones((3, 1))
        >>> terms = model.ntk_terms(array_namespace(x), theta, x)
        >>> [(t.a.shape, None if t.delta is None else t.delta.shape) for t in terms]
        [((3, 1), (3, 2, 16)), ((3, 16), None)]
        """
        act = ACTIVATIONS[self.activation]
        _, trace = self._forward(xp, theta, x)
        terms: list[NTKTerm] = []
        delta: Array | None = None
        for layer, (a, z) in zip(reversed(self._layers), reversed(trace), strict=True):
            bias_sq = layer.b_coef**2 if layer.b_start is not None else 0.0
            if delta is not None:
                delta = delta * act.deriv(xp, z)[:, None, :]
            terms.append(NTKTerm(layer.w_coef * a, bias_sq, delta))
            if layer is self._layers[0]:
                break
            w, _ = self._params(xp, theta, layer)
            wt = layer.w_coef * xp.permute_dims(w, (1, 0))  # (fan_out, fan_in)
            if delta is None:
                delta = wt[None, ...]
            else:  # one (N·O, fan_out) @ (fan_out, fan_in) GEMM, not N small batched ones
                n, o, k = delta.shape
                delta = xp.reshape(xp.matmul(xp.reshape(delta, (n * o, k)), wt), (n, o, -1))
        return terms[::-1]

    @property
    def matrix_blocks(self) -> tuple[MatrixBlock, ...]:
        """Every layer's weight matrix in θ: (start, fan_in, fan_out), row-major.

        ``perturbation="lowrank"`` of :func:`nntk_array.nntk` perturbs these by low-rank
        matrices and the biases by ordinary Gaussian noise.

        Examples
        --------
        >>> [tuple(b) for b in MLP(3, (8,)).matrix_blocks]
        [(0, 3, 8), (32, 8, 1)]
        """
        return tuple(MatrixBlock(x.w_start, x.fan_in, x.fan_out) for x in self._layers)

    def lowrank_apply(self, theta: Array, x: Array, perturbation: LowRankPerturbation) -> Array:
        """The network at θ + h for a batch of low-rank perturbations h given by their factors.

        Each layer is a GEMM of the activations with the shared weights W plus the rank-r
        correction Σ_k (a·l_k) r_kᵀ as batched products of shape (B, N, r), the perturbed
        bias folded in as one more column; the first layer's input is shared, so it costs
        x W once and (N, r) products per perturbation. Where arrays can be written a few
        sets go at a time (about 2 MiB of a layer's outputs): the shared weights' product
        is written straight into one of two (B, N, width) arrays used in turn, and the
        correction and the activation follow in place while it is in the caches. No
        (B, P) array is formed. No validation.

        Parameters
        ----------
        theta : array, shape (P,)
        x : array, shape (N, in_features)
        perturbation : LowRankPerturbation
            Factors of B perturbations, one pair per layer (the order of
            :attr:`matrix_blocks`), and the biases' perturbations as ``rest``.

        Returns
        -------
        array, shape (B, N, O)

        Examples
        --------
        >>> import numpy as np
        >>> from nntk_array.models.protocol import LowRankPerturbation
        >>> model = MLP(2, (8,))
        >>> theta = model.init(0, xp=np)
        >>> g = np.random.default_rng(0)
        >>> h = LowRankPerturbation(
        ...     (g.normal(size=(3, 1, 2)), g.normal(size=(3, 1, 8))),
        ...     (g.normal(size=(3, 1, 8)), g.normal(size=(3, 1, 1))),
        ...     g.normal(size=(3, 9)),
        ... )
        >>> model.lowrank_apply(theta, np.ones((4, 2)), h).shape
        (3, 4, 1)
        """
        from array_api_compat import array_namespace

        xp = array_namespace(theta, x, perturbation.rest)
        act = ACTIVATIONS[self.activation]
        sets, n, last = perturbation.batch, x.shape[0], len(self._layers) - 1
        outputs = _Outputs(xp, sets, n, max(self.hidden, default=0), theta)
        # a few sets at a time, so that each layer's product, correction, bias and
        # activation meet in the caches; arrays that cannot be filled take the batch at once
        size = xp.finfo(theta.dtype).bits // 8
        per_set = size * n * max(self.hidden, default=1)
        few = max(1, _SWEEP_PRODUCT // per_set) if outputs.writeable else sets
        a, offset, rest = x, 0, perturbation.rest
        for i, layer in enumerate(self._layers):
            w, b = self._params(xp, theta, layer)
            left = xp.permute_dims(perturbation.left[i], (0, 2, 1))  # (B, fan_in, r)
            right = perturbation.right[i]  # (B, r, fan_out)
            t = dense(xp, a, left)  # (B, N, r): x's share once, not per perturbation
            if layer.w_coef != 1.0:
                t = layer.w_coef * t
            if b is not None:
                shift = b + rest[:, None, offset : offset + layer.fan_out]  # (B, 1, fan_out)
                offset += layer.fan_out
                dev = array_device(t)
                col = xp.full((*t.shape[:-1], 1), layer.b_coef, dtype=t.dtype, device=dev)
                t = xp.concat([t, col], axis=-1)
                right = xp.concat([right, shift], axis=1)
            shared = layer.w_coef * w
            first = dense(xp, a, shared) if a.ndim == 2 else None  # the shared input's share
            z = outputs.layer(i, i == last, layer.fan_out)
            if z is None:  # the whole batch in new arrays
                term = xp.matmul(t, right)  # correction and bias
                term += first if first is not None else dense(xp, a, shared)
                a = term if i == last else act.fn(xp, term)
                continue
            for s0 in range(0, sets, few):
                s1 = min(s0 + few, sets)
                # the products land in the layer's buffer, the correction and the
                # activation follow while it is in the caches
                out = z[s0:s1, ...]
                if first is not None:
                    matmul_into(xp, t[s0:s1, ...], right[s0:s1, ...], out)
                    out += first
                else:
                    dense(xp, a[s0:s1, ...], shared, out)
                    out += xp.matmul(t[s0:s1, ...], right[s0:s1, ...])
                if i != last:
                    activated = act.apply(xp, out, reuse=True)
                    if activated is not out:  # no in-place form
                        out[...] = activated
            a = z
        return a

    def column_bytes(self, sets: int, n_inputs: int, itemsize: int) -> int | None:
        """Bytes :meth:`apply_by_columns` holds for ``sets`` parameter sets at ``n_inputs``
        inputs, besides the column blocks it reads: for every set two activations of the
        widest hidden layer (a layer's input and its output, in turn) and the outputs, and
        a few sets' products.
        ``None`` where the network goes by its breakpoints (:meth:`eval_bytes_per_set`),
        which costs far less than any layer-by-layer pass.

        Parameters
        ----------
        sets : int
            Number of parameter sets (rows of U) evaluated at once.
        n_inputs : int
            Number N of inputs evaluated.
        itemsize : int
            Bytes per number (4 for float32, 8 for float64).

        Returns
        -------
        int or None

        Examples
        --------
        >>> MLP(3, (8,)).column_bytes(4, 10, 8)  # 8 · 4 · 10 · (2 · 8 + 1) + 2 MiB
        2102592
        >>> MLP(1, (256,)).column_bytes(4, 320, 8) is None
        True
        """
        if self._piecewise(n_inputs):
            return None
        per_input = 2 * max(self.hidden, default=0) + self.out_features
        return itemsize * sets * n_inputs * per_input + _SWEEP_PRODUCT

    def apply_by_columns(
        self,
        theta: Array,
        x: Array,
        columns: Callable[[int, int], Array],
        scale: float,
        *,
        sets: int,
        block: int,
    ) -> Array:
        """The network at θ + scale·u_m for every row u_m of a (sets, P) matrix U read by
        columns: layer by layer for all sets at once, so U is read once, left to right.

        Each block of W's rows (contiguous columns of θ, row-major) is perturbed and
        applied a few sets at a time, ``c_w a[:, rows] (W[rows] + scale·U_W[rows])``, and its
        products summed into the layer's pre-activations; the bias adds
        ``c_b (b + scale·U_b)``. The multiply-adds are those of evaluating every perturbed
        network. Memory: the column blocks (at most ``block`` numbers each) and
        :meth:`column_bytes`; it grows with sets × inputs × width, not with P. No validation.

        Parameters
        ----------
        theta : array, shape (P,)
        x : array, shape (N, in_features)
        columns : callable
            ``columns(start, stop)`` gives U[:, start:stop], shape (sets, stop - start); it is
            called with consecutive ranges from 0 to P, each column once.
        scale : float
            The perturbation's scale (σ).
        sets : int
            The number of rows of U.
        block : int
            The most numbers one call of ``columns`` may return (at least one row of W).

        Returns
        -------
        array, shape (sets, N, O)

        Raises
        ------
        TypeError
            The library's arrays cannot be written in place (JAX).

        Examples
        --------
        >>> import numpy as np
        >>> model = MLP(2, (8,))
        >>> theta, x = model.init(0, xp=np), np.ones((4, 2))
        >>> u = np.random.default_rng(0).standard_normal((3, model.num_params))
        >>> out = model.apply_by_columns(theta, x, lambda a, b: u[:, a:b], 0.1, sets=3, block=64)
        >>> bool(np.allclose(out, model.apply(theta + 0.1 * u, x)))
        True
        """
        from array_api_compat import array_namespace

        xp = array_namespace(theta, x)
        act = ACTIVATIONS[self.activation]
        n, last = x.shape[0], len(self._layers) - 1
        outputs = _Outputs(xp, sets, n, max(self.hidden, default=0), theta)
        if not outputs.writeable:
            raise TypeError(
                "`apply_by_columns` writes the layers' outputs in place: it needs arrays the "
                f"library can write (NumPy, PyTorch, CuPy), not {xp.__name__}'s"
            )
        a = x
        for i, layer in enumerate(self._layers):
            z = outputs.layer(i, i == last, layer.fan_out)
            assert z is not None  # writeable
            w, b = self._params(xp, theta, layer)
            _perturbed_layer(
                xp, layer, w, b, a, z, columns, scale, block, None if i == last else act
            )
            a = z
        return a


class _Outputs:
    """The layer outputs of a pass over ``sets`` parameter sets layer by layer: two flat
    buffers in turn for the hidden layers (a layer's input and its output), since fresh
    (sets, N, width) arrays per layer would cost their page faults again each time; the
    last layer's a fresh array. ``None`` where the library's arrays cannot be filled."""

    def __init__(self, xp: Namespace, sets: int, n: int, widest: int, like: Array) -> None:
        self.xp, self.sets, self.n, self.widest = xp, sets, n, widest
        self.dtype, self.device = like.dtype, array_device(like)
        self.writeable = writeable(xp, self.device)
        self._flats: list[Array | None] = [None, None]

    def layer(self, i: int, last: bool, width: int) -> Array | None:
        """Where layer ``i`` (of ``width`` outputs) writes; ``last`` for the readout."""
        xp, shape = self.xp, (self.sets, self.n, width)
        if not self.writeable:
            return None
        if last:
            return xp.empty(shape, dtype=self.dtype, device=self.device)
        flat = self._flats[i % 2]
        if flat is None:
            size = self.sets * self.n * self.widest
            flat = self._flats[i % 2] = xp.empty((size,), dtype=self.dtype, device=self.device)
        return xp.reshape(flat[: self.sets * self.n * width], shape)


def _perturbed_layer(
    xp: Namespace,
    layer: _Layer,
    w: Array,
    b: Array | None,
    a: Array,
    z: Array,
    columns: Callable[[int, int], Array],
    scale: float,
    block: int,
    act: Activation | None,
) -> None:
    """Write a layer's outputs into ``z`` (sets, N, fan_out) for its input ``a`` ((N, fan_in)
    shared, or (sets, N, fan_in)) at W + scale·U_W and b + scale·U_b, activated by ``act``
    (``None``: none), U read through ``columns`` in blocks of W's rows (see
    :meth:`MLP.apply_by_columns`). The last block carries the bias's columns, so the bias
    and the activation join its products while they are in the caches."""
    k, out, sets, n = layer.fan_in, layer.fan_out, z.shape[0], z.shape[1]
    # a few sets' perturbed weights and products at a time, so they stay in the caches: the
    # products (N, out), the weights (rows, out), and for few outputs (N, rows) (`dense`)
    size = xp.finfo(z.dtype).bits // 8
    few = max(1, _SWEEP_PRODUCT // (size * max(n * out, k * out, n * k)))
    rows = max(1, block // (sets * out))
    rows = -(-k // -(-k // rows))  # blocks of even size
    shift = None if b is None else layer.b_coef * b  # (1, fan_out)
    for r0 in range(0, k, rows):
        r1 = min(r0 + rows, k)
        final, width = r1 == k, (r1 - r0) * out
        start = layer.w_start + r0 * out
        read = columns(start, layer.end if final else start + width)
        u = xp.reshape(read[:, :width], (sets, r1 - r0, out))
        ub = read[:, width:] if final and shift is not None else None
        part, shared = a[..., r0:r1], layer.w_coef * w[r0:r1, :]
        for s0 in range(0, sets, few):
            s1 = min(s0 + few, sets)
            perturbed = (layer.w_coef * scale) * u[s0:s1, ...]
            perturbed += shared
            term = dense(xp, part if part.ndim == 2 else part[s0:s1, ...], perturbed)
            if r0:
                term += z[s0:s1, ...]
            if ub is not None:
                term += shift + (layer.b_coef * scale) * ub[s0:s1, None, :]
            if final and act is not None:
                term = act.fn(xp, term)
            z[s0:s1, ...] = term
        del read, u, ub, part  # a block's views go before the next block is read
