"""Per-fold retrieval metrics and the aggregate table shaped like MNM's Table 1."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from mnm import metrics
from mnm.io import atomic_path, write_parquet

__all__ = [
    "FOLD_PATH_PATTERN",
    "parse_fold_path",
    "score_test_embeddings",
    "fold_metrics",
    "collect_fold_metrics",
    "summarise_folds",
    "paired_comparison",
    "table1_markdown",
    "write_retrieval_report",
]

log = logging.getLogger(__name__)

#: Where per-fold files live: models/{model}/{encoder}/{section}/{atlas}/fold-{fold}/<file>.
FOLD_PATH_PATTERN = re.compile(
    r"models/(?P<model>[^/]+)/(?P<encoder>[^/]+)/(?P<section>[^/]+)/(?P<atlas>[^/]+)"
    r"/fold-(?P<fold>[^/]+)/[^/]+$"
)

#: Metrics shown in Table 1 (ranks go to the Parquet only).
TABLE_METRICS = ("recall", "mix_and_match")


def parse_fold_path(path) -> dict:
    """Model, encoder, section, atlas and fold named by a per-fold file path.

    Raises
    ------
    ValueError
        When the path does not follow ``models/{model}/{encoder}/{section}/{atlas}/fold-{fold}/``.
    """
    match = FOLD_PATH_PATTERN.search(Path(path).as_posix())
    if match is None:
        raise ValueError(
            f"{path}: not a per-fold path models/<model>/<encoder>/<section>/<atlas>/fold-<fold>/"
        )
    return match.groupdict()


def score_test_embeddings(path) -> np.ndarray:
    """Text x brain score matrix of a fold's test set, scored as the trainer scores it.

    Uses :func:`mnm.train.score_matrix` with the file's ``score_kind`` (angle, cosine or
    correlation) and its remaining metadata (``curvature``, ``angle_apex``).
    """
    from mnm.train import read_test_embeddings, score_matrix

    _, text, brain, meta = read_test_embeddings(path)
    kind = meta.pop("kind", None)
    if kind is None:
        raise ValueError(f"{path}: empty test set or no score_kind column")
    return np.asarray(score_matrix(kind, text, brain, **meta), dtype=np.float64)


def fold_metrics(test_embeddings, output, ks) -> pd.DataFrame:
    """Compute and write ``metrics.parquet`` of one fold (see :func:`mnm.metrics.retrieval_metrics`).

    Parameters
    ----------
    test_embeddings : path-like
        The fold's ``test_embeddings.parquet``.
    output : path-like
        Destination ``metrics.parquet`` (metric, direction, k, value, chance, n_candidates).
    ks : list of int
        Recall@K cut-offs (config ``evaluation.recall_k``).
    """
    scores = score_test_embeddings(test_embeddings)
    frame = metrics.retrieval_metrics(scores, ks)
    write_parquet(frame, output)
    log.info("%s: %d test articles, R@1 t->b %.3f", test_embeddings, len(scores),
             frame.query("metric == 'recall'")["value"].iloc[0] if len(frame) else np.nan)
    return frame


def collect_fold_metrics(paths) -> pd.DataFrame:
    """Stack per-fold ``metrics.parquet`` files, adding model/encoder/section/atlas/fold columns.

    Only numbered folds are kept (``fold-all`` is a model trained on every article).
    """
    frames = []
    for path in paths:
        keys = parse_fold_path(path)
        if not keys["fold"].isdigit():
            continue
        frame = pd.read_parquet(path)
        for key, value in keys.items():
            frame[key] = int(value) if key == "fold" else value
        frames.append(frame)
    if not frames:
        raise ValueError("no per-fold metrics files given")
    return pd.concat(frames, ignore_index=True)


def summarise_folds(per_fold: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample standard deviation (ddof=1) over folds.

    Returns one row per model x section x direction x metric x k with ``mean``, ``std``,
    ``n_folds`` and ``chance`` (mean over folds; folds may differ slightly in size).
    """
    keys = ["section", "model", "direction", "metric", "k"]
    grouped = per_fold.groupby(keys, sort=False)
    summary = grouped["value"].agg(mean="mean", std=lambda v: v.std(ddof=1), n_folds="count")
    summary["chance"] = grouped["chance"].mean()
    return summary.reset_index()


def paired_comparison(
    per_fold: pd.DataFrame, model: str = "mnm", baseline: str = "neurocontext"
) -> pd.DataFrame:
    """Per-fold differences ``model - baseline`` and a two-sided Wilcoxon signed-rank test.

    With n folds and no ties the smallest attainable exact two-sided p-value is ``2 / 2**n``
    (0.0625 for 5 folds), reported as ``min_p`` so that a "non-significant" result is read in
    that light.
    """
    rows = []
    table = per_fold[per_fold["metric"].isin(TABLE_METRICS)]
    for (section, direction, metric, k), group in table.groupby(
        ["section", "direction", "metric", "k"], sort=False
    ):
        a = group[group["model"] == model].set_index("fold")["value"]
        b = group[group["model"] == baseline].set_index("fold")["value"]
        folds = a.index.intersection(b.index)
        if len(folds) == 0:
            continue
        diff = (a.loc[folds] - b.loc[folds]).to_numpy()
        p_value = np.nan
        if len(diff) >= 2 and np.any(diff != 0):
            p_value = float(_scipy_stats().wilcoxon(diff).pvalue)
        rows.append({
            "section": section, "direction": direction, "metric": metric, "k": int(k),
            "model": model, "baseline": baseline, "n_folds": len(diff),
            "mean_difference": float(diff.mean()),
            "std_difference": float(diff.std(ddof=1)) if len(diff) > 1 else np.nan,
            "wilcoxon_p": p_value, "min_p": 2.0 / 2 ** len(diff),
        })
    columns = ["section", "direction", "metric", "k", "model", "baseline", "n_folds",
               "mean_difference", "std_difference", "wilcoxon_p", "min_p"]
    return pd.DataFrame(rows, columns=columns)


