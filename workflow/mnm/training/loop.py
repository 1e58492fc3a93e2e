"""The optimisation recipe shared by every torch model (MNM variants, NeuroConText, MLP).

AdamW over minibatches, a linear warm-up followed by a cosine (or constant) learning-rate
schedule stepped per optimiser step, the model's ``clamp_parameters()`` after every step,
inner-validation retrieval after every epoch, early stopping after ``patience`` epochs without
improvement, and the best epoch's weights restored at the end. One history row per epoch
records the step count, learning rate, loss terms, the model's scalars and the validation
metrics, so the whole run can be read back from ``history.parquet``.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass, fields

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from mnm import metrics

__all__ = ["Recipe", "make_optimizer", "train_torch_model", "encode", "validation_metrics", "SELECTION_METRICS"]

log = logging.getLogger(__name__)

#: Validation metrics an early stopping may follow (all: higher is better).
SELECTION_METRICS = ("val_mean_recall", "val_mix_and_match")


@dataclass(frozen=True)
class Recipe:
    """Optimiser settings (config ``models.training``).

    Attributes
    ----------
    batch_size : int
        Pairs per step (the in-batch negatives of the contrastive losses); capped at the
        number of fit pairs; a last batch of fewer than 2 pairs is dropped.
    max_epochs : int
        Upper bound on the number of passes over the fit set.
    lr, weight_decay : float
        AdamW settings (no decay on biases, norms and the models' special scalars).
    warmup_epochs : float
        Linear warm-up length, in epochs (converted to steps).
    schedule : {"cosine", "constant"}
        Learning rate after the warm-up: cosine decay to 0 at ``max_epochs``, or constant.
    patience : int or None
        Stop after this many epochs without a better validation metric (None: never).
    metric : str
        The validation metric of :data:`SELECTION_METRICS` that chooses the epoch.
    """

    batch_size: int = 48
    max_epochs: int = 60
    lr: float = 3e-4
    weight_decay: float = 0.05
    warmup_epochs: float = 5.0
    schedule: str = "cosine"
    patience: int | None = 10
    metric: str = "val_mean_recall"

    @classmethod
    def from_config(cls, config: dict) -> Recipe:
        """Build from a config mapping; unknown keys are an error naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise KeyError(f"models.training: unknown key(s) {unknown}; known: {sorted(known)}")
        recipe = cls(**dict(config))
        if recipe.schedule not in ("cosine", "constant"):
            raise ValueError(f"models.training.schedule: {recipe.schedule!r} is not cosine/constant")
        if recipe.metric not in SELECTION_METRICS:
            raise ValueError(f"models.training.metric: {recipe.metric!r} not in {SELECTION_METRICS}")
        return recipe

    def as_dict(self) -> dict:
        """Plain dict (for checkpoints and logs)."""
        return asdict(self)


def _parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no decay on the model's special parameters, biases and norms (1-D)."""
    excluded = set(model.no_decay_parameter_names())
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if name in excluded or parameter.ndim < 2 else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, weight_decay: float, lr: float) -> torch.optim.AdamW:
    """AdamW over :func:`_parameter_groups`: the optimiser of every torch model of the project."""
    return torch.optim.AdamW(_parameter_groups(model, float(weight_decay)), lr=float(lr))


def _scheduler(optimizer, recipe: Recipe, steps_per_epoch: int):
    """Linear warm-up then cosine decay (or constant), stepped once per optimiser step."""
    from torch.optim import lr_scheduler

    total = max(1, recipe.max_epochs * steps_per_epoch)
    warmup = min(total - 1, int(round(recipe.warmup_epochs * steps_per_epoch)))
    after = (lr_scheduler.CosineAnnealingLR(optimizer, T_max=total - warmup)
             if recipe.schedule == "cosine" else lr_scheduler.ConstantLR(optimizer, factor=1.0))
    if warmup <= 0:
        return after
    ramp = lr_scheduler.LinearLR(optimizer, start_factor=1.0 / (warmup + 1), total_iters=warmup)
    return lr_scheduler.SequentialLR(optimizer, [ramp, after], milestones=[warmup])


@torch.no_grad()
def encode(encoder, matrix: np.ndarray, device, batch_size: int = 4096) -> np.ndarray:
    """Apply ``encoder`` in inference batches and return float32 numpy."""
    outputs = []
    for start in range(0, len(matrix), batch_size):
        # a copy: inputs may be read-only Arrow buffers
        chunk = torch.tensor(matrix[start : start + batch_size], dtype=torch.float32, device=device)
        outputs.append(encoder(chunk).float().cpu().numpy())
    if not outputs:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(outputs)


def validation_metrics(scores: np.ndarray) -> dict:
    """Recall@1/@10 and Mix&Match in both directions of a square validation score matrix.

    ``val_mean_recall`` averages the four recalls, ``val_mix_and_match`` the two Mix&Match.
    Ties count against the model (:mod:`mnm.metrics`), so a collapsed model scores 0 recall.
    """
    scores = np.asarray(scores, dtype=np.float64)
    values = {}
    for direction, matrix in (("t2b", scores), ("b2t", scores.T)):
        for k in (1, 10):
            values[f"val_recall_at_{k}_{direction}"] = metrics.recall_at_k(matrix, k)
    values["val_mean_recall"] = float(np.mean(list(values.values())))
    values["val_mix_and_match"] = float(np.mean([metrics.mix_and_match(scores),
                                                 metrics.mix_and_match(scores.T)]))
    return values


