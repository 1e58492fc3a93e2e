"""MNM: hyperbolic (Lorentz-model) brain-text contrastive model with its three losses.

Baek et al., "MNM: Multi-level Neuroimaging Meta-analysis with Hyperbolic Brain-Text
Representations", MICCAI 2025. Text and brain features go through the encoders shared with
NeuroConText (:func:`mnm.models.base.make_encoder`, ending in LayerNorm), a *radius head*, a
learnable scale ``alpha`` and the exponential map at the origin of a hyperboloid of learnable
curvature ``-c`` (MERU, Desai et al. 2023). Training minimises

    L = L_angle + lambda_centroid * L_centroid + lambda_hier * L_hier

* ``L_angle``: symmetric InfoNCE on ``-|exterior angle| / temperature``. The exterior angle is
  measured at the *generic* point (the cone apex) towards the *specific* one; in MNM brain maps
  are the generic side, so ``score[i, j] = -angle(at brain_j, towards text_i)``.
* ``L_centroid``: the Lorentzian centroid of each modality's batch is pulled to a target
  distance from the origin, ``p = 2.0`` for text (far) and ``q = 0.5`` for brain (near).
  ``centroid_form="abs"`` is the paper's ``|d(mu, O) - target|`` (default);
  ``"squared"`` is ``(d(mu, O) - target)^2``.
* ``L_hier``: a brain map with more active components ``R`` is broader, more generic, and should
  lie nearer the origin (smaller time component ``x0``): every pair with ``R_i > R_j`` costs
  ``(R_i - R_j) * relu(log(x0_i / x0_j) + m)``. ``hier_normalisation="pairs"`` averages over
  the ordered pairs (the formula as documented in shared/design.md); ``"gap"`` divides by the
  sum of the gaps ``R_i - R_j`` instead, which makes the loss a weighted mean of log-ratio
  violations and so independent of the atlas size (R runs to 384 for AICHA, 1,024 for DiFuMo).
  The margin ``m`` (``hier_margin``) is this project's addition: with ``m = 0`` (the paper)
  "every map at one radius" is a minimum of the loss, and training drifts there (the radius
  spread collapses as lambda_hier grows); ``m > 0`` asks the narrower map to lie a factor
  ``e^m`` farther out, which keeps the radii spread.

Radius head (``radius_head``):

* ``"free"`` (default, MERU's pattern): LayerNorm output -> bias-free ``Linear`` (initialised
  at the identity) -> ``alpha`` -> exp map. The linear map lets the norm of the tangent
  vector, hence the distance to the origin, vary from input to input: the radius can carry
  specificity.
* ``"pinned"`` (the public MNM code): LayerNorm output -> ``alpha`` -> exp map. Every
  LayerNorm output has norm ~ ``sqrt(latent_dim)``, so all embeddings sit at one radius, the
  angle score ranks exactly like cosine, and ``L_hier`` has nothing to act on. Kept to
  reproduce the public code.

Curvature (``log c``), the two ``alpha`` (``log alpha``, ``alpha <= 1``) and the logit scale
(``<= 100``) are clamped on the stored parameters after each optimiser step
(:meth:`MNM.clamp_parameters`, called by the trainer), never inside ``forward``, where a clamp
would stop the gradient past the bound. The exponential map runs in float32.

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
from mnm.models.base import make_encoder, symmetric_info_nce
from mnm.scoring import angle_scores

__all__ = ["MNM", "hierarchy_loss", "centroid_loss", "VARIANTS", "RADIUS_HEADS",
           "CENTROID_FORMS", "HIER_NORMALISATIONS"]

VARIANTS = ("mnm", "mnm_reverse", "mnm_no_hier")
RADIUS_HEADS = ("free", "pinned")
CENTROID_FORMS = ("abs", "squared")
HIER_NORMALISATIONS = ("pairs", "gap")
#: Curvature bounds relative to its initial value (MERU and HyCoCLIP: [c0 / 10, 10 c0]).
CURVATURE_SPAN = 10.0
MAX_LOGIT_SCALE = 100.0


def centroid_loss(
    first: Tensor, second: Tensor, c: Tensor | float, target_first: float, target_second: float,
    form: str = "abs",
) -> Tensor:
    """Distance of each batch's Lorentzian centroid to the origin, pulled to its target.

    ``form="abs"``: ``|d(0, mu_first) - p| + |d(0, mu_second) - q|`` (the paper);
    ``form="squared"``: the same with squares. ``mu`` is the Lorentzian centroid
    (:func:`mnm.lorentz.lorentz_centroid`). The distance to the origin is
    ``acosh(sqrt(c) mu_0) / sqrt(c)``, whose argument is >= 1 only up to rounding and whose
    derivative is infinite at 1 (a centroid at the origin); it is computed as the equal
    ``asinh(sqrt(c) |mu_s|) / sqrt(c)`` (:func:`mnm.lorentz.distance0`), defined and smooth for
    every point, so no clamp of the acosh domain is needed.
    """
    if form not in CENTROID_FORMS:
        raise ValueError(f"centroid form {form!r} unknown; expected one of {CENTROID_FORMS}")
    gap_first = lorentz.distance0(lorentz.lorentz_centroid(first, c), c) - target_first
    gap_second = lorentz.distance0(lorentz.lorentz_centroid(second, c), c) - target_second
    if form == "abs":
        return gap_first.abs() + gap_second.abs()
    return gap_first**2 + gap_second**2


def hierarchy_loss(embeddings: Tensor, n_active: Tensor, c: Tensor | float,
                   normalisation: str = "pairs", margin: float = 0.0) -> Tensor:
    """Pairs with ``R_i > R_j`` cost ``(R_i - R_j) * relu(log(x0_i / x0_j))``.

    Parameters
    ----------
    embeddings : Tensor, shape (n, d)
        Brain embeddings (space components).
    n_active : Tensor, shape (n,)
        Number of active atlas components ``R`` per study.
    c : float or Tensor
        Curvature magnitude.
    normalisation : {"pairs", "gap"}
        Divide the summed cost by the number of ordered pairs, or by the sum of their gaps.
    margin : float
        ``m`` in ``relu(log(x0_i / x0_j) + m)`` (0: the paper's loss).

    Returns
    -------
    Tensor
        Scalar; 0 (with a graph) when no pair has ``R_i > R_j``.
    """
    if normalisation not in HIER_NORMALISATIONS:
        raise ValueError(f"hierarchy normalisation {normalisation!r} unknown; expected one of "
                         f"{HIER_NORMALISATIONS}")
    log_time = torch.log(lorentz.time_component(embeddings, c))
    r = n_active.to(embeddings.dtype)
    gap = F.relu(r[:, None] - r[None, :])
    total = (gap * F.relu(log_time[:, None] - log_time[None, :] + margin)).sum()
    denominator = (gap > 0).sum() if normalisation == "pairs" else gap.sum()
    if denominator == 0:
        return log_time.sum() * 0.0
    return total / denominator


def _radius_head(kind: str, dim: int) -> nn.Module:
    """The layer between the encoder's LayerNorm and ``alpha`` (see the module docstring).

    The free head is a bias-free linear map initialised at the identity: at initialisation
    the model equals the pinned one, so any spread of radii is learned, not an artefact of a
    random projection (measured on the embedded corpus: a random init costs retrieval).
    """
    if kind == "free":
        linear = nn.Linear(dim, dim, bias=False)
        nn.init.eye_(linear.weight)
        return linear
    return nn.Identity()


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
    radius_head : {"free", "pinned"}
        See the module docstring.
    curvature_init : float
        Initial ``c`` (learned as ``log c``, kept in ``[c0 / 10, 10 c0]``).
    target_text, target_brain : float
        Centroid target distances from the origin (``p``, ``q``).
    lambda_centroid, lambda_hier : float
        Loss weights.
    centroid_form : {"abs", "squared"}
        See :func:`centroid_loss`.
    hier_normalisation : {"pairs", "gap"}
        See :func:`hierarchy_loss`.
    hier_margin : float
        See :func:`hierarchy_loss` (0: the paper's loss).
    variant : {"mnm", "mnm_reverse", "mnm_no_hier"}
    """

    def __init__(
        self,
        text_dim: int,
        brain_dim: int,
        latent_dim: int = 512,
        dropout: float = 0.1,
        radius_head: str = "free",
        curvature_init: float = 1.0,
        target_text: float = 2.0,
        target_brain: float = 0.5,
        lambda_centroid: float = 0.5,
        lambda_hier: float = 30.0,
        centroid_form: str = "abs",
        hier_normalisation: str = "pairs",
        hier_margin: float = 0.0,
        variant: str = "mnm",
    ):
        super().__init__()
        for name, value, allowed in (("variant", variant, VARIANTS),
                                     ("radius_head", radius_head, RADIUS_HEADS),
                                     ("centroid_form", centroid_form, CENTROID_FORMS),
                                     ("hier_normalisation", hier_normalisation, HIER_NORMALISATIONS)):
            if value not in allowed:
                raise ValueError(f"MNM {name} {value!r} unknown; expected one of {allowed}")
        if not curvature_init > 0:
            raise ValueError(f"curvature_init must be positive, got {curvature_init}")
        self.variant = variant
        self.reverse = variant == "mnm_reverse"
        #: Point at which :meth:`score` measures the exterior angle ("brain" or "text").
        self.angle_apex = "text" if self.reverse else "brain"
        self.target_text = float(target_text)
        self.target_brain = float(target_brain)
        self.lambda_centroid = float(lambda_centroid)
        self.lambda_hier = 0.0 if variant == "mnm_no_hier" else float(lambda_hier)
        self.centroid_form = centroid_form
        self.hier_normalisation = hier_normalisation
        self.hier_margin = float(hier_margin)
        self.log_curvature_bounds = (math.log(curvature_init / CURVATURE_SPAN),
                                     math.log(curvature_init * CURVATURE_SPAN))

        self.text_encoder = make_encoder(text_dim, latent_dim, dropout)
        self.brain_encoder = make_encoder(brain_dim, latent_dim, dropout)
        self.text_head = _radius_head(radius_head, latent_dim)
        self.brain_head = _radius_head(radius_head, latent_dim)
        # MERU: log-curvature; log feature scales initialised so that a LayerNorm output (norm
        # ~ sqrt(latent_dim)) enters the exp map with norm ~ 1; log logit scale 1 / 0.07.
        self.log_curvature = nn.Parameter(torch.tensor(math.log(curvature_init)))
        self.log_alpha_text = nn.Parameter(torch.tensor(-0.5 * math.log(latent_dim)))
        self.log_alpha_brain = nn.Parameter(torch.tensor(-0.5 * math.log(latent_dim)))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / 0.07)))

    # -- learnable scalars ------------------------------------------------------------------
    @torch.no_grad()
    def clamp_parameters(self) -> None:
        """Keep the stored scalars in bounds (called by the trainer after each step).

        ``log c`` in ``[log(c0/10), log(10 c0)]``; ``log alpha <= 0`` (alpha never inflates
        norms); ``log logit_scale <= log(100)`` (CLIP's cap).
        """
        self.log_curvature.clamp_(*self.log_curvature_bounds)
        self.log_alpha_text.clamp_(max=0.0)
        self.log_alpha_brain.clamp_(max=0.0)
        self.logit_scale.clamp_(max=math.log(MAX_LOGIT_SCALE))

    def curvature(self) -> Tensor:
        """Curvature magnitude ``c`` (float32)."""
        return self.log_curvature.float().exp()

    def temperature(self) -> Tensor:
        """Softmax temperature ``1 / logit_scale``."""
        return self.logit_scale.float().neg().exp()

    def _to_hyperboloid(self, features: Tensor, log_alpha: Tensor) -> Tensor:
        # sinh/acosh must not run in half precision: leave any autocast region here.
        with torch.autocast(device_type=features.device.type, enabled=False):
            return lorentz.exp_map0(features.float() * log_alpha.float().exp(), self.curvature())

    # -- protocol used by the trainer ---------------------------------------------------------
    def encode_text(self, x: Tensor) -> Tensor:
        """Text features (n, text_dim) -> hyperboloid space components (n, latent_dim)."""
        return self._to_hyperboloid(self.text_head(self.text_encoder(x)), self.log_alpha_text)

    def encode_brain(self, y: Tensor) -> Tensor:
        """Brain coefficients (n, brain_dim) -> hyperboloid space components (n, latent_dim)."""
        return self._to_hyperboloid(self.brain_head(self.brain_encoder(y)), self.log_alpha_brain)

    def score(self, text_emb: Tensor, brain_emb: Tensor) -> Tensor:
        """Retrieval scores ``-|exterior angle|``, shape (n_text, n_brain), higher = better.

        MNM: the angle is measured at the brain point (apex of the cone, nearer the origin)
        towards the text point. MNM-Reverse: at the text point towards the brain point.
        """
        return angle_scores(text_emb.float(), brain_emb.float(), self.curvature(), self.angle_apex)

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
        angle = symmetric_info_nce(self.score(text_emb, brain_emb) / self.temperature())
        # Reverse swaps which modality is pulled far (p) and which near (q).
        far, near = (brain_emb, text_emb) if self.reverse else (text_emb, brain_emb)
        centroid = centroid_loss(far, near, c, self.target_text, self.target_brain,
                                 self.centroid_form)
        hier = hierarchy_loss(brain_emb, n_active.to(brain_emb.device), c, self.hier_normalisation,
                              self.hier_margin)
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
            "alpha_text": float(self.log_alpha_text.exp()),
            "alpha_brain": float(self.log_alpha_brain.exp()),
        }
