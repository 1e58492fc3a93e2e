"""Trained text-brain models behind one numpy interface, saved without pickle.

Four families share :class:`TrainedModel` (used by training, the report and the query tool):

* :class:`TorchModel`: MNM variants, NeuroConText, the MLP regression (a torch module, the
  text standardisation of its fit set, and for contrastive models an optional ridge *decoder*
  from the text embedding to atlas coefficients, for text -> map prediction);
* :class:`VoxelMapModel`: Text2Brain, a torch module that decodes the text into a voxel map on
  a coarse grid; its brain side is the article's KDE map on that grid (:mod:`mnm.kde_maps`),
  not atlas coefficients (``brain_input == "kde_4mm"``);
* :class:`RidgeModel`: RidgeCV from standardised text embeddings to coefficients;
* :class:`TfidfModel`: TF-IDF of the raw section text + RidgeCV.

``save(path)`` writes a :mod:`mnm.checkpoint` file (safetensors tensors + a JSON document);
:func:`load_trained` rebuilds the right family from it. Nothing is unpickled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from mnm.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mnm.models.regression import LinearMap, TfidfRidge
from mnm.registry import MNM_VARIANTS, MODEL_NAMES, SCORE_KIND_OF_MODEL, TORCH_MODELS, VOXEL_MODELS
from mnm.scoring import score_matrix

__all__ = [
    "MNM_VARIANTS",
    "TORCH_MODELS",
    "MODEL_NAMES",
    "SCORE_KIND_OF_MODEL",
    "Standardizer",
    "TrainedModel",
    "TorchModel",
    "RidgeModel",
    "TfidfModel",
    "VoxelMapModel",
    "VOXEL_MODELS",
    "build_torch_module",
    "load_trained",
    "resolve_device",
]



def resolve_device(device) -> torch.device:
    """``auto``/None -> cuda when available, else cpu; asking for absent cuda is an error."""
    from mnm.text.encoder import resolve_device as resolve_device_name

    return torch.device(resolve_device_name(device, key="models.device"))


def build_torch_module(model_name: str, text_dim: int, brain_dim: int, **kwargs) -> torch.nn.Module:
    """Instantiate the torch module of a model of :data:`TORCH_MODELS`."""
    if model_name in MNM_VARIANTS:
        from mnm.models.mnm import MNM

        return MNM(text_dim, brain_dim, variant=model_name, **kwargs)
    if model_name == "neurocontext":
        from mnm.models.neurocontext import NeuroConText

        return NeuroConText(text_dim, brain_dim, **kwargs)
    if model_name == "mlp":
        from mnm.models.regression import MLPRegression

        return MLPRegression(text_dim, brain_dim, **kwargs)
    if model_name == "text2brain":
        from mnm.models.text2brain import Text2Brain

        return Text2Brain(text_dim, brain_dim, **kwargs)
    raise ValueError(f"{model_name!r} is not a torch model; expected one of {TORCH_MODELS}")


@dataclass
class Standardizer:
    """Per-feature standardisation fitted on the fit set (``(x - mean) / scale``).

    Two numpy lines rather than scikit-learn's StandardScaler, whose import costs a torch
    training job more than a second of start-up; it matches StandardScaler (population std,
    constant features left unscaled), which a test checks.
    """

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, X) -> Standardizer:
        X = np.asarray(X, dtype=np.float64)
        scale = X.std(axis=0)
        return cls(X.mean(axis=0), np.where(scale > 0, scale, 1.0))

    def transform(self, X) -> np.ndarray:
        return ((np.asarray(X, dtype=np.float64) - self.mean) / self.scale).astype(np.float32)


def _looks_like_texts(values) -> bool:
    """True for a str or a non-empty sequence / array of str."""
    if isinstance(values, str):
        return True
    if isinstance(values, np.ndarray):
        return values.dtype.kind in "US" or (values.dtype.kind == "O" and values.size > 0
                                             and isinstance(values.flat[0], str))
    if isinstance(values, pd.Series):
        return len(values) > 0 and isinstance(values.iloc[0], str)
    return isinstance(values, (list, tuple)) and len(values) > 0 and isinstance(values[0], str)


class TrainedModel:
    """A trained fold model with a numpy interface.

    Attributes
    ----------
    name : str
        Model name (:data:`MODEL_NAMES`).
    score_kind : str
        ``angle``, ``cosine`` or ``correlation`` (:func:`mnm.scoring.score_matrix`).
    curvature : float or None
        Curvature of the hyperboloid for ``angle`` models.
    angle_apex : str
        Where angles are measured (``brain`` or ``text``), for ``angle`` models.
    metadata : dict
        Encoder (and its config), section, atlas, fold, repeat, seed, parameters, input
        dims, best epoch, fit/validation/test ids.
    """

    family = ""
    #: What ``embed_brain`` takes: atlas ``coefficients`` or the ``kde_4mm`` voxel maps.
    brain_input = "coefficients"

    def __init__(self, name: str, metadata: dict, curvature: float | None = None,
                 angle_apex: str = ""):
        self.name = name
        self.metadata = metadata
        self.score_kind = SCORE_KIND_OF_MODEL[name]
        self.curvature = curvature
        self.angle_apex = angle_apex or ("brain" if self.score_kind == "angle" else "")
        self._text_encoder = None

    # ---- to implement per family
    def embed_text(self, X_or_texts) -> np.ndarray:
        """Text embeddings as scored (predicted coefficients for regressions)."""
        raise NotImplementedError

    def embed_brain(self, coefficients) -> np.ndarray:
        """Brain embeddings as scored (the coefficients themselves for regressions)."""
        coefficients = self._check_dims(coefficients, "brain_dim", "coefficients")
        return coefficients.astype(np.float32)

    def predict_brain(self, X_or_texts) -> np.ndarray | None:
        """Predicted atlas coefficients (None when the model has no decoder)."""
        return self.embed_text(X_or_texts)

    def predict_map(self, X_or_texts):
        """Predicted voxel map (NIfTI) of models that decode voxels directly, else None."""
        return None

    def _arrays(self) -> tuple[dict, dict]:
        """Tensors and JSON fields of this family's checkpoint."""
        raise NotImplementedError

    # ---- shared
    def score(self, text_emb, brain_emb) -> np.ndarray:
        """Retrieval scores ``(n_text, n_brain)``, higher = better."""
        return score_matrix(self.score_kind, text_emb, brain_emb, self.curvature, self.angle_apex)

    def save(self, path) -> None:
        """Write ``model.safetensors`` (see :mod:`mnm.checkpoint`)."""
        tensors, fields = self._arrays()
        save_checkpoint(path, tensors, {
            "model_name": self.name, "family": self.family, "curvature": self.curvature,
            "angle_apex": self.angle_apex, "metadata": self.metadata, **fields,
        })

    def _check_dims(self, X, key: str, what: str) -> np.ndarray:
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        if X.shape[1] != self.metadata[key]:
            raise ValueError(f"{what} have {X.shape[1]} dims, model {self.name} expects {self.metadata[key]}")
        return X

    def _text_features(self, X_or_texts) -> np.ndarray:
        """Raw texts -> encoder vectors (the run's text encoder); vectors pass through."""
        if _looks_like_texts(X_or_texts):
            texts = [X_or_texts] if isinstance(X_or_texts, str) else list(X_or_texts)
            X_or_texts = self._encode_texts(texts)
        return self._check_dims(X_or_texts, "text_dim", "text features")

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        if self._text_encoder is None:
            if not self.metadata.get("encoder_config"):
                raise ValueError(f"model {self.name} has no stored encoder config: pass embeddings, not texts")
            from mnm.text import Encoder

            self._text_encoder = Encoder.from_config(self.metadata["encoder_config"],
                                                     str(getattr(self, "device", "cpu")))
        return self._text_encoder.embed(texts)


