"""Networks whose local NTK fails, beside the built-in MLP: quantized and stochastic.

Both are one-hidden-layer networks with the layout of :class:`nntk_array.MLP` (NTK
parameterization, biases, one output) and implement the model protocol
(:class:`nntk_array.Model`), so :func:`nntk_array.ntk` and :func:`nntk_array.nntk` take them
on every array library:

:class:`QuantizedMLP`
    every parameter is rounded to a grid inside the forward pass. The output is piecewise
    constant in θ, its gradient is zero almost everywhere and **its local NTK is identically
    zero**; its nonlocal NTK is that of the Gaussian-smoothed network
    f_σ(θ) = E f(θ + σu), which is smooth.
:class:`NoisyMLP`
    Gaussian noise τξ is added to every hidden pre-activation in every forward pass. Its
    local NTK (the Jacobian of one noisy forward pass) is a random kernel; its nonlocal NTK
    is the Gaussian NNTK of the noise-averaged network (see the class).

(The sign-activation network, whose local NTK keeps only the readout, is the built-in
``nk.MLP(d, (m,), activation="sign")``.)
"""

from __future__ import annotations

from array_api_compat import array_namespace, device

from .._typing import Array, Device, DType, Namespace, SeedLike
from .._validate import check_positive_float, check_positive_int
from ..backends.random import Generator
from ..models.activations import ACTIVATIONS
from ..models.mlp import MLP
from ..models.protocol import LastLayer, NTKTerm

__all__ = ["NoisyMLP", "QuantizedMLP", "noisy_nntk"]


class _OnMLP:
    """What a network built on an :class:`~nntk_array.MLP` (``self.network``) shares with it:
    the parameter count, the initialization and the input check."""

    network: MLP

    @property
    def num_params(self) -> int:
        """P, as for the underlying MLP.

        Examples
        --------
        >>> QuantizedMLP(1, (8,)).num_params
        25
        """
        return self.network.num_params

    def init(
        self, seed: SeedLike, *, xp: Namespace = None, dtype: DType = None, device: Device = None
    ) -> Array:
        """Draw continuous N(0, 1) parameters, as :meth:`nntk_array.MLP.init`.

        Parameters
        ----------
        seed : int or native generator
        xp : namespace, optional
        dtype : dtype, optional
        device : device, optional

        Returns
        -------
        array, shape (P,)

        Examples
        --------
        >>> import numpy as np
        >>> NoisyMLP(1, 8).init(0, xp=np).shape
        (25,)
        """
        return self.network.init(seed, xp=xp, dtype=dtype, device=device)

    def apply(self, theta: Array, x: Array) -> Array:
        """Evaluate the network after checking the arguments (each subclass's
        ``apply_unchecked``: rounded parameters, or fresh noise).

        Parameters
        ----------
        theta : array, shape (P,) or (B, P)
        x : array, shape (N, in_features)

        Returns
        -------
        array, shape (N, 1) or (B, N, 1)

        Examples
        --------
        >>> import numpy as np
        >>> model = QuantizedMLP(1, (8,))
        >>> theta = model.init(0, xp=np)
        >>> model.apply(np.stack([theta, theta + 0.01]), np.zeros((3, 1))).shape
        (2, 3, 1)
        >>> NoisyMLP(1, 8).apply(theta, np.ones((4, 1))).shape
        (4, 1)
        """
        self.network.check_theta(theta, batched=True)
        self.network.check_x("x", x)
        return self.apply_unchecked(theta, x)

    def apply_unchecked(self, theta: Array, x: Array) -> Array:
        """Each subclass's batched evaluation without argument checks."""
        raise NotImplementedError

    def check_x(self, name: str, x: Array) -> None:
        """Raise ``ValueError`` unless ``x`` has shape (N, in_features).

        Parameters
        ----------
        name : str
        x : array

        Examples
        --------
        >>> import numpy as np
        >>> QuantizedMLP(2, (8,)).check_x("x1", np.zeros((3, 2)))
        """
        self.network.check_x(name, x)


