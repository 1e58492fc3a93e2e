"""Building blocks, the model protocol and the one implementation of each shared loss/score.

Every torch model trained by :mod:`mnm.training` follows :class:`TextBrainModel`: the trainer
only calls these methods, so MNM, NeuroConText and the MLP regression share one loop. The
encoders of MNM and NeuroConText are built by the same :func:`make_encoder`, so the two models
differ only in their heads and losses (a fair comparison at matched width and dropout).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "TextBrainModel",
    "ResidualHead",
    "make_encoder",
    "symmetric_info_nce",
    "pairwise_pearson",
]


@runtime_checkable
class TextBrainModel(Protocol):
    """Protocol of the torch models trained per fold (see docs/architecture.md).

    Models may also define ``clamp_parameters()``, called by the trainer after every optimiser
    step to keep learnable scalars (curvature, scales, logit scale) inside their bounds on the
    *stored* parameters (a clamp inside ``forward`` would have zero gradient past the bound).
    """

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
    """NeuroConText's residual block ``LayerNorm(x + Dropout(Linear(GELU(x))))``.

    Parameters
    ----------
    dim : int
        Feature dimension (input = output).
    dropout : float
        Dropout probability on the residual branch.
    """

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.fc = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.layer_norm(x + self.dropout(self.fc(F.gelu(x))))


def make_encoder(in_dim: int, latent_dim: int, dropout: float, n_residual: int = 3) -> nn.Sequential:
    """``Linear(in_dim -> latent_dim)`` followed by ``n_residual`` :class:`ResidualHead` blocks.

    With ``n_residual=3`` this is NeuroConText's text encoder (its "projection head" is a
    linear projection followed by one residual block, then two more residual blocks) and its
    brain encoder (a linear projection and three residual blocks); MNM uses the same encoders.
    The output ends in LayerNorm: its norm is about ``sqrt(latent_dim)`` for every input.
    """
    if in_dim < 1 or latent_dim < 1:
        raise ValueError(f"encoder dims must be >= 1, got in_dim={in_dim}, latent_dim={latent_dim}")
    return nn.Sequential(nn.Linear(in_dim, latent_dim),
                         *[ResidualHead(latent_dim, dropout) for _ in range(n_residual)])


def symmetric_info_nce(logits: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP) of a square logit matrix whose matching pairs lie on the diagonal.

    Parameters
    ----------
    logits : torch.Tensor, shape (n, n)
        ``logits[i, j]`` scores text ``i`` against brain ``j`` (already divided by the
        temperature).

    Returns
    -------
    torch.Tensor
        Mean of the text->brain (rows) and brain->text (columns) cross-entropies.
    """
    if logits.ndim != 2 or logits.shape[0] != logits.shape[1]:
        raise ValueError(f"symmetric_info_nce needs a square matrix, got {tuple(logits.shape)}")
    targets = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def pairwise_pearson(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Pearson correlation between every row of ``pred`` and every row of ``true``.

    Parameters
    ----------
    pred : torch.Tensor, shape (n_text, d)
        Predicted coefficient vectors.
    true : torch.Tensor, shape (n_brain, d)
        Candidate coefficient vectors.

    Returns
    -------
    torch.Tensor, shape (n_text, n_brain)
        Constant rows get correlation 0 (not NaN).
    """
    pred = pred - pred.mean(dim=1, keepdim=True)
    true = true - true.mean(dim=1, keepdim=True)
    return F.normalize(pred, dim=1) @ F.normalize(true, dim=1).T
