"""Per-fold training of every text-brain model, checkpoints, history and test embeddings.

One call of :func:`train_fold` is one Snakemake job (model x encoder x section x atlas x fold):

1. Articles = ids present in the folds table, the brain coefficients, the text embeddings
   and the corpus (the number missing from each input is logged).
2. Fold ``k``: test = articles of fold ``k``; the other folds are split by
   :func:`mnm.folds.validation_split` into a *fit* set and a *validation* set. The validation
   set chooses the epoch (or is only monitored for closed-form regressions); the test fold is
   never looked at before the final embeddings are written (the public MNM code selects on
   the test fold; we do not). Fold ``"all"``: every article is used, validation is still
   carved for the epoch choice, and ``test_embeddings.parquet`` holds *every* article
   (in-sample, for queries and figures only; never use it for metrics).
3. Text features are standardised with a :class:`~sklearn.preprocessing.StandardScaler` fitted
   on the fit set only; its mean and scale are stored in ``model.pt``.
4. Torch models (MNM variants, NeuroConText, MLP) share :func:`train_torch_model`: AdamW,
   mini-batches, one history row per epoch, best epoch = highest mean validation recall,
   whose ``state_dict`` is deep-copied and restored. Ridge and TF-IDF ridge are closed form.
5. Contrastive models also get a RidgeCV *decoder* from their text embedding to the brain
   coefficients (fitted on the fit set) so that text -> map prediction works for every model.

Outputs: ``model.pt`` (see :func:`save_checkpoint`), ``history.parquet`` and
``test_embeddings.parquet`` (``article_id, text, brain, n_active, score_kind, curvature,
angle_apex``); :func:`score_matrix` recomputes any retrieval score matrix from the latter
without torch.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from sklearn.linear_model import RidgeCV
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from mnm import metrics
from mnm.folds import validation_split
from mnm.io import atomic_path, read_matrix, read_parquet, vectors_to_arrow, write_parquet
from mnm.models.regression import fit_ridge, fit_tfidf_ridge, pearson_score_matrix, section_texts

__all__ = [
    "MODEL_NAMES",
    "MNM_VARIANTS",
    "TORCH_MODELS",
    "SKLEARN_MODELS",
    "SCORE_KINDS",
    "model_params",
    "build_torch_model",
    "load_fold_inputs",
    "split_fold",
    "train_torch_model",
    "validation_recalls",
    "exterior_angle_matrix",
    "score_matrix",
    "read_test_embeddings",
    "train_fold",
    "TrainedModel",
    "load_trained",
    "train_fold_from_snakemake",
]

log = logging.getLogger("mnm.train")

TORCH_MODELS = ("mnm", "mnm_reverse", "mnm_no_hier", "neurocontext", "mlp")
SKLEARN_MODELS = ("ridge", "tfidf")
MODEL_NAMES = TORCH_MODELS + SKLEARN_MODELS
MNM_VARIANTS = ("mnm", "mnm_reverse", "mnm_no_hier")
SCORE_KINDS = ("angle", "cosine", "correlation")
SCORE_KIND_OF_MODEL = {
    **{name: "angle" for name in MNM_VARIANTS},
    "neurocontext": "cosine",
    "mlp": "correlation",
    "ridge": "correlation",
    "tfidf": "correlation",
}
# Keys of a model's config section that drive the optimiser, not the constructor.
TRAINING_KEYS = ("epochs", "batch_size", "lr", "weight_decay")
# Training settings a config section may omit (models.mlp has no batch_size key).
TRAINING_DEFAULTS = {"mlp": {"batch_size": 128}}
# Candidate alphas of the RidgeCV decoder (text embedding -> coefficients) of contrastive models.
DECODER_ALPHAS = np.logspace(-2, 4, 7)
CHECKPOINT_FORMAT = 1


# --------------------------------------------------------------------------- configuration
def model_params(models_config: dict, model_name: str) -> dict:
    """Return the config section of a model (the MNM variants share ``models.mnm``).

    Parameters
    ----------
    models_config : dict
        The ``models`` section of the validated config.
    model_name : str
        One of :data:`MODEL_NAMES`.
    """
    if model_name not in MODEL_NAMES:
        raise ValueError(f"unknown model {model_name!r}; expected one of {MODEL_NAMES}")
    key = "mnm" if model_name in MNM_VARIANTS else model_name
    if key not in models_config:
        raise KeyError(f"config models.{key} is missing (parameters of model {model_name!r})")
    return dict(models_config[key])


def split_params(model_name: str, params: dict) -> tuple[dict, dict]:
    """Split a model's parameters into constructor kwargs and training kwargs."""
    training = {**TRAINING_DEFAULTS.get(model_name, {}), **{k: params[k] for k in TRAINING_KEYS if k in params}}
    constructor = {k: v for k, v in params.items() if k not in TRAINING_KEYS}
    if model_name in MNM_VARIANTS:
        constructor["variant"] = model_name
    return constructor, training


