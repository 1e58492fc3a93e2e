"""NeuroConText baseline (Ghayem et al., MICCAI 2024): Euclidean CLIP between text and brain.

Text and brain encoders: a linear projection to ``latent_dim`` and three
:class:`~mnm.models.base.ResidualHead` blocks (:func:`~mnm.models.base.make_encoder`, shared
with MNM); both outputs L2-normalised, so the score is the cosine similarity. Loss: symmetric
InfoNCE on ``logit_scale * cosine``, with a learnable logit scale (a multiplier, initialised at
10 as in NeuroConText, kept in log space so it stays positive, and clamped to
``[1, logit_scale_max]`` on the stored parameter after each optimiser step, as CLIP does).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mnm.models.base import make_encoder, symmetric_info_nce

__all__ = ["NeuroConText"]


class NeuroConText(nn.Module):
    """Euclidean contrastive text-brain model following the trainer's protocol.

    Parameters
    ----------
    text_dim, brain_dim : int
        Input dimensions (text embedding size, number of atlas components).
    latent_dim : int
        Shared embedding dimension.
    dropout : float
        Dropout in every head.
    logit_scale_init : float
        Initial multiplier of the cosine similarities in the loss.
    logit_scale_max : float
        Upper clamp of the multiplier.
    """

    def __init__(
        self,
        text_dim: int,
        brain_dim: int,
        latent_dim: int = 512,
        dropout: float = 0.6,
        logit_scale_init: float = 10.0,
        logit_scale_max: float = 100.0,
    ):
        super().__init__()
        if logit_scale_init <= 0:
            raise ValueError(f"logit_scale_init must be positive, got {logit_scale_init}")
        self.text_encoder = make_encoder(text_dim, latent_dim, dropout)
        self.brain_encoder = make_encoder(brain_dim, latent_dim, dropout)
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(logit_scale_init)))
        self.logit_scale_max = float(logit_scale_max)

    @property
    def logit_scale(self) -> torch.Tensor:
        """The multiplier applied to cosine similarities in the loss."""
        return self.log_logit_scale.exp()

    @torch.no_grad()
    def clamp_parameters(self) -> None:
        """Keep the stored logit scale in ``[1, logit_scale_max]`` (after each optimiser step)."""
        self.log_logit_scale.clamp_(0.0, math.log(self.logit_scale_max))

    def encode_text(self, x: torch.Tensor) -> torch.Tensor:
        """Return L2-normalised text embeddings ``(n, latent_dim)``."""
        return F.normalize(self.text_encoder(x), dim=-1)

    def encode_brain(self, y: torch.Tensor) -> torch.Tensor:
        """Return L2-normalised brain embeddings ``(n, latent_dim)``."""
        return F.normalize(self.brain_encoder(y), dim=-1)

    def score(self, text_emb: torch.Tensor, brain_emb: torch.Tensor) -> torch.Tensor:
        """Cosine similarity matrix ``(n_text, n_brain)``."""
        return text_emb @ brain_emb.T

    def loss(self, text_emb: torch.Tensor, brain_emb: torch.Tensor, n_active=None) -> dict:
        """Symmetric InfoNCE; ``n_active`` is unused (kept for the shared protocol)."""
        info_nce = symmetric_info_nce(self.logit_scale * self.score(text_emb, brain_emb))
        return {"loss": info_nce, "info_nce": info_nce.detach()}

    def no_decay_parameter_names(self) -> set:
        """The logit scale is not weight-decayed."""
        return {"log_logit_scale"}

    def log_scalars(self) -> dict:
        """Current logit scale."""
        return {"logit_scale": float(self.logit_scale.detach())}
