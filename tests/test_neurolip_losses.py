"""NeuroLIP networks and losses: TTCA shapes and masking, each loss on a hand-worked case."""

from __future__ import annotations

import math

import pytest
import torch

from mnm.neurolip.losses import (
    LossWeights,
    calt_loss,
    disentanglement_loss,
    multi_positive_info_nce,
    variant_weights,
)
from mnm.neurolip.model import NeuroLIP, TokenConditionedAttention, slot_similarity


def _ttca_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(2, 4, 8, generator=g)  # J=2 texts, K=4 tokens
    token_mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    regions = torch.randn(3, 5, 8, generator=g)  # I=3 subjects, R=5 regions
    region_mask = torch.ones(3, 5, dtype=torch.bool)
    region_mask[0, 1] = region_mask[2, 4] = False
    return tokens, token_mask, regions, region_mask


def test_ttca_shapes_and_attention_rows():
    torch.manual_seed(0)
    ttca = TokenConditionedAttention(8)
    tokens, token_mask, regions, region_mask = _ttca_inputs()
    z, attention = ttca(tokens, token_mask, regions, region_mask)
    assert z.shape == (3, 2, 4, 8) and attention.shape == (3, 2, 4, 5)
    sums = attention.sum(-1)
    expected = token_mask[None].expand(3, 2, 4).float()
    torch.testing.assert_close(sums, expected)  # 1 for real tokens, 0 for padding
    assert (attention[0, :, :, 1] == 0).all() and (attention[2, :, :, 4] == 0).all()  # invalid regions
    assert (z[:, 0, 3] == 0).all() and (z[:, 1, 1:] == 0).all()  # padded tokens: zero embedding


def test_ttca_masked_region_and_padded_token_do_not_leak():
    torch.manual_seed(0)
    ttca = TokenConditionedAttention(8)
    tokens, token_mask, regions, region_mask = _ttca_inputs()
    z, attention = ttca(tokens, token_mask, regions, region_mask)
    regions2, tokens2 = regions.clone(), tokens.clone()
    regions2[0, 1] += 100.0  # an invalid region of subject 0
    tokens2[0, 3] -= 50.0  # a padded token of text 0
    z2, attention2 = ttca(tokens2, token_mask, regions2, region_mask)
    torch.testing.assert_close(z2, z)
    torch.testing.assert_close(attention2, attention)


def test_ttca_diagonal_mode_matches_pairwise_diagonal():
    torch.manual_seed(0)
    ttca = TokenConditionedAttention(8)
    tokens, token_mask, regions, region_mask = _ttca_inputs()
    tokens, token_mask = torch.cat([tokens, tokens[:1]]), torch.cat([token_mask, token_mask[:1]])  # J = I = 3
    z, attention = ttca(tokens, token_mask, regions, region_mask)
    z_own, attention_own = ttca(tokens, token_mask, regions, region_mask, pairwise=False)
    own = torch.arange(3)
    torch.testing.assert_close(z_own, z[own, own])
    torch.testing.assert_close(attention_own, attention[own, own])
    with pytest.raises(ValueError, match="one text per subject"):
        ttca(tokens[:2], token_mask[:2], regions, region_mask, pairwise=False)


def test_attention_is_softmax_of_scaled_dot_products():
    """Reference: a hand loop over regions with the layer's own projections."""
    torch.manual_seed(1)
    ttca = TokenConditionedAttention(8)
    tokens, token_mask, regions, region_mask = _ttca_inputs(1)
    _, attention = ttca(tokens, token_mask, regions, region_mask)
    with torch.no_grad():
        i, j, k = 2, 0, 1
        q = ttca.query(tokens[j, k])
        keys = ttca.key(regions[i])
        logits = torch.tensor([float(q @ keys[r]) / math.sqrt(8) for r in range(5)])
        logits[~region_mask[i]] = -math.inf
        torch.testing.assert_close(attention[i, j, k], torch.softmax(logits, 0))


def test_neurolip_forward_cosines_and_logit_scale_clamp():
    torch.manual_seed(0)
    model = NeuroLIP(n_regions=5, text_dim=6, dim=8)
    connectivity = torch.randn(3, 5, 5)
    region_mask = torch.ones(3, 5, dtype=torch.bool)
    tokens = torch.randn(2, 4, 6)
    token_mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    cosine, attention, z = model(connectivity, region_mask, tokens, token_mask)
    assert cosine.shape == (3, 2, 4) and attention.shape == (3, 2, 4, 5) and z.shape == (3, 2, 4, 8)
    assert cosine.abs().max() <= 1 + 1e-6 and (cosine[:, 0, 2:] == 0).all()
    with torch.no_grad():
        model.log_logit_scale.fill_(10.0)
    model.clamp_parameters()
    assert float(model.logit_scale.detach()) == pytest.approx(100.0)