def build_torch_model(model_name: str, text_dim: int, brain_dim: int, **kwargs) -> torch.nn.Module:
    """Instantiate a torch model of :data:`TORCH_MODELS` (MNM is imported lazily)."""
    if model_name in MNM_VARIANTS:
        from mnm.models.mnm import MNM

        return MNM(text_dim, brain_dim, **kwargs)
    if model_name == "neurocontext":
        from mnm.models.neurocontext import NeuroConText

        return NeuroConText(text_dim, brain_dim, **kwargs)
    if model_name == "mlp":
        from mnm.models.regression import MLPRegression

        return MLPRegression(text_dim, brain_dim, **kwargs)
    raise ValueError(f"{model_name!r} is not a torch model; expected one of {TORCH_MODELS}")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto``/None -> cuda when available, else cpu; asking for absent cuda is an error."""
    from mnm.text.encoder import resolve_device as resolve_device_name

    return torch.device(resolve_device_name(device, key="models.device"))


# --------------------------------------------------------------------------- inputs
@dataclass
class FoldInputs:
    """Aligned inputs of one training job (rows in the order of ``ids``)."""

    ids: np.ndarray
    text: np.ndarray
    brain: np.ndarray
    n_active: np.ndarray
    folds: np.ndarray
    texts: pd.Series | None = None
    missing: dict = field(default_factory=dict)


def _check_unique(ids: np.ndarray, path) -> None:
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"{path}: duplicated article_id, e.g. {unique[counts > 1][:5].tolist()}")


def load_fold_inputs(text_path, brain_path, folds_path, articles_path=None, section=None) -> FoldInputs:
    """Read and align the inputs on the intersection of their article ids.

    Parameters
    ----------
    text_path : path
        ``text/{encoder}/{section}/embeddings.parquet`` (article_id, embedding).
    brain_path : path
        ``brain/{atlas}/coefficients.parquet`` (article_id, coefficients, n_peaks, n_active).
    folds_path : path
        ``folds.parquet`` (article_id, fold).
    articles_path : path, optional
        ``corpus/articles.parquet``; when given with ``section``, the section texts are
        returned too (TF-IDF) and the ids are also intersected with the corpus.
    section : str, optional
        Text section, for ``texts``.

    Returns
    -------
    FoldInputs
        Sorted by article id. ``missing`` counts, per input, the ids of the union absent there.
    """
    text_ids, text = read_matrix(text_path, "embedding")
    brain_ids, brain = read_matrix(brain_path, "coefficients")
    brain_table = read_parquet(brain_path, columns=["article_id", "n_active"])
    folds_table = read_parquet(folds_path)
    for column in ("article_id", "fold"):
        if column not in folds_table.columns:
            raise KeyError(f"{folds_path}: column {column!r} missing")
    tables = {
        "text": text_ids.astype(str),
        "brain": brain_ids.astype(str),
        "folds": folds_table["article_id"].astype(str).to_numpy(),
    }
    for name, path in (("text", text_path), ("brain", brain_path), ("folds", folds_path)):
        _check_unique(tables[name], path)
    texts = None
    if articles_path is not None:
        articles = read_parquet(articles_path)
        if "article_id" not in articles.columns:
            raise KeyError(f"{articles_path}: column 'article_id' missing")
        tables["articles"] = articles["article_id"].astype(str).to_numpy()
        if section is not None:
            texts = section_texts(articles, section)
    union = set().union(*map(set, tables.values()))
    common = sorted(set.intersection(*map(set, tables.values())))
    missing = {name: len(union) - len(set(ids)) for name, ids in tables.items()}
    if not common:
        raise ValueError(f"no article is present in all inputs ({text_path}, {brain_path}, {folds_path})")
    for name, count in missing.items():
        if count:
            log.info("%d of %d articles missing from the %s input (dropped)", count, len(union), name)

    def rows(ids) -> np.ndarray:
        position = pd.Index(ids)
        return position.get_indexer(common)

    if not np.all(np.isfinite(text)):
        raise ValueError(f"{text_path}: non-finite values in embeddings")
    if not np.all(np.isfinite(brain)):
        raise ValueError(f"{brain_path}: non-finite values in coefficients")
    fold_values = folds_table.set_index(folds_table["article_id"].astype(str))["fold"]
    return FoldInputs(
        ids=np.asarray(common, dtype=object),
        text=text[rows(tables["text"])],
        brain=brain[rows(tables["brain"])],
        n_active=brain_table["n_active"].to_numpy()[rows(tables["brain"])].astype(np.float32),
        folds=fold_values.loc[common].to_numpy().astype(np.int64),
        texts=None if texts is None else texts.loc[common],
        missing=missing,
    )


def split_fold(ids, folds, fold, validation_fraction: float, seed: int):
    """Indices of the fit, validation and test articles of one fold.

    Parameters
    ----------
    ids : array of str
        Article ids (aligned with ``folds``).
    folds : array of int
        Fold of each article.
    fold : int or "all"
        The held-out fold; ``"all"`` trains on everything and "tests" on everything.
    validation_fraction : float
        Share of the training articles used for the epoch choice.
    seed : int
        Seed of the validation split.

    Returns
    -------
    fit_idx, val_idx, test_idx : numpy.ndarray of int
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
    return index.get_indexer(fit_ids), index.get_indexer(val_ids), np.flatnonzero(test_mask)


