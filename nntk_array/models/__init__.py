"""Models: the protocol the kernels ask of a model, and the built-in MLP.

:mod:`.protocol` says what a model is (a parameter count and a batched ``apply``) and which
optional capabilities the kernels use; :mod:`.mlp` is the built-in network, which offers all
of them; :mod:`.activations` its pointwise nonlinearities. The adapters of PyTorch modules
and JAX pytree models (:func:`from_torch`, :func:`from_jax`) name their frameworks, so they
live in the backend seam (``backends/torch_module.py``, ``backends/jax_pytree.py``) and are
re-exported here.
"""

from ..backends.jax_pytree import JaxModel, from_jax
from ..backends.torch_module import TorchModel, from_torch
from .mlp import MLP
from .protocol import Model, NTKTerm

__all__ = ["MLP", "JaxModel", "Model", "NTKTerm", "TorchModel", "from_jax", "from_torch"]
