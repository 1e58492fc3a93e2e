"""Hierarchy analysis: time component of brain embeddings vs number of active components.

MNM's claim (paper Fig. 3): with the hierarchy loss, brain maps with many active components
(broad, generic maps) lie nearer the origin of the hyperboloid, i.e. have a smaller time
component ``x0 = sqrt(1/c + |x|^2)``; Kendall's tau between x0 and n_active is negative
(-0.58 with L_hier, -0.30 without). Here it is computed on held-out test embeddings.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch

from mnm import lorentz, metrics
from mnm.io import read_parquet, write_parquet
from mnm.report.retrieval import parse_fold_path

__all__ = [
    "time_components",
    "hierarchy_points",
    "hierarchy_table",
    "poincare_disk_coordinates",
    "write_hierarchy_report",
]

log = logging.getLogger(__name__)


def time_components(space, curvature: float) -> np.ndarray:
    """Time components ``x0`` of Lorentz points given by their space components (float64)."""
    space = torch.as_tensor(np.asarray(space, dtype=np.float64))
    return lorentz.time_component(space, float(curvature)).numpy()


def _curvature(meta: dict, path) -> float | None:
    """Curvature of a hyperbolic model's test embeddings; None for Euclidean models."""
    if meta.get("kind") != "angle":
        return None
    if meta.get("curvature") is None:
        raise ValueError(f"{path}: angle-scored (hyperbolic) embeddings without a curvature")
    return float(meta["curvature"])


def hierarchy_points(test_embedding_paths, coefficients) -> pd.DataFrame:
    """Per held-out article of every hyperbolic model: its brain x0 and its n_active.

    Parameters
    ----------
    test_embedding_paths : list of path-like
        Per-fold ``test_embeddings.parquet``; files without a curvature (Euclidean models)
        and ``fold-all`` are skipped.
    coefficients : path-like
        ``coefficients.parquet`` (article_id, ..., n_active).

    Returns
    -------
    pandas.DataFrame
        model, section, fold, article_id, x0, n_active.
    """
    from mnm.train import read_test_embeddings

    active = read_parquet(coefficients, columns=["article_id", "n_active"])
    active["article_id"] = active["article_id"].astype(str)
    active = active.set_index("article_id")["n_active"]
    frames = []
    for path in test_embedding_paths:
        keys = parse_fold_path(path)
        if not keys["fold"].isdigit():
            continue
        ids, _, brain, meta = read_test_embeddings(path)
        curvature = _curvature(meta, path)
        if curvature is None:
            continue
        ids = ids.astype(str)
        missing = ~pd.Index(ids).isin(active.index)
        if missing.any():
            raise ValueError(
                f"{path}: {missing.sum()} articles absent from {coefficients}, e.g. {ids[missing][0]}"
            )
        frames.append(pd.DataFrame({
            "model": keys["model"], "section": keys["section"], "fold": int(keys["fold"]),
            "article_id": ids, "x0": time_components(brain, curvature),
            "n_active": active.loc[ids].to_numpy(),
        }))
    if not frames:
        return pd.DataFrame(columns=["model", "section", "fold", "article_id", "x0", "n_active"])
    return pd.concat(frames, ignore_index=True)


def hierarchy_table(points: pd.DataFrame) -> pd.DataFrame:
    """Kendall's tau(x0, n_active) per model and section: per fold, their mean, and pooled.

    Returns
    -------
    pandas.DataFrame
        model, section, fold (a fold number as text, ``mean`` over folds or ``pooled`` over all
        test articles), tau, p_value (``mean`` rows: the std of tau over folds in ``tau_std``), n.
    """
    rows = []
    for (model, section), group in points.groupby(["model", "section"], sort=False):
        per_fold = []
        for fold, part in group.groupby("fold"):
            tau, p_value = metrics.kendall_tau(part["x0"], part["n_active"])
            per_fold.append(tau)
            rows.append((model, section, str(fold), tau, p_value, np.nan, len(part)))
        taus = np.asarray(per_fold)
        rows.append((model, section, "mean", float(np.nanmean(taus)), np.nan,
                     float(np.nanstd(taus, ddof=1)) if len(taus) > 1 else np.nan, len(group)))
        tau, p_value = metrics.kendall_tau(group["x0"], group["n_active"])
        rows.append((model, section, "pooled", tau, p_value, np.nan, len(group)))
    return pd.DataFrame(rows, columns=["model", "section", "fold", "tau", "p_value", "tau_std", "n"])


def poincare_disk_coordinates(space, curvature: float, seed: int = 0) -> np.ndarray:
    """2D Poincare-disk coordinates that keep each point's exact distance to the origin.

    The points are mapped to the tangent space at the origin (``log_map0``); the 2D
    *directions* are the first two principal axes of those tangent vectors (PCA, which
    preserves the angular layout best in the least-squares sense), while each point keeps the
    *length* of its own tangent vector, i.e. its exact geodesic distance to the origin, the
    quantity the hierarchy is about. The 2D tangent vectors are mapped back with ``exp_map0``
    and to the Poincare ball, rescaled by ``sqrt(c)`` to the unit disk.
    """
    from sklearn.decomposition import PCA

    space = torch.as_tensor(np.asarray(space, dtype=np.float64))
    tangent = lorentz.log_map0(space, float(curvature)).numpy()
    lengths = np.linalg.norm(tangent, axis=1, keepdims=True)
    n_components = min(2, *tangent.shape)
    planar = PCA(n_components=n_components, random_state=seed).fit_transform(tangent)
    if planar.shape[1] < 2:
        planar = np.pad(planar, ((0, 0), (0, 2 - planar.shape[1])))
    planar_norm = np.linalg.norm(planar, axis=1, keepdims=True)
    direction = np.divide(planar, planar_norm, out=np.zeros_like(planar), where=planar_norm > 0)
    point = lorentz.exp_map0(torch.as_tensor(direction * lengths), float(curvature))
    return (np.sqrt(curvature) * lorentz.to_poincare(point, float(curvature))).numpy()


def write_hierarchy_report(
    test_embedding_paths, coefficients, out_parquet, out_figure, out_points=None
) -> pd.DataFrame:
    """Compute ``hierarchy.parquet`` and the x0-vs-n_active 2D-histogram figure."""
    from mnm.report import figures

    points = hierarchy_points(test_embedding_paths, coefficients)
    table = hierarchy_table(points)
    write_parquet(table, out_parquet)
    if out_points is not None:
        write_parquet(points, out_points)
    figures.hierarchy_histograms(points, table, out_figure)
    log.info("hierarchy: %d model x section groups, %d test points", len(table), len(points))
    return table
