"""Deterministic cross-validation folds and the validation split used for epoch choice.

Both functions sort the article ids before permuting them with a seeded NumPy generator,
so the assignment depends only on the *set* of ids, the number of folds and the seed,
never on the row order of the input files.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["assign_folds", "validation_split"]


def _sorted_unique_ids(article_ids, what: str) -> np.ndarray:
    """Return the ids as a sorted array of str, raising on duplicates or emptiness."""
    ids = np.asarray([str(i) for i in article_ids], dtype=object)
    if len(ids) == 0:
        raise ValueError(f"{what}: no article ids given")
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        duplicated = unique[counts > 1][:5].tolist()
        raise ValueError(f"{what}: duplicated article ids, e.g. {duplicated}")
    return unique


def assign_folds(article_ids, n_folds: int, seed: int = 0) -> pd.DataFrame:
    """Assign each article to one of ``n_folds`` balanced folds.

    Parameters
    ----------
    article_ids : iterable of str
        Unique article identifiers.
    n_folds : int
        Number of folds (>= 2, at most the number of articles).
    seed : int
        Seed of the permutation.

    Returns
    -------
    pandas.DataFrame
        Columns ``article_id`` (str) and ``fold`` (int64, ``0..n_folds-1``), sorted by id.
        Fold sizes differ by at most one.
    """
    ids = _sorted_unique_ids(article_ids, "assign_folds")
    if not 2 <= int(n_folds) <= len(ids):
        raise ValueError(f"assign_folds: n_folds={n_folds} must be in [2, {len(ids)}] (number of articles)")
    order = np.random.default_rng(seed).permutation(len(ids))
    folds = np.empty(len(ids), dtype=np.int64)
    # Dealing the permuted articles round-robin gives sizes that differ by at most one.
    folds[order] = np.arange(len(ids)) % int(n_folds)
    return pd.DataFrame({"article_id": ids.astype(str), "fold": folds})


def validation_split(train_ids, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Carve a deterministic validation subset out of the training articles.

    Parameters
    ----------
    train_ids : iterable of str
        Ids of the training articles (the test fold already removed).
    fraction : float
        Share of ``train_ids`` held out, in (0, 1). At least one article is held out and at
        least one is kept for fitting.
    seed : int
        Seed of the permutation.

    Returns
    -------
    fit_ids, validation_ids : numpy.ndarray of str
        Disjoint, sorted, and together equal to ``train_ids``.
    """
    ids = _sorted_unique_ids(train_ids, "validation_split")
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"validation_split: fraction={fraction} must be in (0, 1)")
    if len(ids) < 2:
        raise ValueError("validation_split: need at least 2 training articles")
    n_val = min(max(1, int(round(fraction * len(ids)))), len(ids) - 1)
    order = np.random.default_rng(seed).permutation(len(ids))
    is_val = np.zeros(len(ids), dtype=bool)
    is_val[order[:n_val]] = True
    return ids[~is_val].astype(str), ids[is_val].astype(str)
