"""Lorentz-model (hyperboloid) geometry as small pure torch functions.

Conventions (as in MERU's ``lorentz.py``): the hyperboloid of curvature ``-c`` (``c > 0``) is
``{x in R^{d+1} : <x, x>_L = -1/c, x_0 > 0}`` with the Lorentzian inner product
``<x, y>_L = <x_s, y_s> - x_0 y_0``. Every function takes and returns only the *space*
components ``x_s`` of shape ``(..., d)``; the time component is derived from the constraint,
``x_0 = sqrt(1/c + |x_s|^2)`` (:func:`time_component`). The origin (vertex) is ``x_s = 0``.

Inputs should be float32 (or float64); callers that train with mixed precision must cast
to float32 before calling, because ``sinh``/``acosh`` overflow or lose all precision in
half precision. Each clamp below is documented where it is applied.

Hand-written rather than imported: geoopt's ``Lorentz`` manifold works on full
``(time, space)`` coordinates with ``k = 1/c`` and has no entailment-cone angles, no Klein
model and no centroid; MERU is not a packaged library. The tests check the overlapping
functions against geoopt and all functions against float64 formulas.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "time_component",
    "inner",
    "pairwise_inner",
    "distance",
    "pairwise_distance",
    "distance0",
    "exp_map0",
    "log_map0",
    "half_aperture",
    "exterior_angle",
    "pairwise_exterior_angle",
    "to_klein",
    "from_klein",
    "lorentz_centroid",
    "einstein_midpoint",
    "to_poincare",
]

#: Largest argument passed to ``sinh`` in :func:`exp_map0`: ``sinh`` of it is 2**15, which keeps
#: the space components (and their squares in the time component) finite in float32.
MAX_SINH_INPUT = math.asinh(2.0**15)


def _sqrt_c(c: float | Tensor) -> float | Tensor:
    return c**0.5


def time_component(x: Tensor, c: float | Tensor = 1.0) -> Tensor:
    """Time component ``x_0 = sqrt(1/c + |x_s|^2)`` of points given by their space components.

    Parameters
    ----------
    x : Tensor, shape (..., d)
        Space components.
    c : float or Tensor
        Positive curvature magnitude (the hyperboloid has curvature ``-c``).

    Returns
    -------
    Tensor, shape (...,)
    """
    return torch.sqrt(1.0 / c + torch.sum(x * x, dim=-1))


def inner(x: Tensor, y: Tensor, c: float | Tensor = 1.0) -> Tensor:
    """Lorentzian inner product ``<x, y>_L = <x_s, y_s> - x_0 y_0`` of matching rows.

    Parameters
    ----------
    x, y : Tensor, shape (..., d)
        Space components (broadcastable).
    c : float or Tensor
        Curvature magnitude.

    Returns
    -------
    Tensor, shape (...,)
        Always ``<= -1/c`` (equal when ``x == y``).
    """
    return torch.sum(x * y, dim=-1) - time_component(x, c) * time_component(y, c)


def pairwise_inner(x: Tensor, y: Tensor, c: float | Tensor = 1.0) -> Tensor:
    """Lorentzian inner products between all rows of ``x`` (n, d) and ``y`` (m, d) -> (n, m)."""
    return x @ y.T - time_component(x, c)[:, None] * time_component(y, c)[None, :]


def _acosh_of_inner(c_inner: Tensor, eps: float) -> Tensor:
    # -c<x,y>_L >= 1 in exact arithmetic; rounding can push it below 1 (acosh -> NaN) and
    # acosh has an infinite derivative at 1, so the argument is clamped to >= 1 + eps.
    return torch.acosh(torch.clamp(-c_inner, min=1.0 + eps))


def distance(x: Tensor, y: Tensor, c: float | Tensor = 1.0, eps: float = 1e-6) -> Tensor:
    """Geodesic distance ``acosh(-c <x, y>_L) / sqrt(c)`` between matching rows.

    Parameters
    ----------
    x, y : Tensor, shape (..., d)
        Space components.
    c : float or Tensor
        Curvature magnitude.
    eps : float
        The ``acosh`` argument is clamped to ``>= 1 + eps`` (float32 resolution near 1 is
        about 1.2e-7, so a smaller ``eps`` would be rounded away).

    Returns
    -------
    Tensor, shape (...,)
    """
    return _acosh_of_inner(c * inner(x, y, c), eps) / _sqrt_c(c)


def pairwise_distance(x: Tensor, y: Tensor, c: float | Tensor = 1.0, eps: float = 1e-6) -> Tensor:
    """Geodesic distances between all rows of ``x`` (n, d) and ``y`` (m, d) -> (n, m)."""
    return _acosh_of_inner(c * pairwise_inner(x, y, c), eps) / _sqrt_c(c)


def distance0(x: Tensor, c: float | Tensor = 1.0) -> Tensor:
    """Geodesic distance from the origin, ``asinh(sqrt(c) |x_s|) / sqrt(c)``.

    Uses ``sinh(sqrt(c) d) = sqrt(c) |x_s|`` instead of ``acosh(sqrt(c) x_0)``: the ``asinh``
    form keeps full precision and a finite gradient near the origin, where ``acosh`` of a
    number rounded to 1 has an infinite derivative.

    Returns
    -------
    Tensor, shape (...,)
    """
    sqrt_c = _sqrt_c(c)
    return torch.asinh(sqrt_c * torch.linalg.vector_norm(x, dim=-1)) / sqrt_c


def exp_map0(v: Tensor, c: float | Tensor = 1.0, eps: float = 1e-8) -> Tensor:
    """Exponential map at the origin: ``sinh(sqrt(c)|v|) v / (sqrt(c)|v|)`` (space components).

    Parameters
    ----------
    v : Tensor, shape (..., d)
        Tangent vectors at the origin (their time component is 0).
    c : float or Tensor
        Curvature magnitude.
    eps : float
        ``sqrt(c)|v|`` is clamped to ``>= eps`` in the denominator (no division by zero at
        ``v = 0``, where the map tends to the identity) and the ``sinh`` input is clamped to
        ``<= asinh(2**15)`` so that huge vectors do not overflow float32.

    Returns
    -------
    Tensor, shape (..., d)
    """
    scaled_norm = _sqrt_c(c) * torch.linalg.vector_norm(v, dim=-1, keepdim=True)
    sinh_input = torch.clamp(scaled_norm, min=eps, max=MAX_SINH_INPUT)
    return torch.sinh(sinh_input) * v / torch.clamp(scaled_norm, min=eps)


def log_map0(x: Tensor, c: float | Tensor = 1.0, eps: float = 1e-8) -> Tensor:
    """Logarithmic map at the origin (inverse of :func:`exp_map0`).

    ``log_0(x) = d(0, x) x_s / |x_s|`` with ``d(0, x) = asinh(sqrt(c)|x_s|) / sqrt(c)``
    (see :func:`distance0` for why ``asinh``). ``sqrt(c)|x_s|`` is clamped to ``>= eps`` in the
    denominator (the map tends to the identity at the origin).

    Returns
    -------
    Tensor, shape (..., d)
    """
    scaled_norm = _sqrt_c(c) * torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return torch.asinh(scaled_norm) * x / torch.clamp(scaled_norm, min=eps)


def half_aperture(
    x: Tensor, c: float | Tensor = 1.0, min_radius: float = 0.1, eps: float = 1e-6
) -> Tensor:
    """Half-aperture ``asin(2 K / (sqrt(c) |x_s|))`` of the entailment cone at ``x`` (MERU).

    Parameters
    ----------
    x : Tensor, shape (..., d)
        Cone apexes (space components).
    c : float or Tensor
        Curvature magnitude.
    min_radius : float
        ``K``: points within this neighbourhood of the origin get the widest cone (pi/2).
    eps : float
        The ``asin`` input is clamped to ``[-1 + eps, 1 - eps]`` (its derivative is infinite
        at +-1) and ``eps`` is added to the denominator (apex at the origin).

    Returns
    -------
    Tensor, shape (...,), values in (0, pi/2)
    """
    asin_input = 2.0 * min_radius / (torch.linalg.vector_norm(x, dim=-1) * _sqrt_c(c) + eps)
    return torch.asin(torch.clamp(asin_input, min=-1.0 + eps, max=1.0 - eps))


def _exterior_angle_from_parts(
    x_norm: Tensor, x_time: Tensor, y_time: Tensor, c_inner: Tensor, eps: float
) -> Tensor:
    # Hyperbolic law of cosines in the triangle (O, x, y): the cosine of the exterior angle at
    # x is (y_0 + c<x,y>_L x_0) / (|x_s| sqrt((c<x,y>_L)^2 - 1)).
    numerator = y_time + c_inner * x_time
    # (c<x,y>)^2 - 1 is 0 for y == x (angle undefined): clamped to >= eps so sqrt stays finite.
    denominator = x_norm * torch.sqrt(torch.clamp(c_inner * c_inner - 1.0, min=eps)) + eps
    # acos has infinite slope at +-1: its input is clamped to [-1 + eps, 1 - eps].
    return torch.acos(torch.clamp(numerator / denominator, min=-1.0 + eps, max=1.0 - eps))


def exterior_angle(x: Tensor, y: Tensor, c: float | Tensor = 1.0, eps: float = 1e-6) -> Tensor:
    """Exterior angle at ``x`` of the hyperbolic triangle (origin, x, y) (MERU's ``oxy_angle``).

    It is ``pi`` minus the angle at ``x`` between the geodesics to the origin and to ``y``:
    0 when ``y`` lies on the ray from the origin through ``x`` beyond ``x`` (inside the
    entailment cone at ``x``), pi when ``y`` lies between ``x`` and the origin.

    Parameters
    ----------
    x, y : Tensor, shape (..., d)
        Apex points and target points (space components, broadcastable).
    c : float or Tensor
        Curvature magnitude.
    eps : float
        Clamp margin (see the comments in the implementation).

    Returns
    -------
    Tensor, shape (...,), values in (0, pi)
    """
    c_inner = c * inner(x, y, c)
    return _exterior_angle_from_parts(
        torch.linalg.vector_norm(x, dim=-1),
        time_component(x, c),
        time_component(y, c),
        c_inner,
        eps,
    )


def pairwise_exterior_angle(
    x: Tensor, y: Tensor, c: float | Tensor = 1.0, eps: float = 1e-6
) -> Tensor:
    """Exterior angles at every apex ``x_i`` (n, d) towards every ``y_j`` (m, d) -> (n, m)."""
    c_inner = c * pairwise_inner(x, y, c)
    return _exterior_angle_from_parts(
        torch.linalg.vector_norm(x, dim=-1)[:, None],
        time_component(x, c)[:, None],
        time_component(y, c)[None, :],
        c_inner,
        eps,
    )


def to_klein(x: Tensor, c: float | Tensor = 1.0) -> Tensor:
    """Beltrami-Klein coordinates ``k = x_s / (sqrt(c) x_0)`` (ball of radius ``1/sqrt(c)``)."""
    return x / (_sqrt_c(c) * time_component(x, c)[..., None])


def from_klein(k: Tensor, c: float | Tensor = 1.0, eps: float = 1e-7) -> Tensor:
    """Inverse of :func:`to_klein`: ``x_s = k / sqrt(1 - c|k|^2)``.

    ``1 - c|k|^2`` is clamped to ``>= eps`` so points on (or rounded onto) the ball's boundary
    map to a large finite point instead of infinity.
    """
    return k / torch.sqrt(torch.clamp(1.0 - c * torch.sum(k * k, dim=-1, keepdim=True), min=eps))


def _check_weights(x: Tensor, weights: Tensor | None) -> Tensor:
    if x.ndim < 2 or x.shape[-2] == 0:
        raise ValueError(f"centroid needs points of shape (..., n>=1, d), got {tuple(x.shape)}")
    if weights is None:
        return torch.ones(x.shape[:-1], dtype=x.dtype, device=x.device)
    if weights.shape != x.shape[:-1]:
        raise ValueError(
            f"weights shape {tuple(weights.shape)} != points shape {tuple(x.shape[:-1])}"
        )
    return weights


def lorentz_centroid(
    x: Tensor, c: float | Tensor = 1.0, weights: Tensor | None = None, eps: float = 1e-8
) -> Tensor:
    """Lorentzian centroid (Law et al., ICML 2019, "Lorentzian distance learning"), Eq. 6.

    With full vectors ``X_i = (x_0, x_s)`` and ``S = sum_i w_i X_i`` (a future-pointing
    time-like vector), the centroid is ``mu = S / (sqrt(c) sqrt(|<S, S>_L|))``: the weighted sum
    normalised back onto the hyperboloid (``<mu, mu>_L = -1/c``). It minimises the weighted sum
    of squared Lorentzian distances ``-2/c - 2<mu, x_i>_L``. Its Klein coordinates equal the
    Einstein midpoint's (see :func:`einstein_midpoint`), so the two definitions coincide.

    Parameters
    ----------
    x : Tensor, shape (..., n, d)
        Points (space components); the centroid is taken over axis -2.
    c : float or Tensor
        Curvature magnitude.
    weights : Tensor, shape (..., n), optional
        Non-negative weights (not all zero); uniform when None. Their scale does not matter.
    eps : float
        ``|<S, S>_L|`` is clamped to ``>= eps`` (it is > 0 for non-negative weights).

    Returns
    -------
    Tensor, shape (..., d)
        Space components of the centroid.
    """
    weights = _check_weights(x, weights)
    sum_time = torch.sum(weights * time_component(x, c), dim=-1)
    sum_space = torch.sum(weights[..., None] * x, dim=-2)
    minus_lorentz_sq_norm = sum_time * sum_time - torch.sum(sum_space * sum_space, dim=-1)
    scale = torch.sqrt(torch.clamp(c * minus_lorentz_sq_norm, min=eps))
    return sum_space / scale[..., None]


def einstein_midpoint(
    x: Tensor, c: float | Tensor = 1.0, weights: Tensor | None = None
) -> Tensor:
    """Einstein midpoint in the Klein model, mapped back to the hyperboloid.

    ``k_mid = sum_i w_i gamma_i k_i / sum_i w_i gamma_i`` with Klein points ``k_i`` and Lorentz
    factors ``gamma_i = 1 / sqrt(1 - c|k_i|^2)`` (Ungar; Gulcehre et al. 2019, "Hyperbolic
    attention networks"), computed through :func:`to_klein` / :func:`from_klein`. The Lorentz
    factor is evaluated as the equal ``sqrt(c) x_0``: ``1 - c|k|^2`` cancels catastrophically
    in float32 for points far from the origin.

    Parameters
    ----------
    x : Tensor, shape (..., n, d)
        Points (space components).
    c : float or Tensor
        Curvature magnitude.
    weights : Tensor, shape (..., n), optional
        Non-negative weights; uniform when None.

    Returns
    -------
    Tensor, shape (..., d)
    """
    weights = _check_weights(x, weights)
    klein = to_klein(x, c)
    lorentz_factor = _sqrt_c(c) * time_component(x, c)
    w = weights * lorentz_factor
    klein_mid = torch.sum(w[..., None] * klein, dim=-2) / torch.sum(w, dim=-1)[..., None]
    return from_klein(klein_mid, c)


def to_poincare(x: Tensor, c: float | Tensor = 1.0) -> Tensor:
    """Poincare-ball coordinates ``x_s / (1 + sqrt(c) x_0)`` (ball of radius ``1/sqrt(c)``)."""
    return x / (1.0 + _sqrt_c(c) * time_component(x, c)[..., None])
