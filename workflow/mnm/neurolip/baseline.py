"""Baseline: plain connectivity vectors + logistic regression, per fold.

Features are the subjects' connectome vectors (``connectivity.parquet``), standardised on the
training subjects; the classifier is scikit-learn's L2 logistic regression. Its outputs have
the columns of a NeuroLIP fold (variant ``baseline_logreg``, readout ``logreg``), so the
report puts both in one table. On the generated fixture the planted-edge recovery is measured
the same way as for NeuroLIP (:func:`mnm.neurolip.metrics.edge_pattern`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from mnm.io import read_matrix, read_parquet, write_parquet
from mnm.neurolip import metrics as M
from mnm.neurolip.connectivity import vector_to_matrix
from mnm.neurolip.fold import fold_split, metric_rows, probe_probability

__all__ = ["BASELINE", "run_baseline_fold"]

logger = logging.getLogger(__name__)

BASELINE = "baseline_logreg"


def run_baseline_fold(data_dir, fold: int, out_dir, *, C: float = 1.0, sensitive=("sex", "site"),
                      seed: int = 0) -> None:
    """Fit on every fold but ``fold``; write ``predictions.parquet`` and ``metrics.parquet``."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    subjects = read_parquet(data_dir / "subjects.parquet").set_index("subject_id", drop=False)
    ids, vectors = read_matrix(data_dir / "connectivity.parquet", column="connectivity", id_column="subject_id")
    features = pd.DataFrame(vectors, index=ids)
    train_ids, test_ids = fold_split(data_dir, fold)
    test = subjects.loc[test_ids].reset_index(drop=True)
    probability = probe_probability(features.loc[train_ids].to_numpy(), subjects.loc[train_ids, "diagnosis"],
                                    features.loc[test_ids].to_numpy(), C, seed)
    predictions, rows = metric_rows(BASELINE, fold, "logreg", test, probability, sensitive)
    planted = read_parquet(data_dir / "planted.parquet")
    if len(planted):
        pattern = M.edge_pattern(vector_to_matrix(features.loc[test_ids].to_numpy()), probability)
        rows = pd.concat([rows, pd.DataFrame({
            "variant": BASELINE, "fold": fold, "readout": "planted", "metric": ["edge_auc_pattern"],
            "value": [M.edge_recovery_auc(pattern, planted)]})], ignore_index=True)
    write_parquet(predictions, out_dir / "predictions.parquet")
    write_parquet(rows, out_dir / "metrics.parquet")
    logger.info("baseline fold %d: AUC %.3f", fold, float(rows.query("metric == 'auc'")["value"].iloc[0]))
