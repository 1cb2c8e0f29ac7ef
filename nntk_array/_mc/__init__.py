"""The Monte Carlo engine below the public functions (private; no stable API for users).

Data flow of one estimate, one module each:

- :mod:`.directions`: perturbation directions u_m, drawn in tiles from counter-derived
  streams and regenerated on demand (iid, antithetic, orthogonal, qmc, explicit);
- :mod:`.smoothing`: smoothing forms (Stein, radial/paper, Gauss–Hermite): which
  evaluations they need and how differences are weighted;
- :mod:`.differences`: the one loop of batched perturbed evaluations;
- :mod:`.plan`: every chunk size, route and memory constant;
- :mod:`.estimators`: the kernel estimators (U-statistic, plug-in, sketch, directional) and
  the jackknife error bars, one interface;
- :mod:`.attention`: attention scores and weights over perturbations;
- :mod:`.moments`: running moments;
- :mod:`.kernel`: the pipeline the entry point and the Dask graph share;
- :mod:`.local`: the exact local NTK in blocks of structured terms.
"""
