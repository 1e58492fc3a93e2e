"""NeuroLIP losses: CALT, sensitive-attribute disentanglement, negative gradient, total.

CALT (Cross-modal Alignment via Localized Tokens)
    For one attribute (the diagnosis, or a sensitive attribute), the score of subject ``i``
    against text ``j`` is the mean, over the tokens of that attribute's slot in text ``j``,
    of the cosine between the token-specific brain embedding of ``i`` (TTCA conditioned on
    the token) and the token's embedding. The loss is a symmetric InfoNCE over the batch on
    ``logit_scale * score``. Phenotype texts repeat (many subjects share a diagnosis), so a
    pair counts as positive when both subjects have the same value of the attribute
    (multi-positive InfoNCE: mean log-probability of the positives, SupCon style), not only
    on the diagonal.
Disentanglement
    Per subject, the attention over regions of its disease tokens (mean over the tokens) and
    of its tokens of one sensitive attribute; the loss is their cosine similarity, averaged
    over subjects and sensitive attributes: minimising it maximises the cosine distance
    ``1 - similarity`` between where disease and sensitive tokens look.
Negative gradient
    CALT of the sensitive attributes enters the total with a negative weight (the paper:
    "reverses the sign of CALT loss on sensitive attributes"), so training ascends it and
    discourages aligning brain embeddings with sex/site tokens. The logit scale is detached
    in that term so the ascent cannot be won by shrinking the temperature; the term is
    bounded because cosines are and the scale is clamped.

Total: ``CALT_diagnosis + w_sensitive * mean_a CALT_a + lambda_disentangle * disentangle``
with ``w_sensitive = -lambda_negative`` when the negative gradient is on, else
``+lambda_sensitive_align`` (plain alignment of the whole phenotype text: the ablation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

__all__ = [
    "VARIANTS",
    "LossWeights",
    "variant_weights",
    "multi_positive_info_nce",
    "calt_loss",
    "disentanglement_loss",
]

#: Variants trained per fold: the full model and its ablations.
VARIANTS = ("full", "no_fairness", "no_disentangle", "no_negative")


@dataclass(frozen=True)
class LossWeights:
    """Weights of one variant: ``sensitive`` (signed weight of the mean sensitive CALT) and
    ``disentangle``."""

    sensitive: float
    disentangle: float


def variant_weights(variant: str, lambda_disentangle: float, lambda_negative: float,
                    lambda_sensitive_align: float) -> LossWeights:
    """Loss weights of a variant.

    ``full``: negative gradient and disentanglement; ``no_fairness``: neither (sensitive
    tokens aligned like the others); ``no_disentangle`` / ``no_negative``: one of the two.
    """
    if variant not in VARIANTS:
        raise ValueError(f"neurolip variant must be one of {VARIANTS}, got {variant!r}")
    negative = variant in ("full", "no_disentangle")
    disentangle = variant in ("full", "no_negative")
    return LossWeights(sensitive=-lambda_negative if negative else lambda_sensitive_align,
                       disentangle=lambda_disentangle if disentangle else 0.0)


def multi_positive_info_nce(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE with several positives per row and column.

    Row ``i`` contributes ``-mean_{j positive} log softmax_j(logits[i])``; column ``j`` the
    same over ``i``; rows / columns without a positive are skipped. Returns the mean of the
    row and column averages.
    """
    positives = positives.to(logits.dtype)

    def one_side(log_prob, dim):
        count = positives.sum(dim)
        keep = count > 0
        return (-(log_prob * positives).sum(dim)[keep] / count[keep]).mean()

    return 0.5 * (one_side(logits.log_softmax(dim=1), 1) + one_side(logits.log_softmax(dim=0), 0))


def calt_loss(similarity: torch.Tensor, brain_values: torch.Tensor, text_values: torch.Tensor,
              logit_scale) -> torch.Tensor:
    """CALT for one attribute.

    Parameters
    ----------
    similarity : Tensor ``(I, J)``
        Slot scores of subject ``i`` against text ``j`` (:func:`mnm.neurolip.model.slot_similarity`).
    brain_values, text_values : Tensor ``(I,)``, ``(J,)``
        Attribute value (integer code) of each subject and of each text.
    logit_scale : float or Tensor
    """
    positives = brain_values[:, None] == text_values[None, :]
    return multi_positive_info_nce(logit_scale * similarity, positives)


def _mean_attention(attention: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    weights = tokens.to(attention.dtype)[..., None]
    return (attention * weights).sum(-2) / weights.sum(-2).clamp(min=1.0)


def disentanglement_loss(attention: torch.Tensor, disease_tokens: torch.Tensor,
                         sensitive_tokens: list[torch.Tensor]) -> torch.Tensor:
    """Cosine similarity between disease-token and sensitive-token attention maps.

    Parameters
    ----------
    attention : Tensor ``(I, K, R)``
        Each subject's attention for the tokens of its own text.
    disease_tokens : Tensor ``(I, K)`` bool
    sensitive_tokens : list of Tensor ``(I, K)`` bool
        One mask per sensitive attribute.

    Returns
    -------
    Tensor
        Mean over attributes and over subjects having both kinds of tokens (0 if none).
        Minimising it maximises the cosine distance ``1 - similarity`` between the maps. The
        sensitive maps are a fixed reference (no gradient): the disease attention moves away
        from where the sensitive tokens look, rather than the reverse.
    """
    disease = _mean_attention(attention, disease_tokens)
    terms = []
    for tokens in sensitive_tokens:
        both = disease_tokens.any(-1) & tokens.any(-1)
        if both.any():
            sensitive = _mean_attention(attention, tokens).detach()  # the reference: disease maps move
            terms.append(F.cosine_similarity(disease[both], sensitive[both], dim=-1, eps=1e-12).mean())
    if not terms:
        return attention.sum() * 0.0
    return torch.stack(terms).mean()
