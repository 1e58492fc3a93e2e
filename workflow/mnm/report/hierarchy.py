"""Hierarchy and geometry of the hyperbolic models, from their held-out test embeddings.

MNM's claim: the distance to the origin carries specificity. Broad brain maps (many active
atlas components) lie near the origin, specific ones far out. Measured here per hyperbolic
model, section and (repeat, fold):

* Kendall's tau between the brain embedding's *radius* (geodesic distance to the origin,
  ``asinh(sqrt(c)|x|) / sqrt(c)``) and its number of active components (MNM paper: -0.58 with
  L_hier, -0.30 without). The time component ``x0`` is a monotone function of the radius, so
  it gives the same tau;
* the radius distribution per modality (mean, standard deviation, coefficient of variation):
  a pinned radius head gives CV ~ 0 and then the hierarchy cannot live in the radius;
* the share of text queries whose top-10 brain maps under the model's angle score differ from
  the top-10 under plain cosine similarity of the same embeddings: 0 means the "hyperbolic"
  score ranks exactly like a Euclidean CLIP.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from mnm import metrics
from mnm.io import write_parquet
from mnm.report.retrieval import parse_fold_path

__all__ = [
    "top_k_differs",
    "hierarchy_points",
    "hierarchy_table",
    "geometry_table",
    "poincare_disk_coordinates",
    "write_hierarchy_report",
]

log = logging.getLogger(__name__)
#: One hierarchy analysis per hyperbolic model, section and atlas.
GROUP = ["model", "section", "atlas"]


def top_k_differs(scores: np.ndarray, text, brain, k: int = 10) -> np.ndarray:
    """Per text query: does the top-``k`` set of brain candidates under ``scores`` differ from
    the top-``k`` under the cosine similarity of the embeddings (the same embeddings, no
    hyperbolic geometry)?"""
    text = np.asarray(text, dtype=np.float64)
    brain = np.asarray(brain, dtype=np.float64)
    cosine = (text / np.linalg.norm(text, axis=1, keepdims=True)) @ (
        brain / np.linalg.norm(brain, axis=1, keepdims=True)).T
    k = min(k, scores.shape[1])
    top_scores = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top_cosine = np.argsort(-cosine, axis=1, kind="stable")[:, :k]
    return np.array([set(a) != set(b) for a, b in zip(top_scores, top_cosine)])


def hierarchy_points(test_embedding_paths) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per held-out article of every hyperbolic model: radii, x0 and n_active; per test set:
    the share of queries whose angle top-10 differs from cosine.

    Parameters
    ----------
    test_embedding_paths : list of path-like
        Per-(repeat, fold) ``test_embeddings.parquet`` (with each article's ``n_active`` on
        the model's atlas); Euclidean models and fold-all skipped.

    Returns
    -------
    points : pandas.DataFrame
        model, section, atlas, repeat, fold, article_id, brain_radius, text_radius, x0, n_active.
    differs : pandas.DataFrame
        model, section, atlas, repeat, fold, top10_differs (share of text queries).
    """
    from mnm.lorentz import time_component
    from mnm.scoring import radii, read_embeddings, score_matrix
    import torch

    frames, differs = [], []
    for path in test_embedding_paths:
        keys = parse_fold_path(path)
        if not keys["fold"].isdigit():
            continue
        ids, text, brain, meta = read_embeddings(path)
        if meta.get("kind") != "angle":
            continue
        if meta.get("curvature") is None:
            raise ValueError(f"{path}: angle-scored (hyperbolic) embeddings without a curvature")
        c = float(meta["curvature"])
        ids = ids.astype(str)
        where = {"model": keys["model"], "section": keys["section"], "atlas": keys["atlas"],
                 "repeat": int(keys["repeat"] or 0), "fold": int(keys["fold"])}
        frames.append(pd.DataFrame({
            **where, "article_id": ids, "brain_radius": radii(brain, c), "text_radius": radii(text, c),
            "x0": time_component(torch.as_tensor(np.array(brain, dtype=np.float64)), c).numpy(),
            "n_active": meta["n_active"],
        }))
        scores = score_matrix("angle", text, brain, c, meta["angle_apex"])
        differs.append({**where, "top10_differs": float(top_k_differs(scores, text, brain, 10).mean())})
    points_columns = [*GROUP, "repeat", "fold", "article_id", "brain_radius", "text_radius", "x0", "n_active"]
    points = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=points_columns)
    differs_frame = pd.DataFrame(differs, columns=[*GROUP, "repeat", "fold", "top10_differs"])
    return points, differs_frame