# --------------------------------------------------------------------------- scoring
def validation_recalls(scores: np.ndarray) -> dict:
    """Recall@1 and @10 both directions on a square validation score matrix, and their mean.

    Ties are counted pessimistically so that a collapsed model (all scores equal) gets
    recall ``k / n`` at best, never 1 (this is for epoch choice; reported metrics live in
    :mod:`mnm.metrics`).
    """
    scores = np.asarray(scores, dtype=np.float64)
    values = {}
    for direction, matrix in (("t2b", scores), ("b2t", scores.T)):
        for k in (1, 10):
            values[f"val_recall_at_{k}_{direction}"] = metrics.recall_at_k(matrix, k)
    values["val_mean_recall"] = float(np.mean(list(values.values())))
    return values


def exterior_angle_matrix(apex: np.ndarray, points: np.ndarray, curvature: float, eps: float = 1e-8) -> np.ndarray:
    """Exterior angle at each apex between the origin ray and the geodesic to each point.

    Lorentz model of curvature ``-c``, points given by their space components (time
    component ``sqrt(1/c + |x|^2)``); MERU's ``oxy_angle`` formula, in float64:
    ``acos((y0 + c<x,y>_L x0) / (|x| sqrt((c<x,y>_L)^2 - 1)))``.

    Parameters
    ----------
    apex : array, shape (n_apex, d)
    points : array, shape (n_points, d)
    curvature : float
        ``c > 0``.

    Returns
    -------
    numpy.ndarray, shape (n_apex, n_points)
        Angles in ``[0, pi]``.
    """
    if curvature is None or not curvature > 0:
        raise ValueError(f"angle scores need a positive curvature, got {curvature}")
    x = np.asarray(apex, dtype=np.float64)
    y = np.asarray(points, dtype=np.float64)
    x_time = np.sqrt(1.0 / curvature + np.sum(x**2, axis=1))[:, None]
    y_time = np.sqrt(1.0 / curvature + np.sum(y**2, axis=1))[None, :]
    c_xyl = curvature * (x @ y.T - x_time * y_time)
    numerator = y_time + c_xyl * x_time
    denominator = np.linalg.norm(x, axis=1)[:, None] * np.sqrt(np.clip(c_xyl**2 - 1.0, eps, None))
    return np.arccos(np.clip(numerator / (denominator + eps), -1.0 + eps, 1.0 - eps))