def _linear_tensors(prefix: str, linear: LinearMap | None) -> dict:
    if linear is None:
        return {}
    return {f"{prefix}.coef": linear.coef, f"{prefix}.intercept": linear.intercept}


def _linear_from(tensors: dict, fields: dict, prefix: str) -> LinearMap | None:
    if f"{prefix}.coef" not in tensors:
        return None
    return LinearMap(tensors[f"{prefix}.coef"].double().numpy(),
                     tensors[f"{prefix}.intercept"].double().numpy(), float(fields[f"{prefix}_alpha"]))


class TorchModel(TrainedModel):
    """A torch module (:data:`TORCH_MODELS`), its text standardisation and optional decoder."""

    family = "torch"

    def __init__(self, name, module, standardizer: Standardizer, constructor: dict, metadata: dict,
                 decoder: LinearMap | None = None, device="cpu"):
        curvature, apex = None, ""
        if SCORE_KIND_OF_MODEL[name] == "angle":
            curvature, apex = float(module.curvature().detach()), module.angle_apex
        super().__init__(name, metadata, curvature, apex)
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        self.standardizer = standardizer
        self.constructor = dict(constructor)
        self.decoder = decoder

    def embed_text(self, X_or_texts) -> np.ndarray:
        from mnm.training.loop import encode

        features = self.standardizer.transform(self._text_features(X_or_texts))
        return encode(self.module.encode_text, features, self.device)

    def embed_brain(self, coefficients) -> np.ndarray:
        from mnm.training.loop import encode

        coefficients = super().embed_brain(coefficients)
        return encode(self.module.encode_brain, coefficients, self.device)

    def predict_brain(self, X_or_texts) -> np.ndarray | None:
        if self.name == "mlp":
            return self.embed_text(X_or_texts)
        if self.decoder is None:
            return None
        return self.decoder.predict(self.embed_text(X_or_texts)).astype(np.float32)

    def _arrays(self):
        tensors = {f"module.{k}": v for k, v in self.module.state_dict().items()}
        tensors |= {"standardizer.mean": self.standardizer.mean,
                    "standardizer.scale": self.standardizer.scale}
        tensors |= _linear_tensors("decoder", self.decoder)
        fields = {"constructor": self.constructor,
                  "decoder_alpha": None if self.decoder is None else self.decoder.alpha}
        return tensors, fields

    @staticmethod
    def _parts_from(name, tensors, fields, metadata):
        """(module with its weights, standardizer) of a torch checkpoint."""
        module = build_torch_module(name, metadata["text_dim"], metadata["brain_dim"], **fields["constructor"])
        state = {k[len("module."):]: v for k, v in tensors.items() if k.startswith("module.")}
        module.load_state_dict(state)
        standardizer = Standardizer(tensors["standardizer.mean"].double().numpy(),
                                    tensors["standardizer.scale"].double().numpy())
        return module, standardizer

    @classmethod
    def from_checkpoint(cls, name, tensors, fields, metadata, device="cpu") -> TorchModel:
        module, standardizer = cls._parts_from(name, tensors, fields, metadata)
        return cls(name, module, standardizer, fields["constructor"], metadata,
                   _linear_from(tensors, fields, "decoder"), device)