class QuantizedMLP(_OnMLP):
    """An MLP whose parameters are rounded to multiples of ``step`` in the forward pass.

    f(θ, x) = g(Δ·round(θ/Δ), x), with g the :class:`nntk_array.MLP`
    ``MLP(in_features, hidden, 1, activation)`` and Δ = ``step``: the weights and biases of
    every layer, the readout included, live on the grid ΔZ. The output is piecewise constant
    in θ, so the gradient is zero almost everywhere and the local NTK is identically zero
    (:meth:`ntk_terms`). The Gaussian NNTK is the kernel of f_σ(θ) = E f(θ + σu, ·), a
    smooth function of θ for every σ > 0.

    Parameters
    ----------
    in_features : int
        Input dimension d.
    hidden : sequence of int
        Widths of the hidden layers.
    activation : str, default "relu"
        An activation of :class:`nntk_array.MLP`.
    step : float, default 0.5
        The grid spacing Δ > 0 (parameters are N(0, 1) at initialization).

    Examples
    --------
    >>> import numpy as np
    >>> import nntk_array as nk
    >>> from nntk_array.study import QuantizedMLP
    >>> model = QuantizedMLP(1, (16,))
    >>> theta, x = model.init(0, xp=np), np.linspace(-1.0, 1.0, 5)[:, None]
    >>> model.apply(theta, x).shape
    (5, 1)
    >>> bool(np.all(nk.ntk(model, theta, x) == 0.0))
    True
    >>> K = nk.nntk(model, theta, x, sigma=0.5, samples=512, seed=0)
    >>> bool(np.all(np.diag(K) > 0))
    True
    """

    out_features = 1
    ntk_numbers_per_input = 2

    def __init__(
        self,
        in_features: int,
        hidden: tuple[int, ...],
        *,
        activation: str = "relu",
        step: float = 0.5,
    ) -> None:
        self.network = MLP(in_features, hidden, 1, activation=activation)
        self.step = check_positive_float("step", step)

    def __repr__(self) -> str:
        net = self.network
        return (
            f"QuantizedMLP(in_features={net.in_features}, hidden={net.hidden}, "
            f"activation={net.activation!r}, step={self.step})"
        )

    def quantize(self, theta: Array) -> Array:
        """Δ·round(θ/Δ), elementwise (ties to even).

        Parameters
        ----------
        theta : array, shape (..., P)

        Returns
        -------
        array, shape of ``theta``

        Examples
        --------
        >>> import numpy as np
        >>> QuantizedMLP(1, (8,), step=0.5).quantize(np.array([0.2, 0.3, -0.8]))
        array([ 0. ,  0.5, -1. ])
        """
        xp = array_namespace(theta)
        return self.step * xp.round(theta / self.step)

    def apply_unchecked(self, theta: Array, x: Array) -> Array:
        """:meth:`apply` without argument checks (the kernels call it per chunk).

        Parameters
        ----------
        theta : array, shape (P,) or (B, P)
        x : array, shape (N, in_features)

        Returns
        -------
        array, shape (N, 1) or (B, N, 1)

        Examples
        --------
        >>> import numpy as np
        >>> model = QuantizedMLP(1, (8,))
        >>> model.apply_unchecked(model.init(0, xp=np)[None, :], np.ones((4, 1))).shape
        (1, 4, 1)
        """
        return self.network.apply_unchecked(self.quantize(theta), x)

    def eval_bytes_per_set(self, n_inputs: int, itemsize: int) -> int:
        """Bytes per parameter set of a batched evaluation: the MLP's and the rounded copy.

        Parameters
        ----------
        n_inputs : int
        itemsize : int

        Returns
        -------
        int

        Examples
        --------
        >>> QuantizedMLP(1, (8,)).eval_bytes_per_set(10, 8) > 25 * 8
        True
        """
        return self.network.eval_bytes_per_set(n_inputs, itemsize) + itemsize * self.num_params

    def ntk_terms(self, xp: Namespace, theta: Array, x: Array) -> list[NTKTerm]:
        """The local NTK's factors: zero, since d round(θ/Δ)/dθ = 0 almost everywhere.

        By the chain rule ∇_θ f = (∇g)(θ_q) · diag(q'(θ)) with q' = 0 off the grid's
        midpoints (a set of measure zero), so every Jacobian column vanishes.

        Parameters
        ----------
        xp : namespace
        theta : array, shape (P,)
        x : array, shape (N, in_features)

        Returns
        -------
        list of NTKTerm
            One term with zero factors.

        Examples
        --------
        >>> import numpy as np
        >>> from array_api_compat import array_namespace
        >>> x = np.ones((3, 1))
        >>> [t.a.shape for t in QuantizedMLP(1, (8,)).ntk_terms(array_namespace(x), None, x)]
        [(3, 1)]
        """
        zeros = xp.zeros((x.shape[0], 1), dtype=x.dtype, device=device(x))
        return [NTKTerm(zeros, 0.0, zeros[:, None, :])]