def score_matrix(kind: str, text_emb, brain_emb, curvature: float | None = None, angle_apex: str = "brain", **_) -> np.ndarray:
    """Retrieval scores ``(n_text, n_brain)`` (higher = better) from stored embeddings.

    Parameters
    ----------
    kind : {"angle", "cosine", "correlation"}
        ``angle``: ``-exterior angle`` on the hyperboloid (MNM; needs ``curvature``; the
        angle is measured at ``angle_apex``, "brain" = at the brain point towards the text);
        ``cosine``: dot product of the (already L2-normalised) vectors (NeuroConText);
        ``correlation``: Pearson correlation of predicted (text) and true (brain)
        coefficients (regressions).
    text_emb, brain_emb : array
        Rows as stored in ``test_embeddings.parquet``.
    curvature : float, optional
        Curvature ``c`` for ``angle``.
    angle_apex : {"brain", "text"}
        Where the angle is measured.
    **_
        Other metadata columns are ignored, so ``score_matrix(**meta, ...)`` works.
    """
    text_emb = np.asarray(text_emb, dtype=np.float64)
    brain_emb = np.asarray(brain_emb, dtype=np.float64)
    if kind == "cosine":
        return text_emb @ brain_emb.T
    if kind == "correlation":
        return pearson_score_matrix(text_emb, brain_emb)
    if kind == "angle":
        if angle_apex == "brain":
            return -exterior_angle_matrix(brain_emb, text_emb, curvature).T
        if angle_apex == "text":
            return -exterior_angle_matrix(text_emb, brain_emb, curvature)
        raise ValueError(f"angle_apex must be 'brain' or 'text', got {angle_apex!r}")
    raise ValueError(f"unknown score kind {kind!r}; expected one of {SCORE_KINDS}")


def read_test_embeddings(path) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Read ``test_embeddings.parquet`` -> ``(ids, text, brain, meta)``.

    ``meta`` holds ``kind``, ``curvature`` and ``angle_apex``, ready for
    ``score_matrix(text=..., brain=..., **meta)``-style calls:
    ``score_matrix(meta["kind"], text, brain, **meta)``.
    """
    ids, text = read_matrix(path, "text")
    _, brain = read_matrix(path, "brain")
    table = read_parquet(path, columns=["score_kind", "curvature", "angle_apex"])
    if table.empty:
        return ids, text, brain, {"kind": None, "curvature": None, "angle_apex": "brain"}
    curvature = float(table["curvature"].iloc[0])
    meta = {
        "kind": str(table["score_kind"].iloc[0]),
        "curvature": None if math.isnan(curvature) else curvature,
        "angle_apex": str(table["angle_apex"].iloc[0]) or "brain",
    }
    return ids, text, brain, meta


# --------------------------------------------------------------------------- torch loop
def _parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no decay on the model's special parameters, biases and norms (1-D)."""
    excluded = set(model.no_decay_parameter_names())
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if name in excluded or parameter.ndim < 2 else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def _encode(encoder, matrix: np.ndarray, device: torch.device, batch_size: int = 4096) -> np.ndarray:
    """Apply ``encoder`` in inference batches and return float32 numpy."""
    outputs = []
    for start in range(0, len(matrix), batch_size):
        chunk = torch.tensor(matrix[start : start + batch_size], dtype=torch.float32, device=device)  # a copy: inputs may be read-only Arrow buffers
        outputs.append(encoder(chunk).float().cpu().numpy())
    if not outputs:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(outputs)


@torch.no_grad()
def _validation_row(model, X_val, Y_val, device) -> dict:
    model.eval()
    text = torch.as_tensor(_encode(model.encode_text, X_val, device), device=device)
    brain = torch.as_tensor(_encode(model.encode_brain, Y_val, device), device=device)
    return validation_recalls(model.score(text, brain).float().cpu().numpy())