def test_slot_similarity_is_mean_over_slot_tokens():
    cosine = torch.tensor([[[0.2, 0.4, 0.9], [0.1, 0.3, 0.5]]])  # (I=1, J=2, K=3)
    weights = torch.tensor([[True, True, False], [False, False, False]])
    got = slot_similarity(cosine, weights)
    torch.testing.assert_close(got, torch.tensor([[0.3, 0.0]]))


def _lse(*values):
    return math.log(sum(math.exp(v) for v in values))


def test_multi_positive_info_nce_hand_worked():
    logits = torch.tensor([[2.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.5, 3.0]])
    positives = torch.tensor([[True, False, True], [False, True, False], [False, False, False]])
    # rows 0 and 1 have positives, row 2 none; columns 0, 1, 2 each have one or more.
    row0 = -0.5 * ((2.0 - _lse(2, 0, 1)) + (1.0 - _lse(2, 0, 1)))
    row1 = -(1.0 - _lse(0, 1, 0))
    col0 = -(2.0 - _lse(2, 0, 1))
    col1 = -(1.0 - _lse(0, 1, 0.5))
    col2 = -(1.0 - _lse(1, 0, 3))
    expected = 0.5 * ((row0 + row1) / 2 + (col0 + col1 + col2) / 3)
    assert float(multi_positive_info_nce(logits, positives)) == pytest.approx(expected, rel=1e-6)


def test_calt_hand_worked_with_repeated_values():
    similarity = torch.tensor([[0.5, -0.5, 0.5], [0.2, 0.1, 0.0]])  # 2 subjects x 3 texts
    brain = torch.tensor([1, 0])
    text = torch.tensor([1, 0, 1])  # texts 0 and 2 share subject 0's value
    scale = 2.0
    l = [[1.0, -1.0, 1.0], [0.4, 0.2, 0.0]]
    row0 = -0.5 * ((l[0][0] - _lse(*l[0])) + (l[0][2] - _lse(*l[0])))
    row1 = -(l[1][1] - _lse(*l[1]))
    col0 = -(l[0][0] - _lse(l[0][0], l[1][0]))
    col1 = -(l[1][1] - _lse(l[0][1], l[1][1]))
    col2 = -(l[0][2] - _lse(l[0][2], l[1][2]))
    expected = 0.5 * ((row0 + row1) / 2 + (col0 + col1 + col2) / 3)
    assert float(calt_loss(similarity, brain, text, scale)) == pytest.approx(expected, rel=1e-6)


def test_disentanglement_hand_worked():
    # subject 0: disease token attends region 0; sex token region 1 (orthogonal: cosine 0);
    # site token [0.6, 0.8] (cosine 0.6 with the disease map). Subject 1 has no sex/site token.
    attention = torch.tensor([
        [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]],
        [[0.5, 0.5], [0.0, 0.0], [0.0, 0.0]],
    ])
    disease = torch.tensor([[True, False, False], [True, False, False]])
    sex = torch.tensor([[False, True, False], [False, False, False]])
    site = torch.tensor([[False, False, True], [False, False, False]])
    assert float(disentanglement_loss(attention, disease, [sex, site])) == pytest.approx((0.0 + 0.6) / 2)
    assert float(disentanglement_loss(attention, disease, [sex[:, [0, 0, 0]]])) == 0.0  # no sensitive token


def test_negative_gradient_reverses_the_sensitive_term():
    full = variant_weights("full", lambda_disentangle=2.0, lambda_negative=0.3, lambda_sensitive_align=1.5)
    assert full == LossWeights(sensitive=-0.3, disentangle=2.0)
    assert variant_weights("no_fairness", 2.0, 0.3, 1.5) == LossWeights(sensitive=1.5, disentangle=0.0)
    assert variant_weights("no_disentangle", 2.0, 0.3, 1.5) == LossWeights(sensitive=-0.3, disentangle=0.0)
    assert variant_weights("no_negative", 2.0, 0.3, 1.5) == LossWeights(sensitive=1.5, disentangle=2.0)
    with pytest.raises(ValueError, match="variant"):
        variant_weights("fair", 1.0, 1.0, 1.0)
