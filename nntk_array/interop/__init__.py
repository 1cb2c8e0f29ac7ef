"""Kernels for other libraries: a network's NTK and NNTK as scikit-learn and GPyTorch kernels.

- :mod:`nntk_array.interop.sklearn`: ``NTKKernel`` and ``NNTKKernel``, scikit-learn
  ``Kernel`` objects for ``GaussianProcessRegressor``, ``KernelRidge``, ``SVR`` (the
  ``sklearn`` extra);
- :mod:`nntk_array.interop.gpytorch`: ``NTKKernel`` and ``NNTKKernel``, GPyTorch kernels for
  ``ExactGP`` models, the NNTK optionally as a low-rank operator (the ``gpytorch`` extra).

Each submodule imports its library when it is imported; this package and ``import
nntk_array`` import neither.
"""
