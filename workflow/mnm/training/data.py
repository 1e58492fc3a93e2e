"""Inputs of a training job, aligned on their common articles, and the per-fold splits.

The fold table holds one assignment per *repeat* of the cross-validation
(``folds.parquet``: article_id, repeat, fold; see :func:`mnm.folds.assign_repeated_folds`).
For repeat ``r`` and fold ``k``: test = the articles of fold ``k``; the other folds are split
by :func:`mnm.folds.validation_split` into a *fit* set and an inner *validation* set that
chooses the epoch and any hyper-parameter; the test fold is never looked at before the final
embeddings are written (the public MNM code selects on the test fold; we do not). Fold
``"all"`` trains on every article (validation still carved) for queries and figures.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mnm.folds import validation_split
from mnm.io import read_matrix, read_parquet

__all__ = ["FoldInputs", "Split", "load_fold_inputs", "split_fold"]

log = logging.getLogger(__name__)


@dataclass
class FoldInputs:
    """Aligned inputs of one training job (rows in the order of ``ids``).

    Attributes
    ----------
    ids : numpy.ndarray of str
        Sorted article ids present in every input.
    text, brain : numpy.ndarray, float32
        Text embeddings and brain coefficients (for voxel-map models: the coarse KDE maps).
    n_active : numpy.ndarray, float32
        Active atlas components per article (the hierarchy level ``R``; always from the
        coefficients).
    folds : dict
        Repeat -> fold of each article (aligned with ``ids``).
    term_counts : mnm.text.term_counts.TermCounts or None
        Term counts of the section text per article (TF-IDF only).
    missing : dict
        Per input, how many ids of the union it lacks.
    brain_mask : nibabel image or None
        Grid and mask of voxel-map ``brain`` rows (``kde_4mm/mask.nii.gz``); None for
        coefficients.
    """

    ids: np.ndarray
    text: np.ndarray
    brain: np.ndarray
    n_active: np.ndarray
    folds: dict
    term_counts: object = None
    missing: dict = field(default_factory=dict)
    brain_mask: object = None


@dataclass
class Split:
    """Row indices (into :class:`FoldInputs`) of the fit, validation and test articles."""

    fit: np.ndarray
    validation: np.ndarray
    test: np.ndarray


def _check_unique(ids: np.ndarray, path) -> None:
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"{path}: duplicated article_id, e.g. {unique[counts > 1][:5].tolist()}")


def _fold_columns(folds_table: pd.DataFrame, path) -> pd.DataFrame:
    """Wide table article_id x repeat -> fold (a table without ``repeat`` is repeat 0)."""
    for column in ("article_id", "fold"):
        if column not in folds_table.columns:
            raise KeyError(f"{path}: column {column!r} missing")
    table = folds_table.assign(article_id=folds_table["article_id"].astype(str))
    if "repeat" not in table.columns:
        table["repeat"] = 0
    if table.duplicated(["article_id", "repeat"]).any():
        raise ValueError(f"{path}: an article appears twice in one repeat")
    return table.pivot(index="article_id", columns="repeat", values="fold")


def _brain_input(coefficients_path, kde_maps=None):
    """``(ids, brain matrix, n_active, path of the matrix, mask image or None)``.

    The matrix is the coefficients, or with ``kde_maps`` the coarse KDE maps; ``n_active``
    always comes from the coefficients table, aligned on the matrix's ids.
    """
    ids, coefficients = read_matrix(coefficients_path, "coefficients")
    n_active = read_parquet(coefficients_path, columns=["n_active"])["n_active"].to_numpy()
    if kde_maps is None:
        return ids, coefficients, n_active, coefficients_path, None
    from mnm.kde_maps import read_kde_maps

    _check_unique(ids.astype(str), coefficients_path)
    map_ids, maps, mask_img = read_kde_maps(*kde_maps)
    rows = pd.Index(ids.astype(str)).get_indexer(map_ids.astype(str))
    if (rows < 0).any():
        raise ValueError(f"{kde_maps[0]}: articles absent from {coefficients_path} (no n_active), e.g. "
                         f"{map_ids[rows < 0][:5].tolist()}")
    return map_ids, maps, n_active[rows], kde_maps[0], mask_img


def load_fold_inputs(text_path, brain_path, folds_path, articles_path=None, section=None,
                     kde_maps=None, term_counts=None) -> FoldInputs:
    """Read and align the inputs on the intersection of their article ids.

    Parameters
    ----------
    text_path : path
        ``text/{encoder}/{section}/embeddings.parquet`` (article_id, embedding).
    brain_path : path
        ``brain/{atlas}/coefficients.parquet`` (article_id, coefficients, n_peaks, n_active).
    folds_path : path
        ``folds.parquet`` (article_id, repeat, fold).
    articles_path : path, optional
        ``corpus/articles.parquet``; when given, the ids are also intersected with the
        corpus, and with ``section`` (and no ``term_counts``) the section texts are read and
        counted (TF-IDF).
    section : str, optional
        Text section, for ``term_counts``.
    kde_maps : (path, path), optional
        ``kde_4mm/maps.parquet`` and ``kde_4mm/mask.nii.gz`` (:mod:`mnm.kde_maps`): when given,
        ``brain`` holds these voxel maps instead of the coefficients (Text2Brain) and the ids
        are also intersected with theirs; ``n_active`` still comes from ``brain_path``.
    term_counts : path, optional
        ``text/term_counts/{section}.npz`` (:mod:`mnm.text.term_counts`): the counted
        section texts (TF-IDF), read instead of the texts; the ids are also intersected with its.
    """
    from mnm.text.sections import article_columns

    text_ids, text = read_matrix(text_path, "embedding")
    brain_ids, brain, n_active, brain_path, brain_mask = _brain_input(brain_path, kde_maps)
    fold_columns = _fold_columns(read_parquet(folds_path), folds_path)
    tables = {"text": text_ids.astype(str), "brain": brain_ids.astype(str),
              "folds": fold_columns.index.to_numpy()}
    for name, path in (("text", text_path), ("brain", brain_path)):
        _check_unique(tables[name], path)
    counted = None
    if articles_path is not None:
        # Only the columns used: at 20,000 articles the bodies make the table 328 MB.
        count_here = section is not None and term_counts is None
        articles = read_parquet(articles_path, article_columns(section if count_here else None))
        tables["articles"] = articles["article_id"].astype(str).to_numpy()
        if count_here:
            from mnm.text.term_counts import count_section  # TF-IDF only: no scipy.sparse for the others

            counted = count_section(articles, section)
    if term_counts is not None:
        from mnm.text.term_counts import read_term_counts

        counted = read_term_counts(term_counts)
        tables["term counts"] = counted.ids
        _check_unique(counted.ids, term_counts)
    union = set().union(*map(set, tables.values()))
    common = sorted(set.intersection(*map(set, tables.values())))
    if not common:
        raise ValueError(f"no article is present in all inputs ({text_path}, {brain_path}, {folds_path})")
    missing = {name: len(union) - len(set(ids)) for name, ids in tables.items()}
    for name, count in missing.items():
        if count:
            log.info("%d of %d articles missing from the %s input (dropped)", count, len(union), name)
    if not np.all(np.isfinite(text)):
        raise ValueError(f"{text_path}: non-finite values in embeddings")
    if not np.all(np.isfinite(brain)):
        raise ValueError(f"{brain_path}: non-finite values in coefficients")

    def rows(ids) -> np.ndarray:
        return pd.Index(ids).get_indexer(common)

    def take(matrix, index) -> np.ndarray:
        # Already in order (the usual case): no copy, which for 20,000 voxel maps is 2.35 GB.
        return matrix if np.array_equal(index, np.arange(len(matrix))) else matrix[index]

    brain_rows = rows(tables["brain"])
    aligned_folds = fold_columns.loc[common]
    return FoldInputs(
        ids=np.asarray(common, dtype=object),
        text=take(text, rows(tables["text"])),
        brain=take(brain, brain_rows),
        n_active=n_active[brain_rows].astype(np.float32),
        folds={int(r): aligned_folds[r].to_numpy().astype(np.int64) for r in aligned_folds.columns},
        term_counts=None if counted is None else counted.take(rows(counted.ids)),
        missing=missing,
        brain_mask=brain_mask,
    )


def split_fold(ids, folds, fold, validation_fraction: float, seed: int) -> Split:
    """Indices of the fit, validation and test articles of one fold of one repeat.

    Parameters
    ----------
    ids : array of str
        Article ids (aligned with ``folds``).
    folds : array of int
        Fold of each article in this repeat.
    fold : int or "all"
        The held-out fold; ``"all"`` trains on everything and "tests" on everything.
    validation_fraction : float
        Share of the training articles used as inner validation set.
    seed : int
        Seed of the validation split.
    """
    ids = np.asarray(ids, dtype=object).astype(str)
    folds = np.asarray(folds)
    if str(fold) == "all":
        train_mask = np.ones(len(ids), dtype=bool)
        test_mask = train_mask
    else:
        fold = int(fold)
        if fold not in set(folds.tolist()):
            raise ValueError(f"fold {fold} has no article (folds present: {sorted(set(folds.tolist()))})")
        test_mask = folds == fold
        train_mask = ~test_mask
    fit_ids, val_ids = validation_split(ids[train_mask], validation_fraction, seed)
    index = pd.Index(ids)
    return Split(index.get_indexer(fit_ids), index.get_indexer(val_ids), np.flatnonzero(test_mask))