class VoxelMapModel(TorchModel):
    """Text2Brain: text -> voxel map on a coarse grid; brain side = KDE maps on that grid.

    ``embed_text`` gives the predicted map at the mask voxels, ``embed_brain`` the article's
    max-normalised KDE map at the same voxels (it takes the rows of ``kde_4mm/maps.parquet``,
    not atlas coefficients), scored by Pearson correlation. ``predict_map`` returns the
    predicted map as a NIfTI image on the model's grid (the report resamples it to the analysis
    grid); ``brain_vector`` brings any MNI map onto that grid, for map -> text queries.
    """

    family = "voxel"
    brain_input = "kde_4mm"

    def __init__(self, name, module, standardizer: Standardizer, constructor: dict, metadata: dict,
                 affine, device="cpu"):
        super().__init__(name, module, standardizer, constructor, metadata, None, device)
        self.affine = np.asarray(affine, dtype=np.float64)

    @property
    def mask(self) -> np.ndarray:
        """3D bool brain mask of the output grid."""
        return self.module.mask.cpu().numpy()

    def predict_brain(self, X_or_texts) -> None:
        """No atlas coefficients: the model predicts voxels (:meth:`predict_map`)."""
        return None

    def predict_map(self, X_or_texts):
        """Predicted map of each text: a 3D image for one text, 4D for several (0 off the mask)."""
        import nibabel as nib

        predicted = np.atleast_2d(self.embed_text(X_or_texts))
        volume = np.zeros(self.mask.shape + (len(predicted),), dtype=np.float32)
        volume[self.mask] = predicted.T
        return nib.Nifti1Image(volume[..., 0] if len(predicted) == 1 else volume, self.affine)

    def brain_vector(self, img) -> np.ndarray:
        """Any 3D MNI map at the mask voxels of the model's grid (nilearn resampling if needed)."""
        from nilearn.image import resample_img

        if img.shape[:3] != self.mask.shape or not np.allclose(img.affine, self.affine):
            img = resample_img(img, target_affine=self.affine, target_shape=self.mask.shape,
                               interpolation="continuous", force_resample=True, copy_header=True)
        data = np.asarray(img.dataobj, dtype=np.float32)
        return np.nan_to_num(data.reshape(self.mask.shape)[self.mask])

    def _arrays(self):
        tensors, fields = super()._arrays()
        return tensors, {**fields, "affine": self.affine.tolist()}

    @classmethod
    def from_checkpoint(cls, name, tensors, fields, metadata, device="cpu") -> VoxelMapModel:
        module, standardizer = cls._parts_from(name, tensors, fields, metadata)
        return cls(name, module, standardizer, fields["constructor"], metadata, fields["affine"], device)


