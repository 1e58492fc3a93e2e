"""One NeuroLIP job: train a variant on one fold, evaluate it on the held-out subjects, write.

Outputs in ``<out_dir>`` (``results/neurolip/<dataset>/<variant>/fold-<k>/``):

``model.safetensors``
    the weights (no pickle), with the settings as string metadata;
``history.parquet``
    per-epoch losses (:func:`mnm.neurolip.train.train_model`);
``predictions.parquet``
    per test subject and readout (``zero_shot``, ``probe``): ``subject_id``, ``variant``,
    ``fold``, ``readout``, ``diagnosis``, ``probability``, ``predicted``, ``sex``, ``site``;
``metrics.parquet``
    long table ``variant``, ``fold``, ``readout``, ``metric``, ``value``: accuracy, AUC, F1,
    demographic parity and equalised odds differences per sensitive attribute, and on the
    generated fixture the recovery of the planted effects (readout ``planted``);
``attention.parquet``
    mean attention over ROIs of the test subjects for each word: the two diagnosis prompts
    and every value of each sensitive attribute in the subjects' own texts
    (``word``, ``slot``, ``n_subjects``, ``attention``).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mnm.io import read_parquet, write_matrix, write_parquet
from mnm.neurolip import metrics as M
from mnm.neurolip.folds import validation_split
from mnm.neurolip.losses import variant_weights
from mnm.neurolip.readout import own_slot_attention, prompt_readout, slot_word
from mnm.neurolip.tensors import load_cohort, load_token_bank
from mnm.neurolip.train import TrainSettings, train_model

__all__ = ["fold_split", "metric_rows", "probe_probability", "run_fold"]

logger = logging.getLogger(__name__)


def fold_split(data_dir, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """``(training ids, test ids)`` of ``fold`` from ``folds.parquet``."""
    folds = read_parquet(Path(data_dir) / "folds.parquet")
    if fold not in set(folds["fold"]):
        raise ValueError(f"{data_dir}/folds.parquet has no fold {fold}")
    test = folds["fold"] == fold
    return folds.loc[~test, "subject_id"].to_numpy(), folds.loc[test, "subject_id"].to_numpy()


def probe_probability(train_x, train_y, test_x, C: float = 1.0, seed: int = 0) -> np.ndarray:
    """Standardised logistic regression fitted on the training subjects; test probabilities."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000, random_state=seed))
    probe.fit(train_x, np.asarray(train_y).astype(int))
    return probe.predict_proba(test_x)[:, 1]


def metric_rows(variant: str, fold: int, readout: str, subjects: pd.DataFrame, probability,
                sensitive) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predictions and long metric rows of one readout on the test subjects."""
    probability = np.asarray(probability, dtype=float)
    predicted = (probability >= 0.5).astype(int)
    y = subjects["diagnosis"].to_numpy()
    values = {**M.diagnosis_metrics(y, probability),
              **M.fairness_metrics(y, predicted, {name: subjects[name] for name in sensitive if name in subjects})}
    rows = pd.DataFrame({"variant": variant, "fold": fold, "readout": readout, "metric": list(values),
                         "value": list(values.values())})
    predictions = pd.DataFrame({"subject_id": subjects["subject_id"].to_numpy(), "variant": variant, "fold": fold,
                                "readout": readout, "diagnosis": y, "probability": probability,
                                "predicted": predicted, "sex": subjects["sex"].to_numpy(),
                                "site": subjects["site"].to_numpy()})
    return predictions, rows


def _attention_table(model, test, bank, readout, sensitive) -> tuple[list, np.ndarray]:
    words, vectors = [], []
    for value, row in enumerate(bank.prompt_rows):
        words.append({"word": slot_word(bank, int(row), "diagnosis"), "slot": "diagnosis",
                      "n_subjects": len(test)})
        vectors.append(readout.attention[:, value].mean(0))
    for name in sensitive:
        own = own_slot_attention(model, test, bank, name)
        for value in sorted(test.subjects[name].astype(str).unique()) if name in test.subjects else []:
            chosen = (test.subjects[name].astype(str) == value).to_numpy() & np.isfinite(own).all(1)
            if chosen.any():
                row = int(test.text_rows[np.flatnonzero(chosen)[0]])
                words.append({"word": slot_word(bank, row, name), "slot": name, "n_subjects": int(chosen.sum())})
                vectors.append(own[chosen].mean(0))
    return words, np.stack(vectors)


def _planted_rows(variant, fold, model, test, bank, readout, planted) -> pd.DataFrame:
    pattern = M.edge_pattern(test.connectivity.numpy(), readout.probability)
    patient_attention = readout.attention[:, 1].mean(0)
    values = {"edge_auc_pattern": M.edge_recovery_auc(pattern, planted),
              "region_auc_attention": M.region_recovery_auc(patient_attention, planted),
              "diagnosis_attention_on_diagnosis_rois": M.attention_share(
                  patient_attention, M.planted_regions(planted, "diagnosis")),
              "diagnosis_attention_on_sex_rois": M.attention_share(
                  patient_attention, M.planted_regions(planted, "sex"))}
    return pd.DataFrame({"variant": variant, "fold": fold, "readout": "planted", "metric": list(values),
                         "value": list(values.values())})


def _save_model(model, settings: TrainSettings, variant: str, path) -> None:
    """Weights and settings in the pipeline's safetensors checkpoint (:mod:`mnm.checkpoint`)."""
    from mnm.checkpoint import save_checkpoint

    save_checkpoint(path, model.state_dict(), {"model": "neurolip", "variant": variant,
                                               "settings": asdict(settings)})


