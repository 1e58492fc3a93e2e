"""Building blocks and the model protocol shared by the trainable text-brain models.

Every torch model trained by :mod:`mnm.train` follows :class:`TextBrainModel`: the trainer
only calls these methods, so MNM, NeuroConText and the MLP regression share one loop.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "TextBrainModel",
    "ResidualHead",
    "ProjectionHead",
    "symmetric_info_nce",
    "pairwise_pearson",
]


@runtime_checkable
class TextBrainModel(Protocol):
    """Protocol of the torch models trained per fold (see docs/architecture.md)."""

    def encode_text(self, x: torch.Tensor) -> torch.Tensor:
        """Map standardised text features ``(n, d_text)`` to embeddings as scored."""

    def encode_brain(self, y: torch.Tensor) -> torch.Tensor:
        """Map brain coefficients ``(n, d_brain)`` to embeddings as scored."""

    def loss(self, text_emb: torch.Tensor, brain_emb: torch.Tensor, n_active: torch.Tensor) -> dict:
        """Return ``{"loss": total, <term>: value, ...}`` for a batch of matching pairs."""

    def score(self, text_emb: torch.Tensor, brain_emb: torch.Tensor) -> torch.Tensor:
        """Return the ``(n_text, n_brain)`` retrieval scores, higher = better match."""

    def no_decay_parameter_names(self) -> set:
        """Names of parameters excluded from weight decay (scales, temperatures)."""

    def log_scalars(self) -> dict:
        """Scalars worth logging per epoch (temperature, curvature, ...)."""


class ResidualHead(nn.Module):
    """Residual block ``LayerNorm(x + Dropout(GELU(Linear(x))))`` (NeuroConText's head).

    Parameters
    ----------
    dim : int
        Feature dimension (input = output).
    dropout : float
        Dropout probability after the activation.
    """

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.fc = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.layer_norm(x + self.dropout(F.gelu(self.fc(x))))


class ProjectionHead(nn.Module):
    """CLIP-style projection ``LayerNorm(p + Dropout(Linear(GELU(p))))`` with ``p = Linear(x)``.

    Parameters
    ----------
    in_dim, out_dim : int
        Input and output feature dimensions.
    dropout : float
        Dropout probability.
    """

    def __init__(self, in_dim: int, out_dim: int, dropout: float):
        super().__init__()
        self.projection = nn.Linear(in_dim, out_dim)
        self.fc = nn.Linear(out_dim, out_dim)
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        projected = self.projection(x)
        return self.layer_norm(projected + self.dropout(self.fc(F.gelu(projected))))


def symmetric_info_nce(logits: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of a square logit matrix whose matching pairs lie on the diagonal.

    Parameters
    ----------
    logits : torch.Tensor, shape (n, n)
        ``logits[i, j]`` scores text ``i`` against brain ``j``.

    Returns
    -------
    torch.Tensor
        Mean of the text->brain (rows) and brain->text (columns) cross-entropies.
    """
    if logits.ndim != 2 or logits.shape[0] != logits.shape[1]:
        raise ValueError(f"symmetric_info_nce needs a square matrix, got {tuple(logits.shape)}")
    targets = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def pairwise_pearson(pred: torch.Tensor, true: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation between every row of ``pred`` and every row of ``true``.

    Parameters
    ----------
    pred : torch.Tensor, shape (n_text, d)
        Predicted coefficient vectors.
    true : torch.Tensor, shape (n_brain, d)
        Candidate coefficient vectors.
    eps : float
        Guards constant rows (their correlation is 0).

    Returns
    -------
    torch.Tensor, shape (n_text, n_brain)
    """
    pred = pred - pred.mean(dim=1, keepdim=True)
    true = true - true.mean(dim=1, keepdim=True)
    pred = pred / (pred.norm(dim=1, keepdim=True) + eps)
    true = true / (true.norm(dim=1, keepdim=True) + eps)
    return pred @ true.T
