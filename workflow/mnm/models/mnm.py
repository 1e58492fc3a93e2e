"""MNM: hyperbolic (Lorentz-model) brain-text contrastive model with its three losses.

Baek et al., "MNM: Multi-level Neuroimaging Meta-analysis with Hyperbolic Brain-Text
Representations", MICCAI 2025. Text and brain features go through MLP encoders, a learnable
scale ``alpha`` and the exponential map at the origin of a hyperboloid of learnable curvature
``-c`` (as in MERU, Desai et al. 2023). Training minimises

    L = L_angle + lambda_centroid * L_centroid + lambda_hier * L_hier

* ``L_angle``: symmetric InfoNCE on ``-|exterior angle| / temperature``. The exterior angle is
  measured at the *generic* point (the cone apex) towards the *specific* one. In MNM brain
  activations are the generic side (pulled near the origin), so the apex is the brain point:
  ``score[i, j] = -angle(at brain_j, towards text_i)``.
* ``L_centroid``: the Lorentzian centroid of each modality's batch is pulled to a target
  distance from the origin, ``(d(0, mu_text) - p)^2 + (d(0, mu_brain) - q)^2`` with
  ``p = 2.0`` (text, far) and ``q = 0.5`` (brain, near).
* ``L_hier``: within the brain embeddings, a study with more active components ``R`` is more
  generic and should lie nearer the origin (smaller time component ``x_0``): every pair with
  ``R_i > R_j`` costs ``(R_i - R_j) * relu(log(x0_i / x0_j))``, averaged over such pairs.

Variants: ``mnm_reverse`` swaps the text and brain roles in the angle and centroid terms (text
is the cone apex and is pulled to ``q``, brain to ``p``); its within-brain ``L_hier`` is
unchanged. ``mnm_no_hier`` sets ``lambda_hier = 0``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mnm import lorentz

__all__ = ["MNM", "ResidualBlock", "ProjectionBlock", "make_encoder", "hierarchy_loss",
           "centroid_loss", "angle_infonce_loss", "VARIANTS"]

VARIANTS = ("mnm", "mnm_reverse", "mnm_no_hier")
CURVATURE_RANGE = (0.1, 10.0)
MAX_LOGIT_SCALE = 100.0


class ResidualBlock(nn.Module):
    """``LayerNorm(x + Dropout(Linear(GELU(Linear(x)))))`` (NeuroConText's residual head)."""

    def __init__(self, dim: int, dropout: float = 0.1):
        super().__init__()
        self.fc1 = nn.Linear(dim, dim)
        self.fc2 = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x + self.dropout(self.fc2(F.gelu(self.fc1(x)))))


class ProjectionBlock(nn.Module):
    """Residual block that first projects ``in_dim -> out_dim`` (NeuroConText's projection head).

    ``p = Linear(x)``; output ``LayerNorm(p + Dropout(Linear(GELU(p))))``.
    """

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.1):
        super().__init__()
        self.projection = nn.Linear(in_dim, out_dim)
        self.fc = nn.Linear(out_dim, out_dim)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: Tensor) -> Tensor:
        projected = self.projection(x)
        return self.norm(projected + self.dropout(self.fc(F.gelu(projected))))


def make_encoder(in_dim: int, latent_dim: int, n_residual: int, dropout: float) -> nn.Sequential:
    """Projection block followed by ``n_residual`` residual blocks (every block ends in LayerNorm).

    The text encoder is "projection + 2 residual layers" (``n_residual=2``). The brain encoder
    is "3 residual layers"; the atlas size generally differs from ``latent_dim``, so its first
    layer is the projecting residual block, which gives the same layout (``n_residual=2``).
    """
    if in_dim < 1 or latent_dim < 1:
        raise ValueError(f"encoder dims must be >= 1, got in_dim={in_dim}, latent_dim={latent_dim}")
    blocks = [ProjectionBlock(in_dim, latent_dim, dropout)]
    blocks += [ResidualBlock(latent_dim, dropout) for _ in range(n_residual)]
    return nn.Sequential(*blocks)