def hierarchy_table(points: pd.DataFrame) -> pd.DataFrame:
    """Kendall's tau(brain radius, n_active) per model and section: per test set, mean, pooled.

    Returns
    -------
    pandas.DataFrame
        model, section, atlas, fold (``r<repeat>f<fold>`` per test set, ``mean`` over test
        sets with the std in ``tau_std``, or ``pooled`` over all test articles), tau, p_value,
        tau_std, n.
    """
    rows = []
    for key, group in points.groupby(GROUP, sort=False):
        taus = []
        for (repeat, fold), part in group.groupby(["repeat", "fold"]):
            tau, p_value = metrics.kendall_tau(part["brain_radius"], part["n_active"])
            taus.append(tau)
            rows.append((*key, f"r{repeat}f{fold}", tau, p_value, np.nan, len(part)))
        taus = np.asarray(taus)
        rows.append((*key, "mean", float(np.nanmean(taus)), np.nan,
                     float(np.nanstd(taus, ddof=1)) if len(taus) > 1 else np.nan, len(group)))
        tau, p_value = metrics.kendall_tau(group["brain_radius"], group["n_active"])
        rows.append((*key, "pooled", tau, p_value, np.nan, len(group)))
    return pd.DataFrame(rows, columns=[*GROUP, "fold", "tau", "p_value", "tau_std", "n"])


def geometry_table(points: pd.DataFrame, differs: pd.DataFrame) -> pd.DataFrame:
    """Radius distribution per model, section, atlas and modality, and the angle-vs-cosine share.

    Returns
    -------
    pandas.DataFrame
        model, section, atlas, modality (brain/text), radius_mean, radius_std, radius_cv,
        top10_differs (mean share over test sets; the same on both modality rows), n.
    """
    rows = []
    shares = differs.groupby(GROUP)["top10_differs"].mean()
    for key, group in points.groupby(GROUP, sort=False):
        for modality in ("brain", "text"):
            radius = group[f"{modality}_radius"].to_numpy(dtype=np.float64)
            mean, std = float(radius.mean()), float(radius.std(ddof=1)) if len(radius) > 1 else np.nan
            rows.append((*key, modality, mean, std, std / mean if mean > 0 else np.nan,
                         float(shares.loc[key]), len(radius)))
    return pd.DataFrame(rows, columns=[*GROUP, "modality", "radius_mean", "radius_std", "radius_cv",
                                       "top10_differs", "n"])


def poincare_disk_coordinates(space, curvature: float, seed: int = 0) -> np.ndarray:
    """2D Poincare-disk coordinates that keep each point's exact distance to the origin.

    The points are mapped to the tangent space at the origin (``log_map0``); the 2D
    *directions* are the first two principal axes of those tangent vectors (PCA, which keeps
    the angular layout best in the least-squares sense), while each point keeps the *length* of
    its own tangent vector, i.e. its exact geodesic distance to the origin, the quantity the
    hierarchy is about. The 2D tangent vectors are mapped back with ``exp_map0`` and to the
    Poincare ball ``x / (1 + sqrt(c) x0)``, rescaled by ``sqrt(c)`` to the unit disk.
    """
    import torch
    from sklearn.decomposition import PCA

    from mnm import lorentz

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


def write_hierarchy_report(test_embedding_paths, out_table, out_geometry, out_points, out_figure,
                           out_radii_figure) -> pd.DataFrame:
    """``hierarchy.parquet``, ``geometry.parquet``, the points and two figures."""
    from mnm.report import figures

    points, differs = hierarchy_points(test_embedding_paths)
    table = hierarchy_table(points)
    geometry = geometry_table(points, differs)
    write_parquet(table, out_table)
    write_parquet(geometry, out_geometry)
    write_parquet(points, out_points)
    figures.hierarchy_histograms(points, table, out_figure)
    figures.radius_histograms(points, geometry, out_radii_figure)
    log.info("hierarchy: %d model x section groups, %d test points", len(geometry) // 2, len(points))
    return table
