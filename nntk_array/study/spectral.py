"""Spectra and spectral bias of the study's kernels on the 1-D training inputs.

For the ReLU and sign nets and every seed: the eigenvalues of the local NTK, of the Monte
Carlo NNTK at each σ and of the infinite-width NTK (:func:`nntk_array.kernel_spectrum`), and
the fraction of each 1-D target's energy in the top eigendirections
(:func:`nntk_array.spectral_energy`): kernel gradient flow learns those first, so a larger
fraction means the target is learned faster (spectral bias).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from array_api_compat import array_namespace

from .._typing import Array
from ..spectra import kernel_spectrum, spectral_energy
from ..testing import to_numpy
from .comparison import LOCAL, NNTK_MC, NTK_INF, Candidate
from .problems import Problem

__all__ = ["NETWORKS", "kernel_labels", "spectra"]

NETWORKS = ("ReLU net", "sign net")


def kernel_labels(candidates: dict[tuple[str, str], list[Candidate]], network: str) -> list[str]:
    """The spectra's kernel labels of ``network``: local NTK, NNTK per σ, infinite width.

    Parameters
    ----------
    candidates : dict
        Per (network, kernel label) the kernels of one seed.
    network : str

    Returns
    -------
    list of str

    Examples
    --------
    >>> import numpy as np
    >>> c = {("n", LOCAL): [Candidate(np.eye(2), None)],
    ...      ("n", NTK_INF): [Candidate(np.eye(2), None)],
    ...      ("n", NNTK_MC): [Candidate(np.eye(2), 0.3)]}
    >>> kernel_labels(c, "n")
    ['local NTK', 'NNTK sigma=0.3', 'NTK, infinite width']
    """
    mc = [f"NNTK sigma={c.sigma:g}" for c in candidates[(network, NNTK_MC)]]
    return [LOCAL, *mc, NTK_INF]


def _kernels(candidates: dict[tuple[str, str], list[Candidate]], network: str) -> list[Array]:
    return [
        candidates[(network, LOCAL)][0].kernel,
        *(c.kernel for c in candidates[(network, NNTK_MC)]),
        candidates[(network, NTK_INF)][0].kernel,
    ]


def spectra(
    per_seed: Sequence[dict[tuple[str, str], list[Candidate]]], problem: Problem, *, top: int
) -> list[dict[str, Any]]:
    """Spectra and energy fractions of every seed's kernels on ``problem``'s training inputs.

    Parameters
    ----------
    per_seed : sequence of dict
        The candidates of :func:`nntk_array.study.comparison.compare_seed`, one per seed.
    problem : Problem
        The 1-D design.
    top : int
        The number k of top eigendirections in ``energy_top``.

    Returns
    -------
    list of dict
        One per (network, kernel, seed, target): ``energy_top`` (fraction of ‖y‖² in the top
        ``top`` directions) and, for seed 0, ``eigenvalues`` (divided by their sum) and
        ``energy`` (the cumulative fractions).

    Examples
    --------
    >>> import numpy as np
    >>> from nntk_array.study.problems import make_problems
    >>> one, _ = make_problems(np, n_train=6, n_test=2, dtype=np.float64)
    >>> c = {(n, k): [Candidate(np.eye(8) + 1.0, 0.3 if k == NNTK_MC else None)]
    ...      for n in NETWORKS for k in (LOCAL, NNTK_MC, NTK_INF)}
    >>> rows = spectra([c], one, top=2)
    >>> len(rows), rows[0]["eigenvalues"][0] > rows[0]["eigenvalues"][1]
    (18, True)
    """
    x = problem.x_train
    xp = array_namespace(x)
    n = x.shape[0]
    records = []
    for seed, candidates in enumerate(per_seed):
        for network in NETWORKS:
            labels = kernel_labels(candidates, network)
            for label, kernel in zip(labels, _kernels(candidates, network), strict=True):
                values, vectors = kernel_spectrum(kernel[:n, :n])
                for target in problem.targets:
                    energy = spectral_energy((values, vectors), target.fn(xp, x))
                    row: dict[str, Any] = {
                        "network": network,
                        "kernel": label,
                        "seed": seed,
                        "target": target.name,
                        "energy_top": float(energy[top - 1]),
                    }
                    if seed == 0:
                        vals = to_numpy(values)
                        row["eigenvalues"] = [float(v) for v in vals / vals.sum()]
                        row["energy"] = [float(e) for e in to_numpy(energy)]
                    records.append(row)
    return records
