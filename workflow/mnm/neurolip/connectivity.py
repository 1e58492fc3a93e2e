"""Subject connectomes with nilearn's :class:`~nilearn.connectome.ConnectivityMeasure`.

Connectomes are stored as nilearn vectors (``vectorize=True, discard_diagonal=True``: the
lower triangle without the diagonal, ``R (R - 1) / 2`` values in nilearn's order) and
rebuilt as full symmetric matrices with a zero diagonal by :func:`vector_to_matrix` (for a
correlation the diagonal is 1 for everybody and carries nothing).

A ROI whose time series is constant (real PCP tables have some all-zero columns) has no
defined correlation. It is marked invalid in that subject's ``region_valid`` mask, its
column is replaced by seeded white noise while the connectome is estimated (so that every
subject has the same shape, which the tangent space needs), and its edges are set to 0
afterwards. The model never attends to an invalid region.

``kind="tangent"`` fits the group reference (geometric mean of the covariances) on all
subjects passed in: no label is used, but test subjects do contribute to the reference.
"""

from __future__ import annotations

import numpy as np

__all__ = ["KINDS", "connectomes", "vector_to_matrix", "n_regions_of_vector"]

KINDS = ("correlation", "partial correlation", "tangent", "covariance", "precision")


def _valid_regions(series: np.ndarray, tol: float = 1e-8) -> np.ndarray:
    return np.asarray(series).std(axis=0) > tol


def connectomes(time_series: list[np.ndarray], kind: str = "correlation", seed: int = 0):
    """Vectorised connectomes and per-subject valid-region masks.

    Parameters
    ----------
    time_series : list of numpy.ndarray
        ``(time points, R)`` per subject (R equal for all).
    kind : str
        One of :data:`KINDS` (nilearn's ``kind``).
    seed : int
        Seed of the noise standing in for invalid ROI columns.

    Returns
    -------
    vectors : numpy.ndarray
        float32 ``(n_subjects, R (R - 1) / 2)``.
    region_valid : numpy.ndarray
        bool ``(n_subjects, R)``.
    """
    from nilearn.connectome import ConnectivityMeasure, sym_matrix_to_vec

    if kind not in KINDS:
        raise ValueError(f"neurolip.connectivity must be one of {KINDS}, got {kind!r}")
    if not time_series:
        raise ValueError("no subject time series")
    widths = {np.asarray(s).shape[1] for s in time_series}
    if len(widths) != 1:
        raise ValueError(f"subjects have different numbers of ROIs: {sorted(widths)}")
    rng = np.random.default_rng(seed)
    filled, valid = [], []
    for i, series in enumerate(time_series):
        series = np.array(series, dtype=np.float64)
        if series.shape[0] < 3:
            raise ValueError(f"subject {i}: {series.shape[0]} time points, need at least 3")
        ok = _valid_regions(series)
        if ok.sum() < 2:
            raise ValueError(f"subject {i}: fewer than 2 ROIs with a non-constant time series")
        series[:, ~ok] = rng.standard_normal((series.shape[0], int((~ok).sum())))
        filled.append(series)
        valid.append(ok)
    measure = ConnectivityMeasure(kind=kind, standardize="zscore_sample")
    matrices = measure.fit_transform(filled)
    valid = np.stack(valid)
    pair_valid = valid[:, :, None] & valid[:, None, :]
    matrices = np.where(pair_valid, matrices, 0.0)
    vectors = sym_matrix_to_vec(matrices, discard_diagonal=True)
    return np.nan_to_num(vectors).astype(np.float32), valid


def n_regions_of_vector(length: int) -> int:
    """R such that ``R (R - 1) / 2 == length`` (error otherwise)."""
    n = int(round((1 + np.sqrt(1 + 8 * length)) / 2))
    if n * (n - 1) // 2 != length:
        raise ValueError(f"a connectome vector of length {length} is not R(R-1)/2 for any R")
    return n


def vector_to_matrix(vectors: np.ndarray) -> np.ndarray:
    """Full symmetric ``(..., R, R)`` matrices, zero diagonal, from nilearn vectors."""
    from nilearn.connectome import vec_to_sym_matrix

    vectors = np.asarray(vectors, dtype=np.float32)
    n = n_regions_of_vector(vectors.shape[-1])
    diagonal = np.zeros(vectors.shape[:-1] + (n,), dtype=np.float32)
    return vec_to_sym_matrix(vectors, diagonal=diagonal).astype(np.float32)