def train_torch_model(
    model: torch.nn.Module,
    X_fit: np.ndarray,
    Y_fit: np.ndarray,
    n_active_fit: np.ndarray,
    X_val: np.ndarray,
    Y_val: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> tuple[pd.DataFrame, int]:
    """Train a protocol model with AdamW and keep the epoch with the best validation recall.

    Parameters
    ----------
    model : torch.nn.Module
        Follows :class:`mnm.models.base.TextBrainModel`; moved to ``device`` and left with
        the best epoch's weights loaded.
    X_fit, Y_fit, n_active_fit : array
        Standardised text features, brain coefficients and active-component counts.
    X_val, Y_val : array
        Validation pairs (same preprocessing).
    epochs, batch_size, lr, weight_decay : number
        Optimiser settings; batches of fewer than 2 pairs are skipped (no negatives).
    seed : int
        Seeds the batch order (dropout is seeded by the caller's ``torch.manual_seed``).

    Returns
    -------
    history : pandas.DataFrame
        One row per epoch (epoch 0 = before training): ``train_loss``, ``train_<term>``,
        the model's ``log_scalars``, validation recalls and ``val_mean_recall``, ``is_best``.
    best_epoch : int
        First epoch with the highest ``val_mean_recall``.
    """
    device = torch.device(device)
    model.to(device)
    optimizer = torch.optim.AdamW(_parameter_groups(model, float(weight_decay)), lr=float(lr))
    generator = torch.Generator().manual_seed(int(seed))
    X = torch.as_tensor(X_fit, dtype=torch.float32)
    Y = torch.as_tensor(Y_fit, dtype=torch.float32)
    R = torch.as_tensor(n_active_fit, dtype=torch.float32)
    batch_size = max(2, min(int(batch_size), len(X)))

    rows = [{"epoch": 0, "train_loss": np.nan, **model.log_scalars(), **_validation_row(model, X_val, Y_val, device)}]
    best_epoch, best_value = 0, rows[0]["val_mean_recall"]
    best_state = copy.deepcopy(model.state_dict())
    for epoch in tqdm(range(1, int(epochs) + 1), desc="epochs", disable=not progress):
        model.train()
        sums, n_seen = {}, 0
        for batch in torch.randperm(len(X), generator=generator).split(batch_size):
            if len(batch) < 2:
                continue
            x, y, r = X[batch].to(device), Y[batch].to(device), R[batch].to(device)
            terms = model.loss(model.encode_text(x), model.encode_brain(y), r)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach()) * len(batch)
            n_seen += len(batch)
        row = {"epoch": epoch}
        row.update({("train_loss" if k == "loss" else f"train_{k}"): v / max(n_seen, 1) for k, v in sums.items()})
        row.update(model.log_scalars())
        row.update(_validation_row(model, X_val, Y_val, device))
        rows.append(row)
        if row["val_mean_recall"] > best_value:
            best_epoch, best_value = epoch, row["val_mean_recall"]
            best_state = copy.deepcopy(model.state_dict())
        log.info("epoch %d: loss %.4f, val mean recall %.4f", epoch, row.get("train_loss", np.nan), row["val_mean_recall"])
    model.load_state_dict(best_state)
    model.eval()
    history = pd.DataFrame(rows)
    history["is_best"] = history["epoch"] == best_epoch
    return history, best_epoch


def _infer_angle_apex(model, text: np.ndarray, brain: np.ndarray, curvature: float, device) -> str:
    """Find which point the model's angle score is measured at, by matching its own scores.

    The MNM model owns its scoring convention; this check makes the stored, torch-free
    ``score_matrix`` reproduce ``model.score`` exactly or fails loudly.
    """
    sample = slice(0, min(64, len(text)))
    with torch.no_grad():
        reference = (
            model.score(torch.as_tensor(text[sample], device=device), torch.as_tensor(brain[sample], device=device))
            .double()
            .cpu()
            .numpy()
        )
    errors = {
        apex: float(np.mean(np.abs(score_matrix("angle", text[sample], brain[sample], curvature, apex) - reference)))
        for apex in ("brain", "text")
    }
    apex = min(errors, key=errors.get)
    if errors[apex] > 1e-3:
        raise RuntimeError(f"model.score does not match -exterior angle at either point (mean abs errors {errors})")
    return apex


# --------------------------------------------------------------------------- checkpoint
def save_checkpoint(checkpoint: dict, path) -> None:
    """Write a checkpoint dict with :func:`torch.save` atomically.

    Keys: ``format``, ``model_name``, ``family`` ("torch"/"sklearn"), ``constructor_kwargs``,
    ``state_dict`` (torch) or ``estimator`` (fitted scikit-learn object), ``decoder``
    (RidgeCV text embedding -> coefficients, or None), ``scaler_mean``/``scaler_scale``
    (None for TF-IDF), ``score_kind``, ``curvature``, ``angle_apex``, ``metadata``
    (encoder, section, atlas, fold, seed, params, dims, best_epoch, fit/validation/test ids).
    """
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(checkpoint, tmp)


def _write_test_embeddings(path, ids, text, brain, n_active, score_kind, curvature, angle_apex) -> None:
    n = len(ids)
    table = pa.table(
        {
            "article_id": pa.array([str(i) for i in ids], pa.string()),
            "text": vectors_to_arrow(np.asarray(text, dtype=np.float32).reshape(n, -1)),
            "brain": vectors_to_arrow(np.asarray(brain, dtype=np.float32).reshape(n, -1)),
            "n_active": pa.array(np.asarray(n_active, dtype=np.float32)),
            "score_kind": pa.array([score_kind] * n, pa.string()),
            "curvature": pa.array([np.nan if curvature is None else float(curvature)] * n, pa.float64()),
            "angle_apex": pa.array([angle_apex or ""] * n, pa.string()),
        }
    )
    write_parquet(table, path)