class NoisyMLP(_OnMLP):
    """A one-hidden-layer MLP with Gaussian noise on its hidden pre-activations.

    f(θ, x; ξ) = c_v Σ_j v_j φ(z_j(x) + τ ξ_j) + c_o b_o, z = c_w x W + c_b b, with the layout
    and coefficients of ``nk.MLP(in_features, (width,), 1, activation)`` and τ = ``noise``.
    Every forward pass draws fresh ξ ~ N(0, 1), independent across parameter sets, inputs
    and units (as dropout draws a mask per example), from a stream seeded by ``seed``: two
    models with the same seed give the same outputs for the same sequence of calls on one
    library and device.

    **Its nonlocal NTK.** The perturbations u and the noise are independent, so the Stein
    estimator's mean is the gradient of f̄_σ(θ, x) = E_{u,ξ} f(θ + σu, x; ξ), and the
    U-statistic of :func:`nntk_array.nntk` estimates Θ_NL = ∇f̄_σ(x)·∇f̄_σ(x'): the Gaussian
    NNTK of the *noise-averaged* network. For one hidden layer both averages act on the
    pre-activations, so f̄_σ is the network with φ replaced by φ̃_s(μ) = E φ(μ + s g) at
    s(x)² = τ² + σ² (c_w² ‖x‖² + c_b²), and Θ_NL has the closed form of
    :func:`nntk_array.analytic.finite_width_nntk` at that s (docs: The study). Its local NTK
    (:meth:`ntk_terms`) is that of one noisy forward pass: a random kernel, and a rough one,
    since every input draws its own noise.

    The model offers ``last_layer`` and ``hidden_pass`` (the noisy pre-activations), so the
    variance-reduced estimators of :func:`nntk_array.nntk` apply; it offers no ``jvp``.

    Parameters
    ----------
    in_features : int
        Input dimension d.
    width : int
        Hidden units m.
    activation : str, default "relu"
        An activation of :class:`nntk_array.MLP`.
    noise : float, default 0.5
        The noise scale τ > 0 (pre-activations have variance c_w²‖x‖² + c_b² at
        initialization).
    seed : int, default 0
        Seed of the noise stream.

    Examples
    --------
    >>> import numpy as np
    >>> import nntk_array as nk
    >>> from nntk_array.study import NoisyMLP
    >>> model = NoisyMLP(1, 16, seed=0)
    >>> theta, x = model.init(0, xp=np), np.zeros((3, 1))
    >>> a = model.apply(np.stack([theta, theta]), x)   # two passes at the same θ
    >>> bool(np.all(a[0] != a[1]))
    True
    >>> b = NoisyMLP(1, 16, seed=0).apply(np.stack([theta, theta]), x)
    >>> bool(np.array_equal(a, b))                     # the same seed: the same noise
    True
    """

    out_features = 1

    def __init__(
        self,
        in_features: int,
        width: int,
        *,
        activation: str = "relu",
        noise: float = 0.5,
        seed: int = 0,
    ) -> None:
        self.network = MLP(in_features, (check_positive_int("width", width),), 1, activation)
        self.noise = check_positive_float("noise", noise)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"`seed` must be an int >= 0; got {seed!r}")
        self.seed = seed
        self._streams: dict[tuple[str, str], Generator] = {}

    def __repr__(self) -> str:
        net = self.network
        return (
            f"NoisyMLP(in_features={net.in_features}, width={net.hidden[0]}, "
            f"activation={net.activation!r}, noise={self.noise}, seed={self.seed})"
        )

    @property
    def last_layer(self) -> LastLayer:
        """Where the hidden layer and the readout live in θ (the MLP's layout).

        Examples
        --------
        >>> NoisyMLP(1, 8).last_layer.width
        8
        """
        last = self.network.last_layer
        assert last is not None  # one hidden layer
        return last

    def _draw(self, z: Array) -> Array:
        """τ ξ of the shape of the pre-activations z, from this model's stream on z's
        library and device."""
        xp = array_namespace(z)
        key = (xp.__name__, str(device(z)))
        if key not in self._streams:
            self._streams[key] = Generator(self.seed, xp=xp, device=device(z))
        return self.noise * self._streams[key].normal(tuple(z.shape), dtype=z.dtype)

    def hidden_pass(
        self, thetas: Array, x: Array, tangents: Array | None = None, *, own: bool = True
    ) -> tuple[Array, Array, Array | None]:
        """The hidden layer's input, its noisy pre-activations z + τξ, and their tangents.

        The noise is additive, so the tangents ∂z/∂θ · v are the MLP's
        (:meth:`nntk_array.MLP.hidden_pass`).

        Parameters
        ----------
        thetas : array, shape (B, P)
        x : array, shape (N, in_features)
        tangents : array, shape (K, P), optional
        own : bool, default True

        Returns
        -------
        a, z, dz : arrays
            ``x``, the noisy pre-activations (B, N, width) and the tangents or ``None``.

        Examples
        --------
        >>> import numpy as np
        >>> model = NoisyMLP(1, 8)
        >>> a, z, dz = model.hidden_pass(model.init(0, xp=np)[None, :], np.ones((3, 1)))
        >>> z.shape, dz
        ((1, 3, 8), None)
        """
        a, z, dz = self.network.hidden_pass(thetas, x, tangents, own=own)
        return a, z + self._draw(z), dz

    def apply_unchecked(self, theta: Array, x: Array) -> Array:
        """:meth:`apply` without argument checks (the kernels call it per chunk).

        Parameters
        ----------
        theta : array, shape (P,) or (B, P)
        x : array, shape (N, in_features)

        Returns
        -------
        array, shape (N, 1) or (B, N, 1)

        Examples
        --------
        >>> import numpy as np
        >>> model = NoisyMLP(1, 8)
        >>> model.apply_unchecked(model.init(0, xp=np)[None, :], np.ones((4, 1))).shape
        (1, 4, 1)
        """
        xp = array_namespace(theta, x)
        thetas = theta[None, :] if theta.ndim == 1 else theta
        last = self.last_layer
        _, z, _ = self.hidden_pass(thetas, x)
        v = xp.reshape(thetas[:, last.v_start : last.v_start + last.width], (-1, last.width, 1))
        out = last.c_v * xp.matmul(ACTIVATIONS[last.activation].fn(xp, z), v)
        if last.bo_start is not None:
            out = out + last.c_o * thetas[:, last.bo_start, None, None]
        return out[0, ...] if theta.ndim == 1 else out

    def eval_bytes_per_set(self, n_inputs: int, itemsize: int) -> int:
        """Bytes per parameter set of a batched evaluation: the MLP's and the noise.

        Parameters
        ----------
        n_inputs : int
        itemsize : int

        Returns
        -------
        int

        Examples
        --------
        >>> NoisyMLP(1, 8).eval_bytes_per_set(10, 8) > 0
        True
        """
        width = self.last_layer.width
        layers = self.network.eval_bytes_per_set(n_inputs, itemsize, layer_by_layer=True)
        return layers + itemsize * n_inputs * width

    @property
    def ntk_numbers_per_input(self) -> int:
        """Numbers :meth:`ntk_terms` holds per input: d + 2m.

        Examples
        --------
        >>> NoisyMLP(1, 8).ntk_numbers_per_input
        17
        """
        return self.network.in_features + 2 * self.last_layer.width

    def ntk_terms(self, xp: Namespace, theta: Array, x: Array) -> list[NTKTerm]:
        """Factors of the local NTK of one noisy forward pass (one noise draw per call).

        :func:`nntk_array.ntk` calls this once per block of inputs, so its kernel is that of
        one pass when the inputs fit one block (the default memory budget holds thousands).

        Parameters
        ----------
        xp : namespace
        theta : array, shape (P,)
        x : array, shape (N, in_features)

        Returns
        -------
        list of NTKTerm
            The hidden layer's (input ``c_w x``, sensitivities c_v v_j φ'(z̃_j)) and the
            readout's (features c_v φ(z̃)).

        Examples
        --------
        >>> import numpy as np
        >>> from array_api_compat import array_namespace
        >>> model = NoisyMLP(1, 8)
        >>> x = np.ones((3, 1))
        >>> terms = model.ntk_terms(array_namespace(x), model.init(0, xp=np), x)
        >>> [t.a.shape for t in terms]
        [(3, 1), (3, 8)]
        """
        last = self.last_layer
        act = ACTIVATIONS[last.activation]
        z = self.hidden_pass(theta[None, :], x)[1][0, ...]
        v = theta[last.v_start : last.v_start + last.width]
        delta = (last.c_v * v * act.deriv(xp, z))[:, None, :]
        return [
            NTKTerm(last.c_w * x, last.c_b**2, delta),
            NTKTerm(last.c_v * act.fn(xp, z), last.c_o**2, None),
        ]


