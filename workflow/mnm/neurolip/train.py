"""Training NeuroLIP on one fold: mini-batches of subjects, epoch chosen on a validation split.

Each step pairs every subject of the batch with every subject's phenotype text (TTCA over all
pairs), computes CALT for the diagnosis and for each sensitive attribute, the
disentanglement loss on each subject's own text, and combines them with the variant's
weights (:mod:`mnm.neurolip.losses`). AdamW; no weight decay on biases, norms, ROI identity
vectors and the logit scale. After every epoch the diagnosis CALT is measured on a
validation split carved from the training subjects (stratified by diagnosis) and the best
epoch's weights are kept; the test fold is never looked at.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from mnm.neurolip.losses import LossWeights, calt_loss, disentanglement_loss
from mnm.neurolip.model import NeuroLIP, slot_similarity
from mnm.neurolip.tensors import Cohort, TokenBank
from mnm.training.loop import make_optimizer

__all__ = ["TrainSettings", "batch_losses", "train_model"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings (config ``neurolip.model``)."""

    dim: int = 64
    dropout: float = 0.1
    epochs: int = 40
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    logit_scale_init: float = 10.0
    seed: int = 0


def batch_losses(model: NeuroLIP, batch: Cohort, bank: TokenBank, sensitive, weights: LossWeights) -> dict:
    """Loss terms and their weighted ``total`` for one batch of subjects (module docstring)."""
    rows = batch.text_rows
    cosine, attention, _ = model(batch.connectivity, batch.region_valid, bank.vectors[rows], bank.mask[rows])
    scale = model.logit_scale
    diagnosis = batch.codes["diagnosis"]
    parts = {"calt_diagnosis": calt_loss(slot_similarity(cosine, bank.slot_mask("diagnosis", rows)),
                                         diagnosis, diagnosis, scale)}
    sensitive_terms, sensitive_masks = [], []
    for name in sensitive:
        mask = bank.slot_mask(name, rows)
        has = mask.any(-1)
        sensitive_masks.append(mask)
        if not has.any():
            continue
        codes = batch.codes[name]
        term_scale = scale.detach() if weights.sensitive < 0 else scale
        parts[f"calt_{name}"] = calt_loss(slot_similarity(cosine[:, has], mask[has]), codes, codes[has], term_scale)
        sensitive_terms.append(parts[f"calt_{name}"])
    own = torch.arange(len(batch))
    parts["disentangle"] = disentanglement_loss(attention[own, own], bank.slot_mask("diagnosis", rows),
                                                sensitive_masks)
    total = parts["calt_diagnosis"] + weights.disentangle * parts["disentangle"]
    if sensitive_terms:
        total = total + weights.sensitive * torch.stack(sensitive_terms).mean()
    parts["total"] = total
    return parts


def _optimizer(model: NeuroLIP, settings: TrainSettings) -> torch.optim.Optimizer:
    """AdamW with the pipeline recipe's parameter groups (no decay on biases, norms and the
    model's :meth:`~NeuroLIP.no_decay_parameter_names`)."""
    return make_optimizer(model, settings.weight_decay, settings.lr)


def _batches(cohort: Cohort, batch_size: int, generator: torch.Generator):
    order = torch.randperm(len(cohort), generator=generator)
    n_batches = max(1, int(np.ceil(len(cohort) / batch_size)))
    for chunk in torch.tensor_split(order, n_batches):
        yield Cohort(cohort.subjects.iloc[chunk.numpy()], cohort.connectivity[chunk], cohort.region_valid[chunk],
                     {k: v[chunk] for k, v in cohort.codes.items()}, cohort.text_rows[chunk])


def train_model(train: Cohort, validation: Cohort, bank: TokenBank, sensitive, weights: LossWeights,
                settings: TrainSettings) -> tuple[NeuroLIP, pd.DataFrame]:
    """Fit a NeuroLIP model; return it (best validation epoch) and its per-epoch history.

    Returns
    -------
    model : NeuroLIP
        In eval mode, with the weights of the epoch of lowest validation diagnosis CALT.
    history : pandas.DataFrame
        ``epoch``, the training means of every loss term (``train_<term>``), the validation
        terms (``validation_<term>``) and ``selected`` (true on the kept epoch).
    """
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    model = NeuroLIP(train.connectivity.shape[1], bank.vectors.shape[-1], settings.dim, settings.dropout,
                     settings.logit_scale_init)
    optimizer = _optimizer(model, settings)
    history, best, best_state = [], float("inf"), None
    for epoch in range(settings.epochs):
        model.train()
        sums: dict = {}
        n_batches = 0
        for batch in _batches(train, settings.batch_size, generator):
            parts = batch_losses(model, batch, bank, sensitive, weights)
            optimizer.zero_grad()
            parts["total"].backward()
            optimizer.step()
            model.clamp_parameters()
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach())
            n_batches += 1
        model.eval()
        with torch.no_grad():
            valid_parts = batch_losses(model, validation, bank, sensitive, weights)
        row = {"epoch": epoch, **{f"train_{k}": v / n_batches for k, v in sums.items()},
               **{f"validation_{k}": float(v) for k, v in valid_parts.items()},
               "logit_scale": float(model.logit_scale.detach())}
        history.append(row)
        if row["validation_calt_diagnosis"] < best:
            best, best_state = row["validation_calt_diagnosis"], copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    history = pd.DataFrame(history)
    history["selected"] = history.index == history["validation_calt_diagnosis"].idxmin()
    logger.info("best epoch %d of %d (validation diagnosis CALT %.4f)",
                int(history.loc[history["selected"], "epoch"].iloc[0]), settings.epochs, best)
    return model, history
