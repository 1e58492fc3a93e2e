"""Deterministic cross-validation folds and the validation split used for epoch choice.

Both functions sort the article ids before permuting them with a seeded NumPy generator,
so the assignment depends only on the *set* of ids, the number of folds and the seed,
never on the row order of the input files.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["assign_folds", "assign_repeated_folds", "validation_split"]


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


def assign_repeated_folds(article_ids, n_folds: int, n_repeats: int = 1, seed: int = 0) -> pd.DataFrame:
    """Folds of a repeated cross-validation: an independent partition per repeat.

    Repeat ``r`` is :func:`assign_folds` with seed ``seed + r``, so repeat 0 is the plain
    k-fold assignment of ``seed`` and every further repeat re-partitions the articles
    (repeated cross-validation, not merely a re-seeded model).

    Returns
    -------
    pandas.DataFrame
        Columns ``article_id``, ``repeat`` (0..n_repeats-1) and ``fold``, sorted by repeat
        then id.
    """
    if int(n_repeats) < 1:
        raise ValueError(f"assign_repeated_folds: n_repeats={n_repeats} must be >= 1")
    frames = [assign_folds(article_ids, n_folds, seed + r).assign(repeat=r)
              for r in range(int(n_repeats))]
    return pd.concat(frames, ignore_index=True)[["article_id", "repeat", "fold"]]


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


def write_folds(articles_path, out_path, n_folds: int, n_repeats: int = 1, seed: int = 0) -> pd.DataFrame:
    """Write ``folds.parquet`` (article_id, repeat, fold) for the articles of the corpus.

    Raises
    ------
    ValueError
        Naming the corpus file when it has too few articles for ``n_folds``.
    """
    from mnm.io import read_parquet, write_parquet

    ids = read_parquet(articles_path, columns=["article_id"])["article_id"]
    if int(n_folds) > len(ids):
        raise ValueError(f"{articles_path}: {len(ids)} articles cannot fill {n_folds} folds "
                         "(config folds.n_folds)")
    folds = assign_repeated_folds(ids, n_folds, n_repeats, seed)
    write_parquet(folds, out_path)
    return folds
