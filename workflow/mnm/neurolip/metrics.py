"""Diagnosis, fairness and planted-effect recovery metrics (arrays in, numbers out).

Fairness uses fairlearn: the demographic parity difference is the largest gap between
groups in the rate of predicted patients; the equalised odds difference is the larger of
the largest between-group gaps in true-positive rate and in false-positive rate. Both are 0
for a classifier whose decisions do not depend on the group. With a confound (sex or site
predicting the diagnosis) a perfect classifier still has a demographic parity gap; the
equalised odds gap is the one that exposes a classifier leaning on the confound.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["diagnosis_metrics", "fairness_metrics", "edge_pattern", "edge_recovery_auc", "region_recovery_auc",
           "attention_share", "planted_regions"]


def diagnosis_metrics(y_true, probability, threshold: float = 0.5) -> dict:
    """Accuracy, ROC AUC and F1 (patient = positive class) at ``threshold``."""
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    y_true = np.asarray(y_true).astype(int)
    probability = np.asarray(probability, dtype=float)
    predicted = (probability >= threshold).astype(int)
    auc = roc_auc_score(y_true, probability) if len(np.unique(y_true)) == 2 else float("nan")
    return {"accuracy": float(accuracy_score(y_true, predicted)), "auc": float(auc),
            "f1": float(f1_score(y_true, predicted, zero_division=0))}


def fairness_metrics(y_true, predicted, groups: dict) -> dict:
    """``dp_<name>`` and ``eo_<name>`` for each sensitive grouping in ``groups``."""
    from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

    y_true = np.asarray(y_true).astype(int)
    predicted = np.asarray(predicted).astype(int)
    out = {}
    for name, values in groups.items():
        values = np.asarray(values).astype(str)
        out[f"dp_{name}"] = float(demographic_parity_difference(y_true, predicted, sensitive_features=values))
        out[f"eo_{name}"] = float(equalized_odds_difference(y_true, predicted, sensitive_features=values))
    return out


def edge_pattern(connectivity: np.ndarray, probability) -> np.ndarray:
    """Correlation, across subjects, of every edge with the model's diagnosis logit.

    The "activation pattern" of a decoder (Haufe et al. 2014, NeuroImage 87: 96-110): for a
    linear model it is, up to scale, ``Cov(X) w``; it shows which edges carry the signal
    the model reads out, whatever the model's inner weights. ``connectivity`` is
    ``(N, R, R)``; returns ``(R, R)`` (0 for constant edges).
    """
    p = np.clip(np.asarray(probability, dtype=float), 1e-6, 1 - 1e-6)
    logit = np.log(p / (1 - p))
    x = np.asarray(connectivity, dtype=float).reshape(len(logit), -1)
    x = x - x.mean(0)
    logit = logit - logit.mean()
    norm = np.sqrt((x**2).sum(0) * (logit**2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(norm > 0, x.T @ logit / norm, 0.0)
    n = connectivity.shape[1]
    return r.reshape(n, n)


def planted_regions(planted: pd.DataFrame, effect: str) -> np.ndarray:
    """Sorted ROI columns touched by the planted edges of ``effect``."""
    edges = planted[planted["effect"] == effect]
    return np.unique(edges[["region_a", "region_b"]].to_numpy().astype(int))


def edge_recovery_auc(edge_scores: np.ndarray, planted: pd.DataFrame, effect: str = "diagnosis") -> float:
    """ROC AUC of ``|edge_scores|`` (``R x R``, symmetric) for telling planted edges from the rest."""
    from sklearn.metrics import roc_auc_score

    n = edge_scores.shape[0]
    upper = np.triu_indices(n, k=1)
    truth = np.zeros((n, n), dtype=bool)
    edges = planted[planted["effect"] == effect][["region_a", "region_b"]].to_numpy().astype(int)
    truth[edges[:, 0], edges[:, 1]] = truth[edges[:, 1], edges[:, 0]] = True
    return float(roc_auc_score(truth[upper], np.abs(edge_scores[upper])))


def region_recovery_auc(region_scores: np.ndarray, planted: pd.DataFrame, effect: str = "diagnosis") -> float:
    """ROC AUC of ``region_scores`` (length R) for telling the planted edges' ROIs from the rest."""
    from sklearn.metrics import roc_auc_score

    truth = np.zeros(len(region_scores), dtype=bool)
    truth[planted_regions(planted, effect)] = True
    return float(roc_auc_score(truth, region_scores))


def attention_share(attention: np.ndarray, regions: np.ndarray) -> float:
    """Share of an attention vector's mass on ``regions``."""
    attention = np.asarray(attention, dtype=float)
    return float(attention[regions].sum() / attention.sum())
