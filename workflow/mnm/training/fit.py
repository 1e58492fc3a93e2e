"""Fit one model on one split: one small trainer per model family.

Each trainer takes the aligned inputs, a :class:`~mnm.training.data.Split`, the model's config
section and the shared :class:`~mnm.training.loop.Recipe`, and returns the fitted
:class:`~mnm.trained.TrainedModel`, its per-epoch history and the chosen epoch. Orchestration
(which folds, which files) lives in :mod:`mnm.train`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from mnm.registry import MODEL_NAMES, TORCH_MODELS, VOXEL_MODELS
from mnm.trained import RidgeModel, Standardizer, TfidfModel, TorchModel, VoxelMapModel, build_torch_module
from mnm.training.data import FoldInputs, Split
from mnm.training.loop import Recipe, train_torch_model, validation_metrics

__all__ = ["fit_model", "TRAINERS"]

#: Candidate alphas of the RidgeCV decoder (text embedding -> coefficients) of contrastive models.
DECODER_ALPHAS = tuple(np.logspace(-2, 4, 7))
#: Keys of a model's config section that are not constructor arguments.
NON_CONSTRUCTOR_KEYS = ("training",)


def _dims(data: FoldInputs) -> dict:
    """Initial metadata: the input sizes every model checks its inputs against."""
    return {"text_dim": int(data.text.shape[1]), "brain_dim": int(data.brain.shape[1])}


def _single_row_history(text_emb_val, brain_val, alpha: float, train_loss: float) -> pd.DataFrame:
    from mnm.scoring import score_matrix

    row = {"epoch": 1, "step": 1, "train_loss": train_loss, "alpha": alpha,
           **validation_metrics(score_matrix("correlation", text_emb_val, brain_val)), "is_best": True}
    return pd.DataFrame([row])


def _train_module(name, data: FoldInputs, split: Split, params: dict, recipe: Recipe, seed: int,
                  device, progress: bool, **module_inputs):
    """Standardise the text on the fit set, build the module and train it with the recipe.

    ``module_inputs`` are constructor arguments that come from the data, not the config
    (Text2Brain's mask). Returns ``(module, standardizer, constructor, history, best_epoch)``.
    """
    standardizer = Standardizer.fit(data.text[split.fit])
    X = standardizer.transform(data.text)
    constructor = {k: v for k, v in params.items() if k not in NON_CONSTRUCTOR_KEYS}
    torch.manual_seed(int(seed))
    module = build_torch_module(name, X.shape[1], data.brain.shape[1], **constructor, **module_inputs)
    history, best_epoch = train_torch_model(
        module, X, data.brain, data.n_active, X[split.validation], data.brain[split.validation], recipe,
        seed=seed, device=device, progress=progress, fit_rows=split.fit,
    )  # fmt: skip
    return module, standardizer, constructor, history, best_epoch


def fit_torch(name, data: FoldInputs, split: Split, params: dict, recipe: Recipe, seed: int,
              device, with_decoder: bool, progress: bool):
    """MNM variants, NeuroConText and the MLP: the shared torch recipe."""
    from mnm.models.regression import fit_ridge

    module, standardizer, constructor, history, best_epoch = _train_module(
        name, data, split, params, recipe, seed, device, progress)
    model = TorchModel(name, module, standardizer, constructor, _dims(data), device=device)
    if with_decoder and name != "mlp":
        text_emb = model.embed_text(data.text[split.fit])
        model.decoder = fit_ridge(text_emb, data.brain[split.fit], DECODER_ALPHAS)
    return model, history, best_epoch


def fit_voxel_map(name, data: FoldInputs, split: Split, params: dict, recipe: Recipe, seed: int,
                  device, with_decoder: bool, progress: bool):
    """Text2Brain: the shared torch recipe on the coarse KDE maps (its map is its own decoder)."""
    if data.brain_mask is None:
        raise ValueError(f"model {name} trains on voxel maps: pass the kde_4mm maps and mask "
                         "(rule kde_maps) to load_fold_inputs(kde_maps=...)")
    mask = np.asarray(data.brain_mask.dataobj) > 0
    module, standardizer, constructor, history, best_epoch = _train_module(
        name, data, split, params, recipe, seed, device, progress, mask=mask)
    model = VoxelMapModel(name, module, standardizer, constructor, _dims(data), data.brain_mask.affine,
                          device=device)
    return model, history, best_epoch


def fit_ridge_model(name, data: FoldInputs, split: Split, params: dict, recipe, seed, device,
                    with_decoder, progress):
    """RidgeCV on standardised text embeddings (closed form; no epochs)."""
    from mnm.models.regression import fit_ridge

    standardizer = Standardizer.fit(data.text[split.fit])
    X = standardizer.transform(data.text)
    ridge = fit_ridge(X[split.fit], data.brain[split.fit], params.get("alphas", DECODER_ALPHAS))
    model = RidgeModel(name, ridge, standardizer, _dims(data))
    predicted = ridge.predict(X)
    history = _single_row_history(predicted[split.validation], data.brain[split.validation], ridge.alpha,
                                  float(np.mean((predicted[split.fit] - data.brain[split.fit]) ** 2)))
    return model, history, 1


def fit_tfidf_model(name, data: FoldInputs, split: Split, params: dict, recipe, seed, device,
                    with_decoder, progress):
    """TF-IDF of the section text + RidgeCV (closed form; no epochs)."""
    from mnm.models.regression import fit_tfidf_ridge_counts

    if data.term_counts is None:
        raise ValueError("the tfidf model needs the section's term counts (pass term_counts, or articles_path "
                         "and section)")
    tfidf, predicted_fit = fit_tfidf_ridge_counts(data.term_counts.take(split.fit), data.brain[split.fit],
                                                  params.get("alphas", DECODER_ALPHAS),
                                                  params.get("max_features", 20000))
    model = TfidfModel(name, tfidf, _dims(data))
    history = _single_row_history(tfidf.predict_counts(data.term_counts.take(split.validation)),
                                  data.brain[split.validation], tfidf.ridge.alpha,
                                  float(np.mean((predicted_fit - data.brain[split.fit]) ** 2)))
    return model, history, 1


TRAINERS = {**{name: fit_torch for name in TORCH_MODELS}, **{name: fit_voxel_map for name in VOXEL_MODELS},
            "ridge": fit_ridge_model, "tfidf": fit_tfidf_model}


def fit_model(name: str, data: FoldInputs, split: Split, params: dict, recipe: Recipe, *,
              seed: int = 0, device="cpu", with_decoder: bool = True, progress: bool = False):
    """Fit model ``name`` on ``split.fit`` (epoch chosen on ``split.validation``).

    Returns
    -------
    model : mnm.trained.TrainedModel
        Its ``metadata`` holds only the input sizes; the caller adds the rest.
    history : pandas.DataFrame
        Per-epoch history (one row for closed-form models).
    best_epoch : int
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES}")
    return TRAINERS[name](name, data, split, params, recipe, seed, device, with_decoder, progress)