# --------------------------------------------------------------------------- one fold
def train_fold(
    model_name: str,
    text_path,
    brain_path,
    folds_path,
    articles_path,
    section: str,
    fold,
    params: dict,
    *,
    out_model,
    out_history,
    out_test_embeddings,
    encoder: str = "",
    atlas: str = "",
    encoder_config: dict | None = None,
    seed: int = 0,
    validation_fraction: float = 0.1,
    device: str = "auto",
    threads: int | None = None,
) -> dict:
    """Train one model on one fold and write ``model.pt``, history and test embeddings.

    Parameters
    ----------
    model_name : str
        One of :data:`MODEL_NAMES`.
    text_path, brain_path, folds_path, articles_path : path
        Stage inputs (see :func:`load_fold_inputs`); ``articles_path`` gives TF-IDF its text.
    section : str
        Text section of the embeddings (``title``, ``abstract``, ...).
    fold : int or "all"
        Held-out fold (see the module docstring for ``"all"``).
    params : dict
        The model's config section (:func:`model_params`): constructor kwargs plus
        ``epochs``, ``batch_size``, ``lr``, ``weight_decay`` for torch models, ``alphas``
        (and ``max_features``) for ridge / TF-IDF.
    out_model, out_history, out_test_embeddings : path
        Outputs.
    encoder, atlas : str
        Recorded in the checkpoint metadata.
    encoder_config : dict, optional
        Text encoder config, stored so that :meth:`TrainedModel.embed_text` accepts raw texts.
    seed : int
        Seeds initialisation, dropout, batch order and the validation split.
    validation_fraction : float
        Share of the training folds used as validation set.
    device : str
        ``auto``, ``cpu`` or ``cuda``.
    threads : int, optional
        torch intra-op threads.

    Returns
    -------
    dict
        Summary: ``best_epoch``, ``n_fit``, ``n_validation``, ``n_test``, ``score_kind``.
    """
    if threads:
        torch.set_num_threads(int(threads))
    torch.manual_seed(int(seed))
    device = resolve_device(device)
    needs_text = model_name == "tfidf"
    data = load_fold_inputs(text_path, brain_path, folds_path, articles_path, section if needs_text else None)
    fit, val, test = split_fold(data.ids, data.folds, fold, validation_fraction, seed)
    log.info("%s fold %s: %d fit, %d validation, %d test articles", model_name, fold, len(fit), len(val), len(test))
    params = dict(params)
    constructor, training = split_params(model_name, params)
    score_kind = SCORE_KIND_OF_MODEL[model_name]
    curvature, angle_apex, decoder, state_dict, estimator = None, "", None, None, None
    scaler = None if needs_text else StandardScaler().fit(data.text[fit])
    X = None if scaler is None else scaler.transform(data.text).astype(np.float32)

    if model_name in TORCH_MODELS:
        missing = [k for k in TRAINING_KEYS if k not in training]
        if missing:
            raise KeyError(f"config models.{model_name}: missing training key(s) {missing}")
        model = build_torch_model(model_name, X.shape[1], data.brain.shape[1], **constructor)
        history, best_epoch = train_torch_model(
            model, X[fit], data.brain[fit], data.n_active[fit], X[val], data.brain[val],
            seed=seed, device=device, **training,
        )  # fmt: skip
        text_emb = _encode(model.encode_text, X, device)
        brain_emb = _encode(model.encode_brain, data.brain, device)
        if score_kind == "angle":
            scalars = model.log_scalars()
            if "curvature" not in scalars:
                raise KeyError(f"{model_name}.log_scalars() must report 'curvature' for angle scores")
            curvature = float(scalars["curvature"])
            angle_apex = _infer_angle_apex(model, text_emb[fit], brain_emb[fit], curvature, device)
        if model_name != "mlp":
            decoder = RidgeCV(alphas=DECODER_ALPHAS).fit(text_emb[fit], data.brain[fit])
        state_dict = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    else:
        alphas = constructor.get("alphas", DECODER_ALPHAS)
        if model_name == "ridge":
            estimator = fit_ridge(X[fit], data.brain[fit], alphas)
            text_emb = estimator.predict(X).astype(np.float32)
        else:
            texts = data.texts.to_numpy()
            estimator = fit_tfidf_ridge(texts[fit], data.brain[fit], alphas, constructor.get("max_features", 20000))
            text_emb = estimator.predict(texts).astype(np.float32)
        brain_emb = data.brain
        ridge = estimator if model_name == "ridge" else estimator.named_steps["ridge"]
        history = pd.DataFrame(
            [
                {
                    "epoch": 1,
                    "train_loss": float(np.mean((text_emb[fit] - data.brain[fit]) ** 2)),
                    "alpha": float(ridge.alpha_),
                    **validation_recalls(pearson_score_matrix(text_emb[val], brain_emb[val])),
                    "is_best": True,
                }
            ]
        )
        best_epoch = 1

    ids = data.ids
    metadata = {
        "encoder": encoder,
        "encoder_config": encoder_config,
        "section": section,
        "atlas": atlas,
        "fold": str(fold),
        "seed": int(seed),
        "validation_fraction": float(validation_fraction),
        "params": params,
        "text_dim": int(data.text.shape[1]),
        "brain_dim": int(data.brain.shape[1]),
        "best_epoch": int(best_epoch),
        "fit_ids": ids[fit].tolist(),
        "validation_ids": ids[val].tolist(),
        "test_ids": ids[test].tolist(),
        "missing_counts": data.missing,
    }
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "model_name": model_name,
        "family": "torch" if model_name in TORCH_MODELS else "sklearn",
        "constructor_kwargs": constructor,
        "state_dict": state_dict,
        "estimator": estimator,
        "decoder": decoder,
        "scaler_mean": None if scaler is None else scaler.mean_.astype(np.float64),
        "scaler_scale": None if scaler is None else scaler.scale_.astype(np.float64),
        "score_kind": score_kind,
        "curvature": curvature,
        "angle_apex": angle_apex,
        "metadata": metadata,
    }
    save_checkpoint(checkpoint, out_model)
    write_parquet(history, out_history)
    _write_test_embeddings(
        out_test_embeddings, ids[test], text_emb[test], brain_emb[test], data.n_active[test],
        score_kind, curvature, angle_apex,
    )  # fmt: skip
    summary = {
        "best_epoch": int(best_epoch),
        "n_fit": len(fit),
        "n_validation": len(val),
        "n_test": len(test),
        "score_kind": score_kind,
    }
    log.info("wrote %s (%s)", out_model, summary)
    return summary