class RidgeModel(TrainedModel):
    """RidgeCV from standardised text embeddings to atlas coefficients."""

    family = "ridge"

    def __init__(self, name, ridge: LinearMap, standardizer: Standardizer, metadata: dict):
        super().__init__(name, metadata)
        self.ridge = ridge
        self.standardizer = standardizer

    def embed_text(self, X_or_texts) -> np.ndarray:
        features = self.standardizer.transform(self._text_features(X_or_texts))
        return self.ridge.predict(features).astype(np.float32)

    def _arrays(self):
        tensors = _linear_tensors("ridge", self.ridge) | {
            "standardizer.mean": self.standardizer.mean, "standardizer.scale": self.standardizer.scale}
        return tensors, {"ridge_alpha": self.ridge.alpha}

    @classmethod
    def from_checkpoint(cls, name, tensors, fields, metadata, device="cpu") -> RidgeModel:
        standardizer = Standardizer(tensors["standardizer.mean"].double().numpy(),
                                    tensors["standardizer.scale"].double().numpy())
        return cls(name, _linear_from(tensors, fields, "ridge"), standardizer, metadata)


class TfidfModel(TrainedModel):
    """TF-IDF of the section's raw text followed by RidgeCV (it takes texts, not vectors)."""

    family = "tfidf"

    def __init__(self, name, tfidf: TfidfRidge, metadata: dict):
        super().__init__(name, metadata)
        self.tfidf = tfidf

    def embed_text(self, X_or_texts) -> np.ndarray:
        if not _looks_like_texts(X_or_texts):
            raise TypeError("the tfidf model takes raw texts, not vectors")
        texts = [X_or_texts] if isinstance(X_or_texts, str) else list(X_or_texts)
        return self.tfidf.predict(texts).astype(np.float32)

    def embed_term_counts(self, term_counts) -> np.ndarray:
        """:meth:`embed_text` of texts already counted (:class:`mnm.text.term_counts.TermCounts`)."""
        return self.tfidf.predict_counts(term_counts).astype(np.float32)

    def _arrays(self):
        tensors = _linear_tensors("ridge", self.tfidf.ridge) | {"tfidf.idf": self.tfidf.idf}
        return tensors, {"ridge_alpha": self.tfidf.ridge.alpha, "vocabulary": self.tfidf.vocabulary}

    @classmethod
    def from_checkpoint(cls, name, tensors, fields, metadata, device="cpu") -> TfidfModel:
        tfidf = TfidfRidge(dict(fields["vocabulary"]), tensors["tfidf.idf"].double().numpy(),
                           _linear_from(tensors, fields, "ridge"))
        return cls(name, tfidf, metadata)


FAMILIES = {cls.family: cls for cls in (TorchModel, VoxelMapModel, RidgeModel, TfidfModel)}


def load_trained(path, device: str = "cpu") -> TrainedModel:
    """Load a ``model.safetensors`` written by :meth:`TrainedModel.save` (never unpickles).

    Raises
    ------
    FileNotFoundError, mnm.checkpoint.CheckpointError
        Missing file; not a checkpoint of this pipeline (e.g. a pickle).
    """
    tensors, document = load_checkpoint(path)
    family = FAMILIES.get(document.get("family"))
    name = document.get("model_name")
    if family is None or name not in MODEL_NAMES:
        raise CheckpointError(f"{path}: unknown model family {document.get('family')!r} or "
                              f"model {name!r}")
    return family.from_checkpoint(name, tensors, document, document["metadata"],
                                  device=resolve_device(device))