def run_fold(data_dir, variant: str, fold: int, out_dir, *, settings: TrainSettings, loss: dict, sensitive,
             validation_fraction: float = 0.15, probe_C: float = 1.0, threads: int | None = None) -> None:
    """Train ``variant`` on every fold but ``fold``, evaluate on ``fold``, write the outputs.

    Parameters
    ----------
    data_dir : path-like
        Folder of the data and text stages (``subjects``, ``connectivity``, ``folds``,
        ``texts``, ``subject_texts``, ``tokens``, ``planted`` Parquet files).
    variant : str
        One of :data:`mnm.neurolip.losses.VARIANTS`.
    fold : int
    out_dir : path-like
    settings : TrainSettings
    loss : dict
        ``lambda_disentangle``, ``lambda_negative``, ``lambda_sensitive_align``.
    sensitive : list of str
        Sensitive attributes (slots), e.g. ``["sex", "site"]``.
    validation_fraction, probe_C : float
    threads : int, optional
        torch intra-op threads.
    """
    if threads:
        torch.set_num_threads(int(threads))
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    sensitive = list(sensitive)
    bank = load_token_bank(data_dir / "texts.parquet", data_dir / "tokens.parquet", ["diagnosis", *sensitive])
    cohort = load_cohort(data_dir, bank, sensitive)
    train_ids, test_ids = fold_split(data_dir, fold)
    train = cohort.subset(train_ids)
    fit_ids, validation_ids = validation_split(train_ids, train.subjects["diagnosis"], validation_fraction,
                                               settings.seed)
    weights = variant_weights(variant, **loss)
    model, history = train_model(cohort.subset(fit_ids), cohort.subset(validation_ids), bank, sensitive, weights,
                                 settings)
    test = cohort.subset(test_ids)
    test_readout = prompt_readout(model, test, bank)
    train_readout = prompt_readout(model, train, bank)
    probe = probe_probability(train_readout.features, train.subjects["diagnosis"], test_readout.features,
                              probe_C, settings.seed)
    outputs = [metric_rows(variant, fold, name, test.subjects, probability, sensitive)
               for name, probability in (("zero_shot", test_readout.probability), ("probe", probe))]
    predictions = pd.concat([p for p, _ in outputs], ignore_index=True)
    rows = [r for _, r in outputs]
    planted = read_parquet(data_dir / "planted.parquet")
    if len(planted):
        rows.append(_planted_rows(variant, fold, model, test, bank, test_readout, planted))
    words, vectors = _attention_table(model, test, bank, test_readout, sensitive)
    _save_model(model, settings, variant, out_dir / "model.safetensors")
    write_parquet(history, out_dir / "history.parquet")
    write_parquet(predictions, out_dir / "predictions.parquet")
    write_parquet(pd.concat(rows, ignore_index=True), out_dir / "metrics.parquet")
    words = pd.DataFrame(words)
    write_matrix(out_dir / "attention.parquet", words["word"], vectors, column="attention", id_column="word",
                 extra={"slot": words["slot"].to_numpy(object), "n_subjects": words["n_subjects"].to_numpy()})
    summary = pd.concat(rows, ignore_index=True).query("metric in ['auc', 'eo_sex']")
    logger.info("%s fold %d: %s", variant, fold, summary[["readout", "metric", "value"]].to_string(index=False))
