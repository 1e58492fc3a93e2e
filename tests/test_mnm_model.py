"""MNM model: protocol, losses against hand-computed float64 values, and a planted-signal fit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau

from mnm import lorentz as L
from mnm.models.mnm import MNM, hierarchy_loss


# ---- independent float64 references ----------------------------------------------------------
def np_time(xs, c):
    return np.sqrt(1.0 / c + (xs**2).sum(-1))


def np_exterior_angle(apex, other, c):
    """Exterior angle at ``apex`` in triangle (O, apex, other) by the hyperbolic law of cosines."""
    rc = math.sqrt(c)
    a = math.asinh(rc * np.linalg.norm(apex)) / rc  # d(O, apex)
    e = math.asinh(rc * np.linalg.norm(other)) / rc  # d(O, other)
    inner = apex @ other - np_time(apex, c) * np_time(other, c)
    b = math.acosh(max(-c * inner, 1.0)) / rc  # d(apex, other)
    cos_interior = (math.cosh(rc * a) * math.cosh(rc * b) - math.cosh(rc * e)) / (
        math.sinh(rc * a) * math.sinh(rc * b)
    )
    return math.pi - math.acos(max(-1.0, min(1.0, cos_interior)))


def np_cross_entropy_diag(logits):
    logits = logits - logits.max(1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return -np.mean(np.diag(log_probs))


def np_centroid_distance(xs, c):
    full = np.concatenate([np_time(xs, c)[:, None], xs], 1).sum(0)
    lorentz_sq = full[0] ** 2 - (full[1:] ** 2).sum()
    mu0 = full[0] / math.sqrt(c * lorentz_sq)
    return math.acosh(math.sqrt(c) * mu0) / math.sqrt(c)


def np_hier(xs, r, c, normalisation="pairs", margin=0.0):
    x0 = np_time(xs, c)
    pairs = [(i, j) for i in range(len(r)) for j in range(len(r)) if r[i] > r[j]]
    terms = [(r[i] - r[j]) * max(0.0, math.log(x0[i] / x0[j]) + margin) for i, j in pairs]
    if not terms:
        return 0.0
    if normalisation == "pairs":
        return float(np.mean(terms))
    return float(np.sum(terms) / sum(r[i] - r[j] for i, j in pairs))


TEXT = np.array([[0.9, 0.3, -0.2], [-0.4, 1.1, 0.5], [0.2, -0.7, 1.3]])
BRAIN = np.array([[0.3, 0.1, 0.0], [-0.2, 0.4, 0.1], [0.05, -0.3, 0.35]])
N_ACTIVE = np.array([4.0, 2.0, 7.0])


def tiny_model(variant="mnm", c=1.0, **kw):
    torch.manual_seed(0)
    return MNM(text_dim=5, brain_dim=4, latent_dim=3, dropout=0.0, curvature_init=c,
               variant=variant, **kw)


# ---- tests ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("head", ["free", "pinned"])
def test_encoders_map_onto_hyperboloid_with_scaled_exp_map(head):
    model = tiny_model(radius_head=head).eval()
    x = torch.randn(6, 5)
    emb = model.encode_text(x)
    assert emb.shape == (6, 3) and emb.dtype == torch.float32
    features = model.text_encoder(x)
    if head == "free":
        # the free head starts at the identity, then is a learned bias-free linear map
        assert torch.equal(model.text_head.weight, torch.eye(3)) and model.text_head.bias is None
        with torch.no_grad():
            model.text_head.weight.mul_(2.0)
        features = 2.0 * features
        emb = model.encode_text(x)
    tangent = features * 3**-0.5  # alpha init = latent_dim ** -0.5
    torch.testing.assert_close(L.log_map0(emb, 1.0), tangent, rtol=1e-4, atol=1e-5)
    assert model.encode_brain(torch.randn(6, 4)).shape == (6, 3)


def test_pinned_head_puts_every_embedding_at_one_radius_and_free_head_does_not():
    torch.manual_seed(1)
    x = torch.randn(50, 5) * torch.linspace(0.1, 10, 50)[:, None]
    pinned = tiny_model(radius_head="pinned").eval()
    radius = L.distance0(pinned.encode_text(x), 1.0)
    # LayerNorm output has norm sqrt(d) (unit weight, zero bias at init): one radius for all
    assert float((radius.std() / radius.mean()).detach()) < 1e-3
    free = tiny_model(radius_head="free").eval()
    with torch.no_grad():
        free.text_head.weight.copy_(torch.randn(3, 3))
    radius = L.distance0(free.encode_text(x), 1.0)
    assert float((radius.std() / radius.mean()).detach()) > 0.05


@pytest.mark.parametrize("variant", ["mnm", "mnm_reverse"])
def test_score_is_minus_exterior_angle_with_the_right_apex(variant):
    c = 1.7
    model = tiny_model(variant, c=c)
    text, brain = torch.tensor(TEXT, dtype=torch.float32), torch.tensor(BRAIN, dtype=torch.float32)
    score = model.score(text, brain)
    assert score.shape == (3, 3)
    for i in range(3):
        for j in range(3):
            assert model.angle_apex == ("brain" if variant == "mnm" else "text")
            if variant == "mnm":  # apex at the brain point, looking towards the text
                ref = np_exterior_angle(BRAIN[j], TEXT[i], c)
            else:
                ref = np_exterior_angle(TEXT[i], BRAIN[j], c)
            assert score[i, j].item() == pytest.approx(-ref, abs=2e-3)


@pytest.mark.parametrize("variant,centroid_form,hier_normalisation,margin", [
    ("mnm", "abs", "pairs", 0.0), ("mnm_reverse", "abs", "gap", 0.1), ("mnm_no_hier", "squared", "pairs", 0.0),
    ("mnm", "squared", "gap", 0.3),
])
def test_loss_terms_match_hand_computation(variant, centroid_form, hier_normalisation, margin):
    c = 0.8
    model = tiny_model(variant, c=c, lambda_centroid=0.5, lambda_hier=30.0, centroid_form=centroid_form,
                       hier_normalisation=hier_normalisation, hier_margin=margin)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1 / 0.2))  # temperature 0.2
    out = model.loss(
        torch.tensor(TEXT, dtype=torch.float32),
        torch.tensor(BRAIN, dtype=torch.float32),
        torch.tensor(N_ACTIVE),
    )
    assert set(out) == {"loss", "angle", "centroid", "hier"}
    reverse = variant == "mnm_reverse"
    def apex_and_target(i, j):
        return (TEXT[i], BRAIN[j]) if reverse else (BRAIN[j], TEXT[i])

    angles = np.array(
        [[np_exterior_angle(*apex_and_target(i, j), c) for j in range(3)] for i in range(3)]
    )
    logits = -angles / 0.2
    angle_ref = 0.5 * (np_cross_entropy_diag(logits) + np_cross_entropy_diag(logits.T))
    far, near = (BRAIN, TEXT) if reverse else (TEXT, BRAIN)
    power = 1 if centroid_form == "abs" else 2
    cent_ref = abs(np_centroid_distance(far, c) - 2.0) ** power
    cent_ref += abs(np_centroid_distance(near, c) - 0.5) ** power
    hier_ref = np_hier(BRAIN, N_ACTIVE, c, hier_normalisation, margin)
    assert hier_ref > 0  # the planted case has a violated pair (R=7 sits farther out than R=2)
    lam_hier = 0.0 if variant == "mnm_no_hier" else 30.0
    assert out["angle"].item() == pytest.approx(angle_ref, rel=1e-3)
    assert out["centroid"].item() == pytest.approx(cent_ref, rel=1e-4)
    assert out["hier"].item() == pytest.approx(hier_ref, rel=1e-4)
    total_ref = angle_ref + 0.5 * cent_ref + lam_hier * hier_ref
    assert out["loss"].item() == pytest.approx(total_ref, rel=1e-3)


def test_hierarchy_loss_zero_cases_and_direction():
    emb = torch.tensor([[0.1, 0.0], [2.0, 0.0]], requires_grad=True)
    # more active components nearer the origin: no penalty
    assert hierarchy_loss(emb, torch.tensor([9, 1]), 1.0).item() == 0.0
    # all R equal: no ordered pair, zero with a graph
    tied = hierarchy_loss(emb, torch.tensor([3, 3]), 1.0)
    tied.backward()
    assert tied.item() == 0.0 and torch.isfinite(emb.grad).all()
    # reversed order: (9 - 1) * log(x0_1 / x0_0), over 1 pair or over a gap of 8
    x0 = np.sqrt(1 + np.array([0.01, 4.0]))
    got = hierarchy_loss(emb.detach(), torch.tensor([1, 9]), 1.0).item()
    assert got == pytest.approx(8 * math.log(x0[1] / x0[0]), rel=1e-5)
    got = hierarchy_loss(emb.detach(), torch.tensor([1, 9]), 1.0, normalisation="gap").item()
    assert got == pytest.approx(math.log(x0[1] / x0[0]), rel=1e-5)
    # a margin m makes a correctly ordered pair cost until the ratio exceeds e^m:
    # R = (9, 1), x0 ratio x0_0 / x0_1 = sqrt(1.01 / 5) < 1: cost 8 * (log(x0_0 / x0_1) + m) when positive
    m = 1.0
    got = hierarchy_loss(emb.detach(), torch.tensor([9, 1]), 1.0, margin=m).item()
    assert got == pytest.approx(8 * max(0.0, math.log(x0[0] / x0[1]) + m), rel=1e-5) and got > 0
    with pytest.raises(ValueError, match="normalisation 'mean'"):
        hierarchy_loss(emb, torch.tensor([1, 9]), 1.0, normalisation="mean")


def test_scalars_clamped_on_stored_parameters_not_in_forward():
    model = MNM(text_dim=4, brain_dim=4, latent_dim=512, curvature_init=2.0)
    scalars = model.log_scalars()
    assert scalars["curvature"] == pytest.approx(2.0)
    assert scalars["temperature"] == pytest.approx(0.07)
    assert scalars["alpha_text"] == pytest.approx(512**-0.5) == scalars["alpha_brain"]
    names = dict(model.named_parameters())
    assert {"log_curvature", "logit_scale", "log_alpha_text", "log_alpha_brain"} == (
        model.no_decay_parameter_names()) <= set(names)
    with torch.no_grad():
        model.log_curvature.fill_(5.0)
        model.logit_scale.fill_(9.0)
        model.log_alpha_text.fill_(2.0)
    # forward uses the stored values as they are: the gradient is not cut at a bound
    assert model.log_scalars()["curvature"] == pytest.approx(math.exp(5.0), rel=1e-5)
    x = torch.randn(3, 4)
    model.encode_text(x).sum().backward()
    assert model.log_curvature.grad != 0 and model.log_alpha_text.grad != 0
    model.clamp_parameters()  # what the trainer calls after each optimiser step
    scalars = model.log_scalars()
    assert scalars["curvature"] == pytest.approx(20.0)  # 10 * curvature_init
    assert scalars["temperature"] == pytest.approx(0.01)  # logit scale <= 100
    assert scalars["alpha_text"] == pytest.approx(1.0)  # alpha <= 1
    with torch.no_grad():
        model.log_curvature.fill_(-5.0)
    model.clamp_parameters()
    assert model.log_scalars()["curvature"] == pytest.approx(0.2)  # curvature_init / 10


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="variant 'mnm_sideways'"):
        MNM(4, 4, variant="mnm_sideways")
    with pytest.raises(ValueError, match="radius_head 'loose'"):
        MNM(4, 4, radius_head="loose")
    with pytest.raises(ValueError, match="centroid_form 'cubic'"):
        MNM(4, 4, centroid_form="cubic")
    model = tiny_model()
    with pytest.raises(ValueError, match="same n pairs"):
        model.loss(torch.zeros(3, 3), torch.zeros(2, 3), torch.zeros(3))
    assert MNM(4, 4, variant="mnm_no_hier").lambda_hier == 0.0


def test_gradients_finite_for_extreme_and_identical_inputs():
    model = tiny_model()
    for scale in (1e-8, 1.0, 1e3):
        x = (torch.randn(4, 5) * scale).requires_grad_()
        y = (torch.randn(4, 4) * scale).requires_grad_()
        out = model.loss(model.encode_text(x), model.encode_brain(y), torch.tensor([1, 5, 3, 3]))
        out["loss"].backward()
        assert torch.isfinite(out["loss"])
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        model.zero_grad()
    same = torch.tensor(BRAIN[:2], dtype=torch.float32, requires_grad=True)
    out = model.loss(same, same, torch.tensor([2, 1]))
    out["loss"].backward()
    assert torch.isfinite(same.grad).all()


# ---- planted signal ----------------------------------------------------------------------------
def planted_pairs(n: int, seed: int = 0):
    """Brain = fixed random linear map of text + noise; R = number of components above 1."""
    rng = np.random.default_rng(seed)
    text = rng.normal(size=(n, 16)) * rng.uniform(0.3, 1.7, size=(n, 1))
    mixing = rng.normal(size=(16, 24)) / 4.0
    brain = text @ mixing + 0.3 * rng.normal(size=(n, 24))
    n_active = (brain > 1.0).sum(1)
    as_t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return as_t(text), as_t(brain), torch.tensor(n_active)


def fit(variant: str, steps: int = 80, seed: int = 0):
    text, brain, n_active = planted_pairs(320)
    torch.manual_seed(seed)
    model = MNM(16, 24, latent_dim=32, dropout=0.0, variant=variant)
    decay = [p for n, p in model.named_parameters() if n not in model.no_decay_parameter_names()]
    rest = [p for n, p in model.named_parameters() if n in model.no_decay_parameter_names()]
    optimiser = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}], lr=3e-3
    )
    train, test = slice(0, 192), slice(192, 320)
    for _ in range(steps):
        optimiser.zero_grad()
        text_emb, brain_emb = model.encode_text(text[train]), model.encode_brain(brain[train])
        out = model.loss(text_emb, brain_emb, n_active[train])
        out["loss"].backward()
        optimiser.step()
        model.clamp_parameters()
    model.eval()
    with torch.no_grad():
        text_emb, brain_emb = model.encode_text(text[test]), model.encode_brain(brain[test])
        scores = model.score(text_emb, brain_emb)
        recall_at_1 = (scores.argmax(1) == torch.arange(128)).float().mean().item()
        c = model.curvature()
        x_time = L.time_component(brain_emb, c).numpy()
        brain_radius = L.distance0(brain_emb, c)
        radii = {
            "text": L.distance0(text_emb, c).mean().item(),
            "brain": brain_radius.mean().item(),
            "brain_cv": (brain_radius.std() / brain_radius.mean()).item(),
        }
    tau = kendalltau(x_time, n_active[test].numpy()).statistic
    return recall_at_1, tau, model.log_scalars(), radii


@pytest.fixture
def single_thread():
    # the tiny model is faster on one thread, and the test does not fight other jobs for cores
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_planted_signal_is_recovered_and_hierarchy_is_ordered(single_thread):
    recall, tau, scalars, radii = fit("mnm")
    recall_flat, tau_flat, _, _ = fit("mnm_no_hier")
    chance = 1 / 128
    assert recall > 20 * chance, recall
    assert recall_flat > 20 * chance, recall_flat
    assert tau < -0.4, tau
    assert tau < tau_flat - 0.1, (tau, tau_flat)
    assert 0.1 <= scalars["curvature"] <= 10
    assert radii["brain"] < radii["text"], radii  # brain is the generic side, nearer the origin


def test_reverse_variant_puts_text_nearer_the_origin(single_thread):
    recall, _, _, radii = fit("mnm_reverse")
    assert recall > 20 / 128, recall
    assert radii["text"] < radii["brain"], radii
