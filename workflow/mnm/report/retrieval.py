"""Cross-validated retrieval: per-fold metrics with controls, Table 1, paired comparisons.

Every (model, section, repeat, fold) test set is rescored from its ``test_embeddings.parquet``
(:func:`mnm.scoring.score_matrix`), giving Recall@K, Mix&Match and ranks in both directions
(:func:`mnm.metrics.retrieval_metrics`) next to two references:

* ``chance``: the analytic value of a random ranking (Recall@K = K / n, Mix&Match 0.5);
* ``control``: the *shuffled-pairs control*, the same metrics on the model's own score matrix
  after the text-brain pairing of the test fold is permuted (mean over permutations). It checks
  that the evaluation itself (ties, ranks, matrix orientation) gives chance when the pairing is
  meaningless, with the model's actual score distribution.

Paired comparisons (model minus baseline) use the per-(repeat, fold) differences: their mean,
a 95% interval from the corrected resampled t-test of Nadeau and Bengio (2003) (the variance of
the mean is inflated by ``n_test / n_train`` because training sets of different folds overlap;
the naive t interval is too narrow for cross-validation), and the Wilcoxon signed-rank p-value
of the same differences (reported as is; it ignores that overlap and is optimistic).
"""

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
    "corrected_t_interval",
    "paired_comparison",
    "table1_markdown",
    "evaluate_retrieval",
    "COMPARISONS",
]

log = logging.getLogger(__name__)

#: Where per-fold files live: models/{model}/{encoder}/{section}/{atlas}[/repeat-{r}]/fold-{fold}/<file>.
FOLD_PATH_PATTERN = re.compile(
    r"models/(?P<model>[^/]+)/(?P<encoder>[^/]+)/(?P<section>[^/]+)/(?P<atlas>[^/]+)"
    r"(?:/repeat-(?P<repeat>\d+))?/fold-(?P<fold>[^/]+)/[^/]+$"
)
#: Metrics shown in Table 1 (ranks go to the Parquet only).
TABLE_METRICS = ("recall", "mix_and_match")
#: Paired comparisons of the report: (model, baseline), when both were trained.
COMPARISONS = (("mnm", "neurocontext"), ("mnm", "mnm_no_hier"), ("mnm", "text2brain"))
#: Permutations of the shuffled-pairs control.
N_PERMUTATIONS = 20


def parse_fold_path(path) -> dict:
    """Model, encoder, section, atlas, repeat (None for fold-all) and fold of a per-fold file.

    Raises
    ------
    ValueError
        When the path does not follow the per-fold layout.
    """
    match = FOLD_PATH_PATTERN.search(Path(path).as_posix())
    if match is None:
        raise ValueError(f"{path}: not a per-fold path "
                         "models/<model>/<encoder>/<section>/<atlas>/repeat-<r>/fold-<k>/")
    return match.groupdict()


def score_test_embeddings(path) -> np.ndarray:
    """Text x brain score matrix of a fold's test set, scored as the model scores it."""
    from mnm.scoring import read_embeddings, score_matrix

    _, text, brain, meta = read_embeddings(path)
    kind = meta.pop("kind", None)
    if kind is None:
        raise ValueError(f"{path}: empty test set or no score_kind column")
    return np.asarray(score_matrix(kind, text, brain, **meta), dtype=np.float64)


def fold_metrics(scores, ks, n_permutations: int = N_PERMUTATIONS, seed: int = 0) -> pd.DataFrame:
    """Metrics of one test fold (:func:`mnm.metrics.retrieval_metrics`) plus the control.

    ``control`` is the mean of the same metric over ``n_permutations`` random re-pairings of
    the candidates (columns of ``scores``).
    """
    scores = np.asarray(scores, dtype=np.float64)
    frame = metrics.retrieval_metrics(scores, ks)
    rng = np.random.default_rng(seed)
    permuted = [metrics.retrieval_metrics(scores, ks, pairing=rng.permutation(len(scores)))["value"].to_numpy()
                for _ in range(int(n_permutations))]
    frame["control"] = np.mean(permuted, axis=0) if permuted else np.nan
    return frame


