"""Subject-level cross-validation folds stratified by diagnosis and site (scikit-learn).

Every subject is in exactly one test fold. Strata are ``diagnosis x site``; a stratum with
fewer subjects than folds cannot be spread over every fold, so its subjects are pooled
with the other small strata of the same diagnosis (logged), which keeps the diagnosis
balance exact and the site balance as good as the counts allow.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

__all__ = ["stratified_folds", "validation_split"]

logger = logging.getLogger(__name__)


def _strata(subjects: pd.DataFrame, n_folds: int) -> np.ndarray:
    strata = subjects["diagnosis"].astype(str) + "|" + subjects["site"].astype(str)
    counts = strata.map(strata.value_counts())
    small = counts < n_folds
    if small.any():
        logger.info("%d subject(s) in diagnosis x site strata smaller than %d folds pooled by diagnosis",
                    int(small.sum()), n_folds)
        strata = strata.where(~small, subjects["diagnosis"].astype(str) + "|small-sites")
    return strata.to_numpy()


def stratified_folds(subjects: pd.DataFrame, n_folds: int, seed: int = 0) -> pd.DataFrame:
    """Assign each subject to a test fold.

    Parameters
    ----------
    subjects : pandas.DataFrame
        ``subject_id`` (unique), ``diagnosis``, ``site``.
    n_folds : int
    seed : int

    Returns
    -------
    pandas.DataFrame
        ``subject_id``, ``fold`` (0..n_folds-1), sorted by ``subject_id``; the assignment
        depends only on the set of subjects, not on their row order.
    """
    from sklearn.model_selection import StratifiedKFold

    if subjects["subject_id"].duplicated().any():
        dup = subjects.loc[subjects["subject_id"].duplicated(), "subject_id"].head(5).tolist()
        raise ValueError(f"duplicated subject ids {dup}: folds must be subject-level")
    table = subjects.sort_values("subject_id").reset_index(drop=True)
    counts = table["diagnosis"].value_counts()
    if len(counts) < 2 or counts.min() < n_folds:
        raise ValueError(f"neurolip.n_folds={n_folds}: each diagnosis needs at least that many subjects "
                         f"(counts {counts.to_dict()})")
    folds = np.empty(len(table), dtype=np.int64)
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for fold, (_, test) in enumerate(splitter.split(table, _strata(table, n_folds))):
        folds[test] = fold
    return pd.DataFrame({"subject_id": table["subject_id"].to_numpy(), "fold": folds})


def validation_split(subject_ids, diagnosis, fraction: float, seed: int = 0):
    """Stratified (by diagnosis) split of training subjects into fit and validation ids."""
    from sklearn.model_selection import train_test_split

    if not 0.0 < fraction < 1.0:
        raise ValueError(f"neurolip.validation_fraction={fraction} must be in (0, 1)")
    fit, validation = train_test_split(np.asarray(subject_ids), test_size=fraction, random_state=seed,
                                       stratify=np.asarray(diagnosis))
    return np.sort(fit), np.sort(validation)
