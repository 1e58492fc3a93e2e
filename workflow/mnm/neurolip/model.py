"""NeuroLIP networks: region-level brain embeddings and Text Token-Conditioned Attention.

* :class:`RegionEncoder`: each ROI's embedding is computed from its connectivity row (its
  edges to every ROI) by a 2-layer MLP, plus a learned ROI identity vector, then
  LayerNorm. Shape ``(subjects, R, R) -> (subjects, R, dim)``.
* :class:`TokenConditionedAttention` (TTCA): every text token is a query over the regions
  of a subject; its softmax attention over the valid regions weights the regions' values into
  a *token-specific brain embedding*. Single head, scaled dot product. Invalid regions get
  zero attention; padded tokens get zero attention and a zero embedding.
* :class:`NeuroLIP`: the two above plus a projection of the frozen text encoder's token
  vectors into the shared space and a learned logit scale (CLIP's, init 10, clamped to
  ``[1, 100]`` on the stored parameter after each step by :meth:`NeuroLIP.clamp_parameters`).

The paper (Yang & Li, 2025) gives no architecture details we could check; these are our
choices, documented in docs/neurolip.md.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["RegionEncoder", "TokenConditionedAttention", "NeuroLIP", "slot_similarity"]

MAX_LOGIT_SCALE = 100.0


class RegionEncoder(nn.Module):
    """ROI embeddings from connectivity rows (see the module docstring)."""

    def __init__(self, n_regions: int, dim: int, dropout: float = 0.1):
        super().__init__()
        self.row = nn.Sequential(nn.Linear(n_regions, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim))
        self.identity = nn.Parameter(0.02 * torch.randn(n_regions, dim))
        self.norm = nn.LayerNorm(dim)

    def forward(self, connectivity: torch.Tensor) -> torch.Tensor:
        """``(B, R, R)`` connectomes -> ``(B, R, dim)`` region embeddings."""
        return self.norm(self.row(connectivity) + self.identity)


class TokenConditionedAttention(nn.Module):
    """Text Token-Conditioned Attention (single head, scaled dot product)."""

    def __init__(self, dim: int):
        super().__init__()
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.dim = dim

    def forward(self, tokens, token_mask, regions, region_mask, pairwise: bool = True):
        """Token-specific brain embeddings and attention maps.

        Parameters
        ----------
        tokens : Tensor ``(J, K, dim)``
            Token embeddings of J texts (K tokens, padded).
        token_mask : Tensor ``(J, K)`` bool
            True for real tokens.
        regions : Tensor ``(I, R, dim)``
            Region embeddings of I subjects.
        region_mask : Tensor ``(I, R)`` bool
            True for valid regions (at least one per subject).
        pairwise : bool
            True: every subject with every text, outputs indexed ``[i, j, k]``. False: subject
            ``i`` with text ``i`` only (``I == J``), outputs indexed ``[i, k]``.

        Returns
        -------
        embeddings : Tensor ``(I, J, K, dim)`` or ``(I, K, dim)``
        attention : Tensor ``(I, J, K, R)`` or ``(I, K, R)``
            Rows sum to 1 over valid regions for real tokens, 0 for padded tokens.
        """
        if not pairwise and tokens.shape[0] != regions.shape[0]:
            raise ValueError(f"pairwise=False needs one text per subject, got {tokens.shape[0]} texts "
                             f"for {regions.shape[0]} subjects")
        # The output projection is applied to each region's value before the weighted sum:
        # the same result (attention rows sum to 1), computed on I*R vectors instead of I*J*K.
        query, key, value = self.query(tokens), self.key(regions), self.out(self.value(regions))
        if pairwise:
            logits = torch.einsum("jkd,ird->ijkr", query, key)
            region_ok, token_ok = region_mask[:, None, None, :], token_mask[None, :, :, None]
        else:
            logits = torch.einsum("ikd,ird->ikr", query, key)
            region_ok, token_ok = region_mask[:, None, :], token_mask[:, :, None]
        logits = logits.masked_fill(~region_ok, float("-inf")) / math.sqrt(self.dim)
        attention = torch.softmax(logits, dim=-1) * token_ok
        equation = "ijkr,ird->ijkd" if pairwise else "ikr,ird->ikd"
        embeddings = torch.einsum(equation, attention, value)
        return embeddings, attention


def slot_similarity(cosine: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean cosine over the tokens of one slot: ``(I, J, K)`` x ``(J, K)`` -> ``(I, J)``.

    Texts whose weights are all zero get 0.
    """
    weights = weights.to(cosine.dtype)
    return (cosine * weights).sum(-1) / weights.sum(-1).clamp(min=1.0)


class NeuroLIP(nn.Module):
    """Region encoder + token projection + TTCA + logit scale (module docstring)."""

    def __init__(self, n_regions: int, text_dim: int, dim: int = 64, dropout: float = 0.1,
                 logit_scale_init: float = 10.0):
        super().__init__()
        self.regions = RegionEncoder(n_regions, dim, dropout)
        self.tokens = nn.Sequential(nn.Linear(text_dim, dim), nn.LayerNorm(dim))
        self.attention = TokenConditionedAttention(dim)
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(logit_scale_init)))

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.log_logit_scale.exp()

    @torch.no_grad()
    def clamp_parameters(self) -> None:
        """Keep the logit scale in ``[1, MAX_LOGIT_SCALE]`` (on the stored parameter)."""
        self.log_logit_scale.clamp_(0.0, math.log(MAX_LOGIT_SCALE))

    def no_decay_parameter_names(self) -> set[str]:
        """Parameters excluded from weight decay besides biases and norms (as the pipeline's
        other models declare them for :mod:`mnm.training.loop`): ROI identities, logit scale."""
        return {"regions.identity", "log_logit_scale"}

    def forward(self, connectivity, region_mask, token_vectors, token_mask, pairwise: bool = True):
        """Cosine between each token-specific brain embedding and its token, and the attention.

        Returns
        -------
        cosine : Tensor ``(I, J, K)`` (or ``(I, K)``)
        attention : Tensor ``(I, J, K, R)`` (or ``(I, K, R)``)
        embeddings : Tensor ``(I, J, K, dim)`` (or ``(I, K, dim)``)
        """
        tokens = self.tokens(token_vectors)
        embeddings, attention = self.attention(tokens, token_mask, self.regions(connectivity), region_mask, pairwise)
        target = tokens[None] if pairwise else tokens
        cosine = F.cosine_similarity(embeddings, target.expand_as(embeddings), dim=-1, eps=1e-6)
        return cosine * (token_mask[None] if pairwise else token_mask), attention, embeddings
