"""The backend seam: leaf modules for what the array API standard does not cover.

It is the only package of the core that names torch, jax or cupy, and it imports nothing of
``nntk_array`` above it (``_typing`` and ``_special`` aside). Each module imports its
backend inside functions, so ``import nntk_array`` loads none of them.

- :mod:`.random`: native random generators drawing on the input's device and dtype.
- :mod:`.autodiff`: Jacobians and Jacobian-vector products of user models through
  ``torch.func`` or ``jax``, compiled once per model and shapes on JAX.
- :mod:`.namespaces`: load a library by name, configured for full precision (CLI, benchmarks).
- :mod:`.linalg`: symmetric products X Xᵀ and triangular solves through the library's
  fastest path.
- :mod:`.special`: native ``erf`` where the library has one (the standard has none).
- :mod:`.dtypes`: dtype availability (JAX without x64, devices without float64).
- :mod:`.tracing`: whether array values can be read now (JAX tracers cannot).
- :mod:`.sync`: device synchronization for timing (benchmarks only).
- :mod:`.torch_module`, :mod:`.jax_pytree`: a ``torch.nn.Module`` and a JAX pytree model as
  models of the protocol (``nk.from_torch``, ``nk.from_jax``).
"""