def _column_name(section: str, direction: str, metric: str, k: int) -> str:
    arrow = "text→brain" if direction == "text_to_brain" else "brain→text"
    label = f"R@{k}" if metric == "recall" else "Mix&Match"
    return f"{section} {arrow} {label}"


def _ordered_columns(summary: pd.DataFrame) -> list[tuple]:
    sections = list(dict.fromkeys(summary["section"]))
    columns = []
    for section in sections:
        for direction in metrics.DIRECTIONS:
            part = summary[(summary["section"] == section) & (summary["direction"] == direction)]
            for k in sorted(part.loc[part["metric"] == "recall", "k"].unique()):
                columns.append((section, direction, "recall", int(k)))
            if (part["metric"] == "mix_and_match").any():
                columns.append((section, direction, "mix_and_match", 0))
    return columns


def table1_markdown(
    summary: pd.DataFrame, comparison: pd.DataFrame | None = None, models_order=None
) -> str:
    """Markdown Table 1: rows models, columns section x direction x (Recall@K, Mix&Match).

    Cells are ``mean ± std`` in percent over folds; the best mean per column is bold; a last
    row gives the chance level. An optional paired-comparison table follows.
    """
    summary = summary[summary["metric"].isin(TABLE_METRICS)]
    columns = _ordered_columns(summary)
    models = list(models_order or dict.fromkeys(summary["model"]))
    models = [m for m in models if m in set(summary["model"])]
    indexed = summary.set_index(["model", "section", "direction", "metric", "k"])
    header = ["model"] + [_column_name(*c) for c in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    best = {}
    for column in columns:
        means = [indexed.loc[(m, *column), "mean"] for m in models if (m, *column) in indexed.index]
        best[column] = max(means) if means else None
    chance = ["chance"]
    for column in columns:
        values = summary.loc[
            (summary["section"] == column[0]) & (summary["direction"] == column[1])
            & (summary["metric"] == column[2]) & (summary["k"] == column[3]), "chance"]
        chance.append(f"{100 * values.mean():.1f}" if len(values) else "")
    for model in models:
        cells = [model]
        for column in columns:
            key = (model, *column)
            if key not in indexed.index:
                cells.append("–")
                continue
            mean, std = indexed.loc[key, "mean"], indexed.loc[key, "std"]
            std_text = "" if np.isnan(std) else f" ± {100 * std:.1f}"
            cell = f"{100 * mean:.1f}{std_text}"
            cells.append(f"**{cell}**" if np.isclose(mean, best[column]) else cell)
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("| " + " | ".join(chance) + " |")
    n_folds = int(summary["n_folds"].max()) if len(summary) else 0
    text = [
        "# Retrieval (Table 1)",
        "",
        f"Mean ± standard deviation (ddof=1) over {n_folds} test folds, in percent. "
        "Recall@K: share of queries whose true pair ranks in the top K (ties counted "
        "against the model); Mix&Match: share of other candidates scored below the true pair "
        "(chance 50). Best mean per column in bold.",
        "",
        *lines,
    ]
    if comparison is not None and len(comparison):
        first = comparison.iloc[0]
        text += [
            "",
            f"## Paired per-fold differences: {first['model']} − {first['baseline']}",
            "",
            "Two-sided Wilcoxon signed-rank test on the per-fold differences. With "
            f"{int(first['n_folds'])} folds the smallest attainable p-value is "
            f"{first['min_p']:.4f}.",
            "",
            "| section | direction | metric | mean diff (%) | std (%) | Wilcoxon p |",
            "|---|---|---|---|---|---|",
        ]
        for row in comparison.itertuples():
            label = f"R@{row.k}" if row.metric == "recall" else "Mix&Match"
            p_text = "n/a" if np.isnan(row.wilcoxon_p) else f"{row.wilcoxon_p:.4f}"
            text.append(
                f"| {row.section} | {row.direction} | {label} | {100 * row.mean_difference:+.1f} "
                f"| {100 * row.std_difference:.1f} | {p_text} |"
            )
    return "\n".join(text) + "\n"


def write_retrieval_report(
    metric_paths, out_parquet, out_markdown, out_comparison=None, models_order=None,
    model: str = "mnm", baseline: str = "neurocontext",
) -> pd.DataFrame:
    """Aggregate per-fold metrics into ``retrieval.parquet`` and ``retrieval.md``.

    ``retrieval.parquet`` holds :func:`summarise_folds`; ``out_comparison`` (optional) the
    :func:`paired_comparison` of ``model`` against ``baseline`` (when both were trained).
    """
    per_fold = collect_fold_metrics(metric_paths)
    summary = summarise_folds(per_fold)
    comparison = paired_comparison(per_fold, model, baseline)
    write_parquet(summary, out_parquet)
    if out_comparison is not None:
        write_parquet(comparison, out_comparison)
    with atomic_path(out_markdown) as tmp:
        tmp.write_text(table1_markdown(summary, comparison, models_order))
    return summary


def _scipy_stats():
    """scipy.stats, imported on first use: it costs seconds, and most callers (one job per
    fold) never need it."""
    from scipy import stats

    return stats