# --------------------------------------------------------------------------- trained model
def _looks_like_texts(values) -> bool:
    """True for a str or a non-empty sequence / array of str."""
    if isinstance(values, str):
        return True
    if isinstance(values, np.ndarray):
        return values.dtype.kind in "US" or (values.dtype.kind == "O" and values.size > 0 and isinstance(values.flat[0], str))
    if isinstance(values, pd.Series):
        return len(values) > 0 and isinstance(values.iloc[0], str)
    return isinstance(values, (list, tuple)) and len(values) > 0 and isinstance(values[0], str)


class TrainedModel:
    """A trained fold model with a numpy interface (used by the report and the query tool).

    Attributes
    ----------
    name : str
        Model name.
    score_kind : str
        ``angle``, ``cosine`` or ``correlation`` (see :func:`score_matrix`).
    curvature : float or None
        Curvature of the hyperboloid for ``angle`` models.
    angle_apex : str
        Where angles are measured (``brain`` or ``text``), for ``angle`` models.
    metadata : dict
        Encoder, section, atlas, fold, ids, dims, params (see :func:`save_checkpoint`).
    config : dict
        Constructor kwargs.
    """

    def __init__(self, checkpoint: dict, device: str = "cpu"):
        if checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"unsupported checkpoint format {checkpoint.get('format')!r}")
        self.name = checkpoint["model_name"]
        self.family = checkpoint["family"]
        self.score_kind = checkpoint["score_kind"]
        self.curvature = checkpoint["curvature"]
        self.angle_apex = checkpoint["angle_apex"] or "brain"
        self.metadata = checkpoint["metadata"]
        self.config = checkpoint["constructor_kwargs"]
        self.device = resolve_device(device)
        self.estimator = checkpoint["estimator"]
        self.decoder = checkpoint["decoder"]
        self._mean, self._scale = checkpoint["scaler_mean"], checkpoint["scaler_scale"]
        self._text_encoder = None
        self.module = None
        if self.family == "torch":
            self.module = build_torch_model(
                self.name, self.metadata["text_dim"], self.metadata["brain_dim"], **self.config
            )
            self.module.load_state_dict(checkpoint["state_dict"])
            self.module.to(self.device).eval()

    # ---- inputs
    def _features(self, X_or_texts):
        """Texts -> raw text (TF-IDF) or encoder vectors; vectors -> standardised float32."""
        is_text = _looks_like_texts(X_or_texts)
        if isinstance(X_or_texts, str):
            X_or_texts = [X_or_texts]
        if self.name == "tfidf":
            if not is_text:
                raise TypeError("the tfidf model takes raw texts, not vectors")
            return list(X_or_texts)
        if is_text:
            X_or_texts = self._encode_texts(list(X_or_texts))
        X = np.atleast_2d(np.asarray(X_or_texts, dtype=np.float64))
        if X.shape[1] != self.metadata["text_dim"]:
            raise ValueError(f"text features have {X.shape[1]} dims, model expects {self.metadata['text_dim']}")
        return ((X - self._mean) / self._scale).astype(np.float32)

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        if self._text_encoder is None:
            if not self.metadata.get("encoder_config"):
                raise ValueError(f"model {self.name} has no stored encoder config: pass embeddings, not texts")
            from mnm.text import Encoder

            self._text_encoder = Encoder.from_config(self.metadata["encoder_config"], str(self.device))
        return self._text_encoder.embed(texts)

    # ---- public numpy interface
    def embed_text(self, X_or_texts) -> np.ndarray:
        """Text embeddings as scored (predicted coefficients for regressions)."""
        features = self._features(X_or_texts)
        if self.family == "torch":
            return _encode(self.module.encode_text, features, self.device)
        return np.asarray(self.estimator.predict(features), dtype=np.float32)

    def embed_brain(self, coefficients) -> np.ndarray:
        """Brain embeddings as scored (the coefficients themselves for regressions)."""
        coefficients = np.atleast_2d(np.asarray(coefficients, dtype=np.float32))
        if coefficients.shape[1] != self.metadata["brain_dim"]:
            raise ValueError(f"coefficients have {coefficients.shape[1]} dims, model expects {self.metadata['brain_dim']}")
        if self.family == "torch":
            return _encode(self.module.encode_brain, coefficients, self.device)
        return coefficients

    def score(self, text_emb, brain_emb) -> np.ndarray:
        """Retrieval scores ``(n_text, n_brain)``, higher = better (see :func:`score_matrix`)."""
        return score_matrix(self.score_kind, text_emb, brain_emb, self.curvature, self.angle_apex)

    def predict_brain(self, X_or_texts) -> np.ndarray | None:
        """Predicted atlas coefficients: the regression itself, or the RidgeCV decoder."""
        if self.family == "sklearn" or self.name == "mlp":
            return self.embed_text(X_or_texts)
        if self.decoder is None:
            return None
        return np.asarray(self.decoder.predict(self.embed_text(X_or_texts)), dtype=np.float32)


