"""Models: the protocol the kernels ask of a model, and the built-in MLP.

:mod:`.protocol` says what a model is (a parameter count and a batched ``apply``) and which
optional capabilities the kernels use; :mod:`.mlp` is the built-in network, which offers all
of them; :mod:`.activations` its pointwise nonlinearities.
"""

from .from_jax import JaxModel, from_jax
from .from_torch import TorchModel, from_torch
from .mlp import MLP
from .protocol import Model, NTKTerm

__all__ = ["MLP", "JaxModel", "Model", "NTKTerm", "TorchModel", "from_jax", "from_torch"]