def noisy_nntk(model: NoisyMLP, theta: Array, x1: Array, x2: Array, *, sigma: float) -> Array:
    """The exact Gaussian NNTK of a :class:`NoisyMLP`: that of its noise-averaged network.

    Θ_NL(x, x') = c_v² Σ_j [φ̃_s(z_j) φ̃_{s'}(z'_j) + v_j² φ̃'_s(z_j) φ̃'_{s'}(z'_j)
    (c_w² x·x' + c_b²)] + c_o² with s(x)² = τ² + σ²(c_w²‖x‖² + c_b²), for the activations of
    :func:`nntk_array.analytic.smoothed_activation` (relu, erf, sign).

    Parameters
    ----------
    model : NoisyMLP
    theta : array, shape (P,)
    x1 : array, shape (N1, d)
    x2 : array, shape (N2, d)
    sigma : float
        σ > 0.

    Returns
    -------
    array, shape (N1, N2)

    Examples
    --------
    >>> import numpy as np
    >>> import nntk_array as nk
    >>> model = NoisyMLP(1, 32, noise=0.5)
    >>> theta, x = model.init(0, xp=np), np.linspace(-1.0, 1.0, 4)[:, None]
    >>> exact = noisy_nntk(model, theta, x, x, sigma=0.3)
    >>> est, se = nk.nntk(model, theta, x, sigma=0.3, samples=4096, seed=0, return_stderr=True)
    >>> bool(np.all(np.abs(est - exact) < 5 * se + 1e-12))
    True
    """
    from ..analytic import smoothed_activation

    xp = array_namespace(theta, x1, x2)
    last = model.last_layer
    d, m = last.fan_in, last.width
    w = xp.reshape(theta[: d * m], (d, m))
    b = theta[d * m : d * m + m]
    v = theta[last.v_start : last.v_start + m]

    def parts(x: Array) -> tuple[Array, Array]:
        z = last.c_w * xp.matmul(x, w) + last.c_b * b
        var = last.c_w**2 * xp.sum(x * x, axis=1, keepdims=True) + last.c_b**2
        s = xp.sqrt(model.noise**2 + sigma**2 * var)
        fn, deriv = smoothed_activation(xp, model.network.activation, s)
        return fn(xp, z), deriv(xp, z)

    f1, g1 = parts(x1)
    f2, g2 = parts(x2)
    cov = last.c_w**2 * xp.matmul(x1, xp.permute_dims(x2, (1, 0))) + last.c_b**2
    feats = xp.matmul(f1, xp.permute_dims(f2, (1, 0)))
    slopes = xp.matmul(g1 * v * v, xp.permute_dims(g2, (1, 0)))
    return last.c_v**2 * (feats + slopes * cov) + last.c_o**2
