"""The backend seam: the only package that names torch, jax or cupy.

Each module imports its backend inside functions, so ``import nntk_array`` loads none of them.

- :mod:`.random`: native random generators drawing on the input's device and dtype.
- :mod:`.autodiff`: Jacobians of user callables through ``torch.func`` or ``jax``.
- :mod:`.namespaces`: load a library by name, configured for full precision (CLI, benchmarks).
- :mod:`.linalg`: symmetric products X Xᵀ through the library's fastest path.
- :mod:`.special`: native ``erf`` where the library has one (the standard has none).
- :mod:`.dtypes`: dtype availability (JAX without x64).
- :mod:`.tracing`: whether array values can be read now (JAX tracers cannot).
- :mod:`.sync`: device synchronization for timing (benchmarks only).
"""