def collect_fold_metrics(paths) -> pd.DataFrame:
    """Stack per-fold ``metrics.parquet`` files with model/encoder/section/atlas/repeat/fold."""
    frames = []
    for path in paths:
        keys = parse_fold_path(path)
        if not keys["fold"].isdigit():
            continue
        frame = pd.read_parquet(path)
        for key, value in keys.items():
            frame[key] = int(value or 0) if key in ("fold", "repeat") else value
        frames.append(frame)
    if not frames:
        raise ValueError("no per-fold metrics files given")
    return pd.concat(frames, ignore_index=True)


def summarise_folds(per_fold: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample standard deviation (ddof=1) over every (repeat, fold).

    One row per atlas x section x model x direction x metric x k with ``mean``, ``std``,
    ``n_folds`` (the number of (repeat, fold) test sets), ``chance`` and ``control`` (means).
    """
    keys = ["atlas", "section", "model", "direction", "metric", "k"]
    grouped = per_fold.groupby(keys, sort=False)
    summary = grouped["value"].agg(mean="mean", std=lambda v: v.std(ddof=1), n_folds="count")
    summary["chance"] = grouped["chance"].mean()
    summary["control"] = grouped["control"].mean()
    return summary.reset_index()


def corrected_t_interval(differences, test_over_train: float, level: float = 0.95) -> tuple[float, float, float]:
    """Nadeau-Bengio corrected resampled t-test of cross-validated differences.

    Parameters
    ----------
    differences : array
        One difference per (repeat, fold).
    test_over_train : float
        ``n_test / n_train`` of one fold (``1 / (k - 1)`` for k-fold).
    level : float
        Coverage of the interval.

    Returns
    -------
    low, high, p_value : float
        Interval ``mean -+ t_{J-1} sqrt((1/J + n_test/n_train) s^2)`` and the two-sided p of
        ``t = mean / sqrt(...)``; NaN with fewer than two differences.
    """
    from scipy import stats

    d = np.asarray(differences, dtype=np.float64)
    if len(d) < 2:
        return np.nan, np.nan, np.nan
    scale = np.sqrt((1.0 / len(d) + float(test_over_train)) * d.var(ddof=1))
    half = stats.t.ppf(0.5 + level / 2, len(d) - 1) * scale
    if scale == 0:
        return float(d.mean()), float(d.mean()), 1.0 if d.mean() == 0 else 0.0
    p_value = 2 * stats.t.sf(abs(d.mean()) / scale, len(d) - 1)
    return float(d.mean() - half), float(d.mean() + half), float(p_value)


def paired_comparison(per_fold: pd.DataFrame, model: str = "mnm", baseline: str = "neurocontext",
                      n_folds: int | None = None) -> pd.DataFrame:
    """Per-(repeat, fold) differences ``model - baseline`` with intervals and tests.

    Columns: section, direction, metric, k, model, baseline, n_pairs, mean_difference,
    std_difference, ci_low, ci_high (corrected t, 95%), t_p, wilcoxon_p.
    """
    from scipy import stats

    n_folds = n_folds or int(per_fold["fold"].nunique())
    rows = []
    table = per_fold[per_fold["metric"].isin(TABLE_METRICS)]
    for (atlas, section, direction, metric, k), group in table.groupby(
            ["atlas", "section", "direction", "metric", "k"], sort=False):
        a = group[group["model"] == model].set_index(["repeat", "fold"])["value"]
        b = group[group["model"] == baseline].set_index(["repeat", "fold"])["value"]
        pairs = a.index.intersection(b.index)
        if len(pairs) == 0:
            continue
        diff = (a.loc[pairs] - b.loc[pairs]).to_numpy()
        low, high, t_p = corrected_t_interval(diff, 1.0 / max(n_folds - 1, 1))
        wilcoxon_p = float(stats.wilcoxon(diff).pvalue) if len(diff) >= 2 and np.any(diff != 0) else np.nan
        rows.append({
            "atlas": atlas, "section": section, "direction": direction, "metric": metric, "k": int(k),
            "model": model, "baseline": baseline, "n_pairs": len(diff),
            "mean_difference": float(diff.mean()),
            "std_difference": float(diff.std(ddof=1)) if len(diff) > 1 else np.nan,
            "ci_low": low, "ci_high": high, "t_p": t_p, "wilcoxon_p": wilcoxon_p,
        })
    columns = ["atlas", "section", "direction", "metric", "k", "model", "baseline", "n_pairs",
               "mean_difference", "std_difference", "ci_low", "ci_high", "t_p", "wilcoxon_p"]
    return pd.DataFrame(rows, columns=columns)


def _column_name(section: str, direction: str, metric: str, k: int) -> str:
    arrow = "text→brain" if direction == "text_to_brain" else "brain→text"
    label = f"R@{k}" if metric == "recall" else "Mix&Match"
    return f"{section} {arrow} {label}"


def _ordered_columns(summary: pd.DataFrame) -> list[tuple]:
    columns = []
    for section in dict.fromkeys(summary["section"]):
        for direction in metrics.DIRECTIONS:
            part = summary[(summary["section"] == section) & (summary["direction"] == direction)]
            for k in sorted(part.loc[part["metric"] == "recall", "k"].unique()):
                columns.append((section, direction, "recall", int(k)))
            if (part["metric"] == "mix_and_match").any():
                columns.append((section, direction, "mix_and_match", 0))
    return columns


def _reference_row(summary: pd.DataFrame, columns, field: str, label: str) -> str:
    cells = [label]
    for section, direction, metric, k in columns:
        values = summary.loc[(summary["section"] == section) & (summary["direction"] == direction)
                             & (summary["metric"] == metric) & (summary["k"] == k), field]
        cells.append(f"{100 * values.mean():.1f}" if len(values) else "")
    return "| " + " | ".join(cells) + " |"


def _comparison_markdown(comparison: pd.DataFrame, level: str = "##") -> list[str]:
    text = []
    for (model, baseline), part in comparison.groupby(["model", "baseline"], sort=False):
        text += [
            "", f"{level} Paired differences: {model} − {baseline}", "",
            f"Per (repeat, fold) differences in percentage points ({int(part['n_pairs'].max())} pairs). "
            "95% CI and t p-value: corrected resampled t-test (Nadeau & Bengio 2003), which "
            "accounts for the overlap of training sets across folds; Wilcoxon p: signed-rank test "
            "of the same differences, ignoring that overlap (optimistic).", "",
            "| section | direction | metric | mean diff | 95% CI | t p | Wilcoxon p |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in part.itertuples():
            label = f"R@{row.k}" if row.metric == "recall" else "Mix&Match"
            wilcoxon = "n/a" if np.isnan(row.wilcoxon_p) else f"{row.wilcoxon_p:.3g}"
            t_p = "n/a" if np.isnan(row.t_p) else f"{row.t_p:.3g}"
            text.append(f"| {row.section} | {row.direction} | {label} | {100 * row.mean_difference:+.1f} "
                        f"| [{100 * row.ci_low:+.1f}, {100 * row.ci_high:+.1f}] | {t_p} | {wilcoxon} |")
    return text


def _table1_lines(summary: pd.DataFrame, models_order=None) -> list[str]:
    """The Table-1 rows of one atlas (models, then chance and control)."""
    columns = _ordered_columns(summary)
    models = [m for m in (models_order or dict.fromkeys(summary["model"])) if m in set(summary["model"])]
    indexed = summary.set_index(["model", "section", "direction", "metric", "k"])
    header = ["model"] + [_column_name(*c) for c in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    best = {}
    for column in columns:
        means = [indexed.loc[(m, *column), "mean"] for m in models if (m, *column) in indexed.index]
        best[column] = max(means) if means else None
    for model in models:
        cells = [model]
        for column in columns:
            key = (model, *column)
            if key not in indexed.index:
                cells.append("–")
                continue
            mean, std = indexed.loc[key, "mean"], indexed.loc[key, "std"]
            cell = f"{100 * mean:.1f}" + ("" if np.isnan(std) else f" ± {100 * std:.1f}")
            cells.append(f"**{cell}**" if np.isclose(mean, best[column]) else cell)
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(_reference_row(summary, columns, "chance", "chance"))
    lines.append(_reference_row(summary, columns, "control", "shuffled pairs (control)"))
    return lines


def table1_markdown(summary: pd.DataFrame, comparison: pd.DataFrame | None = None, models_order=None) -> str:
    """Markdown Table 1: rows models, columns section x direction x (Recall@K, Mix&Match).

    Cells are ``mean ± std`` in percent over every (repeat, fold); the best mean per column is
    bold; the last rows give the chance level and the shuffled-pairs control. With several
    atlases, one table (and its paired comparisons) per atlas.
    """
    summary = summary[summary["metric"].isin(TABLE_METRICS)]
    if "atlas" not in summary:
        summary = summary.assign(atlas="")
    atlases = list(dict.fromkeys(summary["atlas"]))
    n_sets = int(summary["n_folds"].max()) if len(summary) else 0
    text = [
        "# Retrieval (Table 1)", "",
        f"Mean ± standard deviation (ddof=1) over {n_sets} test sets (repeats × folds of the "
        "cross-validation), in percent. Recall@K: share of queries whose true pair ranks in the "
        "top K (ties counted against the model); Mix&Match: share of other candidates scored "
        "below the true pair. Best mean per column in bold. *chance*: a random ranking; "
        "*shuffled pairs (control)*: each model's own test scores after the text-brain pairing "
        f"is permuted ({N_PERMUTATIONS} permutations, mean over models).",
    ]
    for atlas in atlases:
        if len(atlases) > 1:
            text += ["", f"## Atlas {atlas}"]
        text += ["", *_table1_lines(summary[summary["atlas"] == atlas], models_order)]
        if comparison is not None and len(comparison):
            part = comparison[comparison["atlas"] == atlas] if "atlas" in comparison else comparison
            text += _comparison_markdown(part, "###" if len(atlases) > 1 else "##")
    return "\n".join(text) + "\n"


def evaluate_retrieval(test_embedding_paths, metric_paths, out_parquet, out_markdown, out_comparison,
                       ks, models_order=None, seed: int = 0) -> pd.DataFrame:
    """Write every per-fold ``metrics.parquet``, then ``retrieval.parquet``/``.md`` and comparisons.

    Parameters
    ----------
    test_embedding_paths, metric_paths : list of path-like
        Aligned per-(repeat, fold) inputs and outputs.
    out_parquet, out_markdown, out_comparison : path-like
        Summary (:func:`summarise_folds`), Table 1, paired comparisons (:data:`COMPARISONS`).
    ks : list of int
        Recall@K cut-offs (config ``evaluation.recall_k``).
    """
    if len(test_embedding_paths) != len(metric_paths):
        raise ValueError(f"{len(test_embedding_paths)} test files but {len(metric_paths)} metric files")
    for i, (source, target) in enumerate(zip(test_embedding_paths, metric_paths)):
        if parse_fold_path(source) != parse_fold_path(target):
            raise ValueError(f"{source} and {target} are not the same model and fold")
        write_parquet(fold_metrics(score_test_embeddings(source), ks, seed=seed + i), target)
    per_fold = collect_fold_metrics(metric_paths)
    summary = summarise_folds(per_fold)
    trained = set(per_fold["model"])
    comparison = pd.concat([paired_comparison(per_fold, m, b) for m, b in COMPARISONS
                            if {m, b} <= trained] or [paired_comparison(per_fold.iloc[:0])],
                           ignore_index=True)
    write_parquet(summary, out_parquet)
    write_parquet(comparison, out_comparison)
    with atomic_path(out_markdown) as tmp:
        tmp.write_text(table1_markdown(summary, comparison, models_order))
    log.info("retrieval: %d test sets, %d models", len(metric_paths), len(trained))
    return summary