def load_trained(model_pt, device: str = "cpu") -> TrainedModel:
    """Load a ``model.pt`` written by :func:`train_fold`.

    The checkpoint holds pickled scikit-learn objects, so it is loaded with
    ``weights_only=False``: only load checkpoints you produced.
    """
    if not os.path.exists(model_pt):
        raise FileNotFoundError(f"{model_pt}: checkpoint not found")
    checkpoint = torch.load(model_pt, map_location="cpu", weights_only=False)
    return TrainedModel(checkpoint, device=device)


def train_fold_from_snakemake(smk) -> dict:
    """Call :func:`train_fold` with the fields of a Snakemake ``script:`` object (rule train_model)."""
    return train_fold(
        smk.wildcards.model, smk.input.text, smk.input.brain, smk.input.folds, smk.input.articles,
        smk.wildcards.section, smk.wildcards.fold, smk.params.model_params,
        out_model=smk.output.model, out_history=smk.output.history,
        out_test_embeddings=smk.output.test_embeddings, encoder=smk.wildcards.encoder,
        atlas=smk.wildcards.atlas, encoder_config=smk.params.encoder_config, seed=smk.params.seed,
        validation_fraction=smk.params.validation_fraction, device=smk.params.device,
        threads=smk.threads,
    )  # fmt: skip
