"""Lorentz geometry against float64 numpy formulas written here, geoopt, and hand-worked cases."""

from __future__ import annotations

import math

import geoopt
import numpy as np
import pytest
import torch

from mnm import lorentz as L

CURVATURES = [0.3, 1.0, 2.5]


def random_points(n: int, d: int, seed: int, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=scale, size=(n, d))


def t32(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float32)


# ---- independent float64 references (full (time, space) vectors) ---------------------------
def np_time(xs: np.ndarray, c: float) -> np.ndarray:
    return np.sqrt(1.0 / c + (xs**2).sum(-1))


def np_full(xs: np.ndarray, c: float) -> np.ndarray:
    return np.concatenate([np_time(xs, c)[..., None], xs], axis=-1)


def np_minkowski(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Minkowski product -u0 v0 + sum u_i v_i on full vectors."""
    return -u[..., 0] * v[..., 0] + (u[..., 1:] * v[..., 1:]).sum(-1)


def np_distance(xs, ys, c):
    cosh_distance = -c * np_minkowski(np_full(xs, c), np_full(ys, c))
    return np.arccosh(np.maximum(cosh_distance, 1.0)) / np.sqrt(c)


def np_interior_angle_at_x(xs, ys, c):
    """Angle at x between geodesics x->O and x->y, from the Minkowski tangent vectors.

    The initial velocity at x towards p is the projection of p onto T_x: p + c<x,p>_L x;
    the angle between two such tangent vectors is measured with the Minkowski product.
    """
    x, y = np_full(xs, c), np_full(ys, c)
    origin = np.zeros_like(x)
    origin[..., 0] = 1.0 / np.sqrt(c)
    u = origin + c * np_minkowski(x, origin)[..., None] * x
    v = y + c * np_minkowski(x, y)[..., None] * x
    cos = np_minkowski(u, v) / np.sqrt(np_minkowski(u, u) * np_minkowski(v, v))
    return np.arccos(np.clip(cos, -1, 1))


# ---- tests --------------------------------------------------------------------------------
@pytest.mark.parametrize("c", CURVATURES)
def test_time_component_puts_points_on_hyperboloid(c):
    xs = random_points(7, 5, 0)
    x0 = L.time_component(t32(xs), c).double().numpy()
    np.testing.assert_allclose(x0, np_time(xs, c), rtol=1e-6)
    full = np.concatenate([x0[:, None], xs], 1)
    np.testing.assert_allclose(np_minkowski(full, full), -1.0 / c, rtol=1e-5)


@pytest.mark.parametrize("c", CURVATURES)
def test_inner_and_pairwise_inner(c):
    xs, ys = random_points(4, 3, 1), random_points(5, 3, 2)
    ref = np_minkowski(np_full(xs, c)[:, None], np_full(ys, c)[None])
    np.testing.assert_allclose(L.pairwise_inner(t32(xs), t32(ys), c).numpy(), ref, rtol=1e-5)
    np.testing.assert_allclose(L.inner(t32(xs), t32(ys[:4]), c).numpy(), np.diag(ref), rtol=1e-5)


@pytest.mark.parametrize("c", CURVATURES)
def test_distance_matches_numpy_and_geoopt(c):
    xs, ys = random_points(6, 4, 3), random_points(6, 4, 4)
    ref = np_distance(xs, ys, c)
    np.testing.assert_allclose(L.distance(t32(xs), t32(ys), c).numpy(), ref, rtol=1e-4)
    pair_ref = np_distance(xs[:, None], ys[None], c)
    pair = L.pairwise_distance(t32(xs), t32(ys), c).numpy()
    np.testing.assert_allclose(pair, pair_ref, rtol=1e-4)
    manifold = geoopt.manifolds.Lorentz(k=1.0 / c)  # geoopt: <x,x>_L = -k, full coordinates
    geo = manifold.dist(torch.tensor(np_full(xs, c)), torch.tensor(np_full(ys, c)))
    np.testing.assert_allclose(L.distance(t32(xs), t32(ys), c).numpy(), geo.numpy(), rtol=1e-4)


@pytest.mark.parametrize("c", CURVATURES)
def test_distance0_is_distance_to_origin(c):
    xs = random_points(6, 4, 5, scale=2.0)
    np.testing.assert_allclose(
        L.distance0(t32(xs), c).numpy(), np_distance(xs, np.zeros_like(xs), c), rtol=1e-5
    )


@pytest.mark.parametrize("c", CURVATURES)
def test_exp_and_log_map0_match_formula_and_geoopt(c):
    v = random_points(8, 5, 6, scale=0.7)
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    ref = np.sinh(np.sqrt(c) * norm) * v / (np.sqrt(c) * norm)
    mapped = L.exp_map0(t32(v), c)
    np.testing.assert_allclose(mapped.numpy(), ref, rtol=1e-5)
    # the geodesic distance from the origin equals the tangent norm
    np.testing.assert_allclose(np_distance(ref, np.zeros_like(ref), c), norm[:, 0], rtol=1e-9)
    manifold = geoopt.manifolds.Lorentz(k=1.0 / c)
    tangent = torch.tensor(np.concatenate([np.zeros((8, 1)), v], 1))
    geo_point = manifold.expmap0(tangent)
    np.testing.assert_allclose(mapped.numpy(), geo_point[:, 1:].numpy(), rtol=1e-5)
    np.testing.assert_allclose(L.log_map0(mapped, c).numpy(), v, rtol=1e-4, atol=1e-6)
    geo_log = manifold.logmap0(torch.tensor(np_full(ref, c)))
    np.testing.assert_allclose(L.log_map0(t32(ref), c).numpy(), geo_log[:, 1:].numpy(), rtol=1e-4)


@pytest.mark.parametrize("c", CURVATURES)
def test_half_aperture_formula(c):
    xs = random_points(6, 3, 7, scale=2.0)
    ref = np.arcsin(np.clip(0.2 / (np.sqrt(c) * np.linalg.norm(xs, axis=-1)), -1, 1))
    got = L.half_aperture(t32(xs), c, min_radius=0.1).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=2e-3)  # atol: clamp at 1 - eps
    assert np.all((got > 0) & (got < math.pi / 2))


@pytest.mark.parametrize("c", CURVATURES)
def test_exterior_angle_is_pi_minus_tangent_space_angle(c):
    xs, ys = random_points(5, 4, 8), random_points(6, 4, 9)
    ref = math.pi - np_interior_angle_at_x(xs[:, None], ys[None], c)
    pair = L.pairwise_exterior_angle(t32(xs), t32(ys), c).numpy()
    np.testing.assert_allclose(pair, ref, atol=2e-3)
    diag = L.exterior_angle(t32(xs), t32(ys[:5]), c).numpy()
    np.testing.assert_allclose(diag, np.diag(ref), atol=2e-3)


def test_exterior_angle_hand_worked_cases():
    x = torch.tensor([[1.0, 0.0]])
    outward = torch.tensor([[3.0, 0.0]])  # on the ray O->x beyond x: inside the cone
    inward = torch.tensor([[0.2, 0.0]])  # between O and x
    assert L.exterior_angle(x, outward).item() == pytest.approx(0.0, abs=2e-3)
    assert L.exterior_angle(x, inward).item() == pytest.approx(math.pi, abs=2e-3)


@pytest.mark.parametrize("c", CURVATURES)
def test_klein_and_poincare_maps(c):
    xs = random_points(6, 3, 10)
    x0 = np_time(xs, c)[:, None]
    klein = L.to_klein(t32(xs), c).numpy()
    np.testing.assert_allclose(klein, xs / (np.sqrt(c) * x0), rtol=1e-5)
    assert np.all(np.linalg.norm(klein, axis=-1) < 1 / np.sqrt(c))
    np.testing.assert_allclose(L.from_klein(t32(klein), c).numpy(), xs, rtol=1e-3, atol=1e-4)
    ball = L.to_poincare(t32(xs), c).numpy()
    geo = geoopt.manifolds.lorentz.math.lorentz_to_poincare(
        torch.tensor(np_full(xs, c)), torch.tensor(1.0 / c, dtype=torch.float64)
    )
    # geoopt maps onto the unit ball x_s / (x_0 + sqrt(k)); ours has radius 1/sqrt(c)
    np.testing.assert_allclose(ball * np.sqrt(c), geo.numpy(), rtol=1e-5)
    # Poincare-ball distance formula reproduces the hyperboloid distance
    sq = lambda a: (a**2).sum(-1)  # noqa: E731
    pb, pa = ball[1:].astype(np.float64), ball[:-1].astype(np.float64)
    arg = 1 + 2 * c * sq(pa - pb) / ((1 - c * sq(pa)) * (1 - c * sq(pb)))
    ball_distance = np.arccosh(arg) / np.sqrt(c)
    np.testing.assert_allclose(ball_distance, np_distance(xs[:-1], xs[1:], c), rtol=1e-3)


def np_lorentz_centroid(xs, c, w):
    """Law et al. 2019: sum of full vectors normalised back onto the hyperboloid."""
    s = (w[:, None] * np_full(xs, c)).sum(0)
    mu = s / (np.sqrt(c) * np.sqrt(abs(np_minkowski(s, s))))
    return mu[1:]


@pytest.mark.parametrize("c", CURVATURES)
def test_centroid_hand_worked_cases(c):
    point = t32(np.array([[0.4, -1.2, 0.7]]))
    for fn in (L.lorentz_centroid, L.einstein_midpoint):
        np.testing.assert_allclose(fn(point, c).numpy(), point[0].numpy(), rtol=1e-4)
        # two mirror points: the centroid is the geodesic midpoint on the axis
        pair = t32(np.array([[1.5, 0.8], [1.5, -0.8]]))
        mid = fn(pair, c).numpy()
        assert abs(mid[1]) < 1e-5
        a, b = pair.numpy().astype(np.float64)
        mid = mid.astype(np.float64)
        d_a, d_b, d_ab = np_distance(mid, a, c), np_distance(mid, b, c), np_distance(a, b, c)
        np.testing.assert_allclose([d_a, d_b], [d_ab / 2, d_ab / 2], rtol=1e-3)


@pytest.mark.parametrize("c", CURVATURES)
def test_centroid_formula_minimiser_and_einstein_agree(c):
    xs = random_points(9, 3, 11, scale=0.8)
    w = np.random.default_rng(12).uniform(0.1, 2.0, size=9)
    got = L.lorentz_centroid(t32(xs), c, weights=t32(w)).numpy()
    ref = np_lorentz_centroid(xs, c, w)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)
    einstein = L.einstein_midpoint(t32(xs), c, weights=t32(w)).numpy()
    np.testing.assert_allclose(einstein, ref, rtol=1e-3, atol=1e-5)
    # it minimises the weighted squared Lorentzian distance -2/c - 2<mu, x_i>_L
    def objective(mu_space):
        return (w * (-2 / c - 2 * np_minkowski(np_full(mu_space, c), np_full(xs, c)))).sum()

    rng = np.random.default_rng(13)
    best = objective(ref)
    for _ in range(50):
        assert objective(ref + rng.normal(scale=0.05, size=3)) > best
    # batched over a leading axis
    batched = L.lorentz_centroid(t32(np.stack([xs, xs[::-1]])), c).numpy()
    np.testing.assert_allclose(batched[0], batched[1], rtol=1e-5)


def test_centroid_rejects_bad_shapes():
    with pytest.raises(ValueError, match="weights shape"):
        L.lorentz_centroid(torch.zeros(3, 2), weights=torch.ones(4))
    with pytest.raises(ValueError, match="n>=1"):
        L.lorentz_centroid(torch.zeros(0, 2))


@pytest.mark.parametrize("norm", [1e-8, 1e-3, 1.0, 30.0, 1e3])
def test_gradients_finite_at_extreme_norms(norm):
    torch.manual_seed(0)
    direction = torch.randn(4, 6)
    v = (direction / direction.norm(dim=-1, keepdim=True) * norm).requires_grad_()
    c = torch.tensor(1.3, requires_grad=True)
    x = L.exp_map0(v, c)
    other = L.exp_map0(torch.randn(4, 6) * 0.5, c)
    total = (
        L.pairwise_exterior_angle(x, other, c).sum()
        + L.exterior_angle(other, x, c).sum()
        + L.pairwise_distance(x, other, c).sum()
        + L.distance0(x, c).sum()
        + L.log_map0(x, c).sum()
        + L.half_aperture(x, c).sum()
        + L.lorentz_centroid(torch.cat([x, other]), c).sum()
        + L.to_poincare(x, c).sum()
    )
    total.backward()
    assert torch.isfinite(total)
    assert torch.isfinite(v.grad).all() and torch.isfinite(c.grad)


def test_gradients_finite_for_identical_points():
    x = torch.tensor([[0.3, -0.5, 0.2], [0.0, 0.0, 0.0]], requires_grad=True)
    total = (
        L.distance(x, x).sum()
        + L.pairwise_distance(x, x).sum()
        + L.exterior_angle(x, x).sum()
        + L.pairwise_exterior_angle(x, x).sum()
        + L.log_map0(x).sum()
        + L.lorentz_centroid(x[:1].repeat(3, 1)).sum()
    )
    total.backward()
    assert torch.isfinite(x.grad).all()
    assert L.distance(x, x).max().item() < 2e-3