def angle_infonce_loss(scores: Tensor, temperature: Tensor) -> Tensor:
    """Symmetric InfoNCE (CLIP) on a square score matrix whose diagonal holds the true pairs.

    Parameters
    ----------
    scores : Tensor, shape (n, n)
        ``scores[i, j]`` for text ``i`` and brain ``j`` (higher = better).
    temperature : Tensor
        Positive scalar; logits are ``scores / temperature``.

    Returns
    -------
    Tensor
        Mean of the text->brain (rows) and brain->text (columns) cross-entropies.
    """
    logits = scores / temperature
    targets = torch.arange(scores.shape[0], device=scores.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def centroid_loss(
    first: Tensor, second: Tensor, c: Tensor | float, target_first: float, target_second: float
) -> Tensor:
    """``(d(0, mu_first) - target_first)^2 + (d(0, mu_second) - target_second)^2``.

    ``mu`` is the Lorentzian centroid (:func:`mnm.lorentz.lorentz_centroid`) of each batch.
    """
    d_first = lorentz.distance0(lorentz.lorentz_centroid(first, c), c)
    d_second = lorentz.distance0(lorentz.lorentz_centroid(second, c), c)
    return (d_first - target_first) ** 2 + (d_second - target_second) ** 2


def hierarchy_loss(embeddings: Tensor, n_active: Tensor, c: Tensor | float) -> Tensor:
    """Mean over pairs with ``R_i > R_j`` of ``(R_i - R_j) * relu(log(x0_i / x0_j))``.

    Parameters
    ----------
    embeddings : Tensor, shape (n, d)
        Brain embeddings (space components).
    n_active : Tensor, shape (n,)
        Number of active atlas components ``R`` per study.
    c : float or Tensor
        Curvature magnitude.

    Returns
    -------
    Tensor
        Scalar; 0 (with a graph) when no pair has ``R_i > R_j``.
    """
    log_time = torch.log(lorentz.time_component(embeddings, c))
    r = n_active.to(embeddings.dtype)
    r_gap = r[:, None] - r[None, :]
    ordered = r_gap > 0
    penalty = r_gap * F.relu(log_time[:, None] - log_time[None, :])
    n_pairs = ordered.sum()
    if n_pairs == 0:
        return log_time.sum() * 0.0
    return penalty[ordered].sum() / n_pairs


class MNM(nn.Module):
    """Hyperbolic brain-text model (MNM and its Reverse / no-hierarchy variants).

    Parameters
    ----------
    text_dim, brain_dim : int
        Input feature sizes (text embedding, atlas coefficients).
    latent_dim : int
        Shared latent size (space dimension of the hyperboloid).
    dropout : float
        Dropout in the encoders.
    curvature_init : float
        Initial ``c`` (learned as ``log c``, clamped to [0.1, 10]).
    target_text, target_brain : float
        Centroid target distances from the origin (``p``, ``q``).
    lambda_centroid, lambda_hier : float
        Loss weights.
    variant : {"mnm", "mnm_reverse", "mnm_no_hier"}
    """

    def __init__(
        self,
        text_dim: int,
        brain_dim: int,
        latent_dim: int = 512,
        dropout: float = 0.1,
        curvature_init: float = 1.0,
        target_text: float = 2.0,
        target_brain: float = 0.5,
        lambda_centroid: float = 0.5,
        lambda_hier: float = 30.0,
        variant: str = "mnm",
    ):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"MNM variant {variant!r} unknown; expected one of {VARIANTS}")
        if not CURVATURE_RANGE[0] <= curvature_init <= CURVATURE_RANGE[1]:
            raise ValueError(f"curvature_init={curvature_init} outside {CURVATURE_RANGE}")
        self.hparams = dict(
            text_dim=text_dim, brain_dim=brain_dim, latent_dim=latent_dim, dropout=dropout,
            curvature_init=curvature_init, target_text=target_text, target_brain=target_brain,
            lambda_centroid=lambda_centroid, lambda_hier=lambda_hier, variant=variant,
        )
        self.variant = variant
        self.reverse = variant == "mnm_reverse"
        #: Point at which :meth:`score` measures the exterior angle ("brain" or "text").
        self.angle_apex = "text" if self.reverse else "brain"
        self.target_text = float(target_text)
        self.target_brain = float(target_brain)
        self.lambda_centroid = float(lambda_centroid)
        self.lambda_hier = 0.0 if variant == "mnm_no_hier" else float(lambda_hier)

        self.text_encoder = make_encoder(text_dim, latent_dim, n_residual=2, dropout=dropout)
        self.brain_encoder = make_encoder(brain_dim, latent_dim, n_residual=2, dropout=dropout)
        # MERU: learnable log-curvature, log feature scales initialised so that the LayerNorm
        # output (norm ~ sqrt(latent_dim)) has norm ~ 1 before the exp map, log logit scale.
        self.log_curvature = nn.Parameter(torch.tensor(math.log(curvature_init)))
        self.log_alpha_text = nn.Parameter(torch.tensor(-0.5 * math.log(latent_dim)))
        self.log_alpha_brain = nn.Parameter(torch.tensor(-0.5 * math.log(latent_dim)))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / 0.07)))

    # -- learnable scalars (clamped functionally, in float32) ---------------------------------
    def curvature(self) -> Tensor:
        """Curvature magnitude ``c``, clamped to [0.1, 10]."""
        low, high = (math.log(v) for v in CURVATURE_RANGE)
        return torch.clamp(self.log_curvature.float(), low, high).exp()

    def temperature(self) -> Tensor:
        """Softmax temperature ``1 / logit_scale`` with the logit scale clamped to <= 100."""
        return torch.clamp(self.logit_scale.float(), max=math.log(MAX_LOGIT_SCALE)).neg().exp()

    def _alpha(self, log_alpha: Tensor) -> Tensor:
        # alpha <= 1: the clamp (<= 0 in log space) stops the scale from inflating norms.
        return torch.clamp(log_alpha.float(), max=0.0).exp()

    def _to_hyperboloid(self, features: Tensor, log_alpha: Tensor) -> Tensor:
        # sinh/acosh must not run in half precision: leave any autocast region here.
        with torch.autocast(device_type=features.device.type, enabled=False):
            return lorentz.exp_map0(features.float() * self._alpha(log_alpha), self.curvature())

    # -- protocol used by mnm.train ------------------------------------------------------------
    def encode_text(self, x: Tensor) -> Tensor:
        """Text features (n, text_dim) -> hyperboloid space components (n, latent_dim)."""
        return self._to_hyperboloid(self.text_encoder(x), self.log_alpha_text)

    def encode_brain(self, y: Tensor) -> Tensor:
        """Brain coefficients (n, brain_dim) -> hyperboloid space components (n, latent_dim)."""
        return self._to_hyperboloid(self.brain_encoder(y), self.log_alpha_brain)

    def score(self, text_emb: Tensor, brain_emb: Tensor) -> Tensor:
        """Retrieval scores ``-|exterior angle|``, shape (n_text, n_brain), higher = better.

        MNM: the angle is measured at the brain point (apex of the cone, nearer the origin)
        towards the text point. MNM-Reverse: at the text point towards the brain point.
        """
        c = self.curvature()
        text_emb, brain_emb = text_emb.float(), brain_emb.float()
        if self.reverse:
            angle = lorentz.pairwise_exterior_angle(text_emb, brain_emb, c)
        else:
            angle = lorentz.pairwise_exterior_angle(brain_emb, text_emb, c).T
        return -angle.abs()

    def loss(self, text_emb: Tensor, brain_emb: Tensor, n_active: Tensor) -> dict[str, Tensor]:
        """Total loss and its terms for a batch of matching (text, brain) pairs.

        Parameters
        ----------
        text_emb, brain_emb : Tensor, shape (n, latent_dim)
            Outputs of :meth:`encode_text` / :meth:`encode_brain`; row i of each is a pair.
        n_active : Tensor, shape (n,)
            Active atlas components per study (hierarchy level ``R``).

        Returns
        -------
        dict
            ``"loss"`` (total), ``"angle"``, ``"centroid"``, ``"hier"``.
        """
        if text_emb.shape != brain_emb.shape or n_active.shape != text_emb.shape[:1]:
            raise ValueError(
                f"MNM.loss: text {tuple(text_emb.shape)}, brain {tuple(brain_emb.shape)} and "
                f"n_active {tuple(n_active.shape)} must describe the same n pairs"
            )
        c = self.curvature()
        text_emb, brain_emb = text_emb.float(), brain_emb.float()
        angle = angle_infonce_loss(self.score(text_emb, brain_emb), self.temperature())
        # Reverse swaps which modality is pulled far (p) and which near (q).
        far, near = (brain_emb, text_emb) if self.reverse else (text_emb, brain_emb)
        centroid = centroid_loss(far, near, c, self.target_text, self.target_brain)
        hier = hierarchy_loss(brain_emb, n_active.to(brain_emb.device), c)
        total = angle + self.lambda_centroid * centroid + self.lambda_hier * hier
        return {"loss": total, "angle": angle, "centroid": centroid, "hier": hier}

    def no_decay_parameter_names(self) -> set[str]:
        """Parameters excluded from weight decay: curvature, feature scales, temperature."""
        return {"log_curvature", "log_alpha_text", "log_alpha_brain", "logit_scale"}

    @torch.no_grad()
    def log_scalars(self) -> dict[str, float]:
        """Current curvature, temperature and feature scales, for the training history."""
        return {
            "curvature": float(self.curvature()),
            "temperature": float(self.temperature()),
            "alpha_text": float(self._alpha(self.log_alpha_text)),
            "alpha_brain": float(self._alpha(self.log_alpha_brain)),
        }
