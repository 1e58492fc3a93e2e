"""MNM's hierarchy/retrieval trade-off: the sweep over lambda_hier and the radius head.

Each sweep point (radius head, lambda_hier) is MNM trained on every fold of repeat 0
(rule ``train_tradeoff``). Per point and fold this module reads

* the *test* embeddings: Recall@10 (mean of both directions), Kendall tau between brain radius
  and active parcels, the brain radius CV and the share of queries whose angle top-10 differs
  from cosine: the trade-off curve, for the figure;
* the *inner-validation* embeddings: the selection metric and tau on validation articles only.

The selection rule (config ``models.tradeoff``) never sees a test fold: among free-radius
points whose mean inner-validation tau is at most ``max_tau``, take the one with the best mean
inner-validation ``metric`` (ties: the smaller lambda); per fold the same rule on that fold's
own inner validation is reported too, to show how stable the choice is.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from mnm import metrics
from mnm.io import atomic_path, write_parquet

__all__ = ["TRADEOFF_PATH_PATTERN", "tradeoff_points", "select_point", "tradeoff_markdown",
           "write_tradeoff_report"]

log = logging.getLogger(__name__)

TRADEOFF_PATH_PATTERN = re.compile(
    r"tradeoff/[^/]+/(?P<section>[^/]+)/[^/]+/(?P<head>[^/]+)/lambda-(?P<lam>[^/]+)/fold-(?P<fold>\d+)/[^/]+$")


def _point_metrics(path, metric: str) -> dict:
    """Retrieval, hierarchy and geometry figures of one embeddings file."""
    from mnm.report.hierarchy import top_k_differs
    from mnm.scoring import radii, read_embeddings, score_matrix
    from mnm.training.loop import validation_metrics

    _, text, brain, meta = read_embeddings(path)
    scores = score_matrix("angle", text, brain, meta["curvature"], meta["angle_apex"])
    brain_radius = radii(brain, meta["curvature"])
    return {
        "recall_at_10": 0.5 * (metrics.recall_at_k(scores, 10) + metrics.recall_at_k(scores.T, 10)),
        "selection_metric": validation_metrics(scores)[metric],
        "tau": metrics.kendall_tau(brain_radius, meta["n_active"])[0],
        "brain_radius_cv": float(brain_radius.std(ddof=1) / brain_radius.mean()),
        "top10_differs": float(top_k_differs(scores, text, brain, 10).mean()),
    }


def tradeoff_points(test_paths, validation_paths, metric: str = "val_mean_recall") -> pd.DataFrame:
    """One row per (head, lambda, fold): test and inner-validation figures.

    Columns: head, lambda_hier, fold, test_recall_at_10, test_tau, test_brain_radius_cv,
    test_top10_differs, val_<metric>, val_tau.
    """
    rows = []
    for test_path, val_path in zip(test_paths, validation_paths):
        keys = TRADEOFF_PATH_PATTERN.search(Path(test_path).as_posix())
        if keys is None or keys.groupdict() != TRADEOFF_PATH_PATTERN.search(Path(val_path).as_posix()).groupdict():
            raise ValueError(f"{test_path} and {val_path} are not the same trade-off point and fold")
        test, val = _point_metrics(test_path, metric), _point_metrics(val_path, metric)
        rows.append({
            "head": keys["head"], "lambda_hier": float(keys["lam"]), "fold": int(keys["fold"]),
            "test_recall_at_10": test["recall_at_10"], "test_tau": test["tau"],
            "test_brain_radius_cv": test["brain_radius_cv"], "test_top10_differs": test["top10_differs"],
            f"val_{metric.removeprefix('val_')}": val["selection_metric"], "val_tau": val["tau"],
        })
    return pd.DataFrame(rows)


def select_point(points: pd.DataFrame, max_tau: float, metric: str, head: str = "free") -> dict | None:
    """The selection rule on inner-validation columns only (see the module docstring).

    Returns ``{"lambda_hier", "val_metric", "val_tau"}`` or None when no point qualifies.
    """
    column = f"val_{metric.removeprefix('val_')}"
    means = (points[points["head"] == head].groupby("lambda_hier")[[column, "val_tau"]].mean()
             .reset_index().sort_values("lambda_hier"))
    qualifying = means[means["val_tau"] <= max_tau]
    if qualifying.empty:
        return None
    best = qualifying.loc[qualifying[column].idxmax()]
    return {"lambda_hier": float(best["lambda_hier"]), "val_metric": float(best[column]),
            "val_tau": float(best["val_tau"])}


def _selection_table(points: pd.DataFrame, max_tau: float, metric: str) -> pd.DataFrame:
    rows = []
    for fold, part in [("all folds (mean)", points), *points.groupby("fold")]:
        choice = select_point(part, max_tau, metric)
        rows.append({"fold": str(fold), **(choice or {"lambda_hier": np.nan, "val_metric": np.nan,
                                                      "val_tau": np.nan})})
    return pd.DataFrame(rows)


def tradeoff_markdown(summary: pd.DataFrame, selection: pd.DataFrame, baseline: dict, configured: float,
                      max_tau: float, metric: str) -> str:
    """Markdown table of the sweep (mean ± std over folds) and the selection rule's choice."""
    lines = [
        "# Hierarchy/retrieval trade-off (MNM sweep, repeat 0)", "",
        "Test Recall@10 (mean of both directions) and Kendall tau between brain radius and active "
        "parcels, mean ± std over folds; CV: brain radius coefficient of variation; differs: share "
        "of text queries whose angle top-10 differs from cosine top-10.", "",
        f"NeuroConText on the same folds: Recall@10 {100 * baseline['mean']:.1f} ± "
        f"{100 * baseline['std']:.1f} %." if baseline else "NeuroConText was not trained.", "",
        "| head | lambda_hier | R@10 (%) | tau | brain radius CV | top-10 differs | val tau |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in summary.itertuples():
        lines.append(f"| {row.head} | {row.lambda_hier:g} | {100 * row.recall_mean:.1f} ± {100 * row.recall_std:.1f} "
                     f"| {row.tau_mean:.2f} ± {row.tau_std:.2f} | {row.cv_mean:.3f} | {row.differs_mean:.2f} "
                     f"| {row.val_tau_mean:.2f} |")
    overall = selection.iloc[0]
    rule = (f"Selection rule (inner validation only): free radius head, mean validation tau <= {max_tau:g}, "
            f"best mean {metric}.")
    chosen = ("no point qualifies" if np.isnan(overall["lambda_hier"])
              else f"lambda_hier = {overall['lambda_hier']:g} (validation tau {overall['val_tau']:.2f})")
    per_fold = ", ".join(f"fold {r.fold}: {r.lambda_hier:g}" for r in selection.iloc[1:].itertuples())
    lines += ["", rule, f"The rule picks {chosen}; per fold: {per_fold}.",
              f"This run's models.mnm.lambda_hier is {configured:g}"
              + ("." if np.isnan(overall["lambda_hier"]) or np.isclose(configured, overall["lambda_hier"])
                 else f": the rule would pick {overall['lambda_hier']:g} on this corpus.")]
    return "\n".join(lines) + "\n"


def _summary(points: pd.DataFrame) -> pd.DataFrame:
    return points.groupby(["head", "lambda_hier"]).agg(
        recall_mean=("test_recall_at_10", "mean"), recall_std=("test_recall_at_10", "std"),
        tau_mean=("test_tau", "mean"), tau_std=("test_tau", "std"),
        cv_mean=("test_brain_radius_cv", "mean"), differs_mean=("test_top10_differs", "mean"),
        val_tau_mean=("val_tau", "mean"),
    ).reset_index()


def _baseline_recall(metric_paths, section: str) -> dict:
    """NeuroConText's test Recall@10 (mean of both directions) on repeat 0 of the sweep section."""
    from mnm.report.retrieval import collect_fold_metrics

    if not metric_paths:
        return {}
    frame = collect_fold_metrics(metric_paths)
    frame = frame[(frame["metric"] == "recall") & (frame["k"] == 10) & (frame["repeat"] == 0)
                  & (frame["section"] == section)]
    per_fold = frame.groupby("fold")["value"].mean()
    return {"mean": float(per_fold.mean()), "std": float(per_fold.std(ddof=1))} if len(per_fold) else {}


def write_tradeoff_report(test_paths, validation_paths, baseline_metric_paths, out_points, out_selection,
                          out_markdown, out_figure, section: str, configured_lambda: float,
                          max_tau: float = -0.5, metric: str = "val_mean_recall") -> pd.DataFrame:
    """Write the sweep table, the selection, the Markdown summary and the trade-off figure."""
    from mnm.report import figures

    points = tradeoff_points(test_paths, validation_paths, metric)
    selection = _selection_table(points, max_tau, metric)
    summary = _summary(points)
    baseline = _baseline_recall(baseline_metric_paths, section)
    write_parquet(points, out_points)
    write_parquet(selection, out_selection)
    with atomic_path(out_markdown) as tmp:
        tmp.write_text(tradeoff_markdown(summary, selection, baseline, configured_lambda, max_tau, metric))
    figures.tradeoff_curve(summary, baseline, out_figure)
    log.info("trade-off: %d points x folds; rule picks %s", len(points), selection.iloc[0]["lambda_hier"])
    return points