@torch.no_grad()
def _validation_row(model, X_val, Y_val, device) -> dict:
    model.eval()
    text = torch.as_tensor(encode(model.encode_text, X_val, device), device=device)
    brain = torch.as_tensor(encode(model.encode_brain, Y_val, device), device=device)
    return validation_metrics(model.score(text, brain).double().cpu().numpy())


def _selection_key(row: dict, metric: str) -> tuple[float, float]:
    """What epoch selection maximises: the recipe's metric, then validation Mix&Match.

    Recall@K moves in steps of 1/n on n validation pairs and saturates when n <= K (a small
    corpus's inner validation set), so on its own it ties often, and a tie kept the first
    epoch, at worst the untrained epoch 0. Mix&Match (mean percentile rank over all n^2
    pairs) is much finer and breaks those ties.
    """
    return float(row[metric]), float(row["val_mix_and_match"])


def train_torch_model(
    model: torch.nn.Module,
    X_fit: np.ndarray,
    Y_fit: np.ndarray,
    n_active_fit: np.ndarray,
    X_val: np.ndarray,
    Y_val: np.ndarray,
    recipe: Recipe,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
    fit_rows: np.ndarray | None = None,
) -> tuple[pd.DataFrame, int]:
    """Train a protocol model with the :class:`Recipe` and restore its best epoch.

    Parameters
    ----------
    model : torch.nn.Module
        Follows :class:`mnm.models.base.TextBrainModel`; moved to ``device`` and left with
        the best epoch's weights loaded, in eval mode.
    X_fit, Y_fit, n_active_fit : array
        Standardised text features, brain coefficients and active-component counts.
    X_val, Y_val : array
        Inner-validation pairs (same preprocessing).
    recipe : Recipe
        Optimiser settings.
    seed : int
        Seeds the batch order (dropout and initialisation are seeded by the caller).
    fit_rows : array of int, optional
        Train on these rows of ``X_fit``, ``Y_fit`` and ``n_active_fit`` (the same batches as
        passing those rows' copies), so that large inputs (Text2Brain's 20,000 voxel maps,
        2.35 GB) are not copied.

    Returns
    -------
    history : pandas.DataFrame
        One row per epoch (epoch 0 = before training): ``step``, ``lr``, ``train_loss``,
        ``train_<term>``, the model's ``log_scalars``, validation metrics, ``is_best``.
    best_epoch : int
        First epoch with the highest ``recipe.metric``, ties broken by Mix&Match
        (:func:`_selection_key`); early stopping counts from it.
    """
    device = torch.device(device)
    model.to(device)
    X = torch.as_tensor(X_fit, dtype=torch.float32)
    Y = torch.as_tensor(Y_fit, dtype=torch.float32)
    R = torch.as_tensor(n_active_fit, dtype=torch.float32)
    fit = torch.arange(len(X)) if fit_rows is None else torch.as_tensor(np.asarray(fit_rows, dtype=np.int64))
    batch_size = max(2, min(int(recipe.batch_size), len(fit)))
    steps_per_epoch = max(1, len(fit) // batch_size + (len(fit) % batch_size >= 2))
    optimizer = make_optimizer(model, recipe.weight_decay, recipe.lr)
    scheduler = _scheduler(optimizer, recipe, steps_per_epoch)
    generator = torch.Generator().manual_seed(int(seed))

    clamp = getattr(model, "clamp_parameters", None)
    rows = [{"epoch": 0, "step": 0, "lr": 0.0, "train_loss": np.nan, **model.log_scalars(),
             **_validation_row(model, X_val, Y_val, device)}]
    best_epoch, best_value = 0, _selection_key(rows[0], recipe.metric)
    best_state = copy.deepcopy(model.state_dict())
    step = 0
    for epoch in tqdm(range(1, int(recipe.max_epochs) + 1), desc="epochs", disable=not progress):
        model.train()
        sums, n_seen = {}, 0
        for batch in fit[torch.randperm(len(fit), generator=generator)].split(batch_size):
            if len(batch) < 2:
                continue
            x, y, r = X[batch].to(device), Y[batch].to(device), R[batch].to(device)
            terms = model.loss(model.encode_text(x), model.encode_brain(y), r)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()
            scheduler.step()
            if clamp is not None:
                clamp()
            step += 1
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach()) * len(batch)
            n_seen += len(batch)
        row = {"epoch": epoch, "step": step, "lr": float(optimizer.param_groups[0]["lr"])}
        row.update({("train_loss" if k == "loss" else f"train_{k}"): v / max(n_seen, 1) for k, v in sums.items()})
        row.update(model.log_scalars())
        row.update(_validation_row(model, X_val, Y_val, device))
        rows.append(row)
        if _selection_key(row, recipe.metric) > best_value:
            best_epoch, best_value = epoch, _selection_key(row, recipe.metric)
            best_state = copy.deepcopy(model.state_dict())
        log.debug("epoch %d: loss %.4f, %s %.4f", epoch, row.get("train_loss", np.nan),
                  recipe.metric, row[recipe.metric])
        if recipe.patience is not None and epoch - best_epoch >= int(recipe.patience):
            log.info("early stop at epoch %d (best %d, %s %.4f)", epoch, best_epoch, recipe.metric, best_value[0])
            break
    model.load_state_dict(best_state)
    model.eval()
    history = pd.DataFrame(rows)
    history["is_best"] = history["epoch"] == best_epoch
    return history, best_epoch
