"""Multi-level brain-map prediction from text (MNM Fig. 4): the two routes from text to voxels.

Two routes turn a text into a voxel map:

* **parcel route** (any contrastive model, MNM's Fig. 4): each parcel of an atlas hierarchy
  level gets a brain vector, embedded by the model's brain encoder; the text embedding is scored
  against every parcel embedding, the scores go through a softmax, and each parcel's weight is
  painted onto its voxels. A parcel's brain vector is the least-squares projection of its binary
  mask on the atlas (``BrainProjector.transform_img``), i.e. the coefficients the brain encoder
  would see for a map that is uniformly active over the parcel; without a projector, the
  indicator of the parcel's components is used (equal for a disjoint atlas up to scale).
* **decoder route** (regression baselines): ``TrainedModel.predict_brain`` gives atlas
  coefficients, mapped to voxels by ``BrainProjector.inverse_transform``.
* **voxel route** (Text2Brain, :data:`mnm.registry.VOXEL_MODELS`): the model's own voxel map
  (``TrainedModel.predict_map``, 4 mm) resampled to the analysis grid by nilearn (continuous
  interpolation). These models have no parcel route: their brain side is a voxel map, not
  atlas coefficients.

The Dice evaluation of these maps is :mod:`mnm.report.map_eval`.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd

__all__ = [
    "level_columns",
    "informative_levels",
    "parcel_assignment",
    "component_label_volume",
    "parcel_label_volume",
    "parcel_coefficients",
    "parcel_embeddings",
    "parcel_weights",
    "paint_parcels",
    "predict_parcel_map",
    "predict_decoder_map",
    "predict_voxel_map",
]

def level_columns(components: pd.DataFrame) -> list[str]:
    """Hierarchy level columns of ``components.parquet`` (``level_1`` coarsest first)."""
    columns = sorted(
        (c for c in components.columns if c.startswith("level_")),
        key=lambda c: int(c.split("_")[1]) if c.split("_")[1].isdigit() else 0,
    )
    if not columns:
        raise ValueError(f"components table has no level_* column (has {list(components.columns)})")
    return columns


def informative_levels(components: pd.DataFrame, min_parcels: int = 3) -> list[str]:
    """Level columns with at least ``min_parcels`` parcels (e.g. drops AICHA's hemispheres)."""
    levels = [c for c in level_columns(components) if components[c].nunique() >= min_parcels]
    return levels or level_columns(components)[-1:]


def parcel_assignment(components: pd.DataFrame, level: str) -> tuple[list[str], np.ndarray]:
    """Parcels of one level and the parcel index of every component.

    Returns
    -------
    names : list of str
        Parcel labels in order of first appearance.
    component_parcel : numpy.ndarray of int, shape (n_components,)
    """
    if level not in components.columns:
        raise ValueError(f"components table has no column {level!r}")
    labels = components[level].astype(str).to_numpy()
    names = list(dict.fromkeys(labels))
    lookup = {name: i for i, name in enumerate(names)}
    return names, np.array([lookup[label] for label in labels], dtype=np.int64)


def component_label_volume(maps_img, projector=None) -> np.ndarray:
    """3D array of the component index of each voxel (-1 outside every component).

    A voxel belongs to the component with the largest map value there (the usual
    max-probability labelling of a probabilistic atlas; exact for a deterministic one).
    Computing this is an argmax over the 4D atlas: do it once and pass the result to
    :func:`parcel_label_volume` for every level. With a fitted ``projector`` the argmax
    runs over its atlas voxels only (same result: every other voxel is -1).
    """
    if projector is not None:
        design = projector.design_
        winner = np.where(design.max(axis=1) > 0, design.argmax(axis=1), -1)
        volume = np.full(projector.atlas_voxels_.shape, -1, dtype=np.int64)
        volume[projector.atlas_voxels_] = winner
        return volume
    maps = np.asarray(maps_img.dataobj, dtype=np.float32)
    if maps.ndim != 4:
        raise ValueError(f"atlas must be 4D, got shape {maps.shape}")
    winner = maps.argmax(axis=3)
    winner[maps.max(axis=3) <= 0] = -1
    return winner


def parcel_label_volume(maps_img_or_labels, component_parcel: np.ndarray) -> np.ndarray:
    """3D array of the parcel index of each voxel (-1 outside every component).

    Parameters
    ----------
    maps_img_or_labels : 4D image, or 3D int array from :func:`component_label_volume`
    component_parcel : (n_components,) int array
        Parcel index of each component (:func:`parcel_assignment`).
    """
    if isinstance(maps_img_or_labels, np.ndarray) and maps_img_or_labels.ndim == 3:
        components = maps_img_or_labels
    else:
        components = component_label_volume(maps_img_or_labels)
        if maps_img_or_labels.shape[3] != len(component_parcel):
            raise ValueError(
                f"atlas has shape {maps_img_or_labels.shape} but components table has "
                f"{len(component_parcel)} rows"
            )
    component_parcel = np.asarray(component_parcel, dtype=np.int64)
    return np.where(components >= 0, component_parcel[np.maximum(components, 0)], -1)


def parcel_coefficients(
    maps_img, components: pd.DataFrame, level: str, projector=None, zscore: bool = False,
    component_labels: np.ndarray | None = None,
) -> tuple[list[str], np.ndarray]:
    """Brain vectors (atlas coefficients) of the parcels of one hierarchy level.

    Parameters
    ----------
    maps_img : nibabel image, 4D
        The atlas maps (``atlas.nii.gz``).
    components : pandas.DataFrame
        ``components.parquet``.
    level : str
        Level column, e.g. ``level_1``.
    projector : mnm.brain.BrainProjector, optional
        When given, a parcel's vector is ``projector.transform_img`` of its binary mask;
        otherwise the 0/1 indicator of its components.
    zscore : bool
        z-score each vector across components, as the brain stage does when
        ``brain.zscore`` is set, so the encoder sees features on its training scale.
    component_labels : 3D int array, optional
        :func:`component_label_volume` of ``maps_img``, when already computed.

    Returns
    -------
    names : list of str
    coefficients : numpy.ndarray, float32 (n_parcels, n_components)
    """
    names, component_parcel = parcel_assignment(components, level)
    if projector is None:
        coefs = (component_parcel[None, :] == np.arange(len(names))[:, None]).astype(np.float32)
    else:
        if component_labels is None:
            component_labels = component_label_volume(maps_img, projector)
        labels = parcel_label_volume(component_labels, component_parcel)
        coefs = projector.transform_labels(labels, len(names))
    if zscore:
        from mnm.brain import zscore_rows

        coefs = zscore_rows(coefs)
    return names, coefs.astype(np.float32)


def _numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def parcel_embeddings(trained, coefficients: np.ndarray) -> np.ndarray:
    """Embed parcel brain vectors with a trained model's brain encoder (as it scores them)."""
    return _numpy(trained.embed_brain(np.asarray(coefficients, dtype=np.float32)))


def parcel_weights(trained, text_embedding, parcel_embedding, temperature: float = 1.0):
    """Softmax over parcels of the model's scores of one text embedding against each parcel."""
    text_embedding = np.atleast_2d(np.asarray(text_embedding, dtype=np.float32))
    scores = _numpy(trained.score(text_embedding, np.asarray(parcel_embedding, dtype=np.float32)))
    scores = scores.ravel() / float(temperature)
    weights = np.exp(scores - scores.max())
    return weights / weights.sum()


def paint_parcels(weights: np.ndarray, label_volume: np.ndarray, affine) -> nib.Nifti1Image:
    """Voxel map whose value in each parcel is that parcel's weight (0 outside the atlas)."""
    weights = np.asarray(weights, dtype=np.float32)
    data = np.zeros(label_volume.shape, dtype=np.float32)
    inside = label_volume >= 0
    data[inside] = weights[label_volume[inside]]
    return nib.Nifti1Image(data, affine)


def predict_parcel_map(
    trained, text_embedding, parcel_embedding, label_volume, affine, temperature: float = 1.0
) -> nib.Nifti1Image:
    """Parcel-route map of one text: softmax parcel weights painted onto parcel voxels."""
    weights = parcel_weights(trained, text_embedding, parcel_embedding, temperature)
    return paint_parcels(weights, label_volume, affine)


def predict_decoder_map(trained, text_input, projector) -> nib.Nifti1Image | None:
    """Decoder-route map: ``predict_brain`` coefficients -> ``inverse_transform`` voxels.

    Returns None when the model has no decoder.
    """
    coefficients = trained.predict_brain(text_input)
    if coefficients is None:
        return None
    coefficients = np.atleast_2d(_numpy(coefficients))[0]
    return projector.inverse_transform(coefficients.astype(np.float32))


def predict_voxel_map(trained, text_input, target_img) -> nib.Nifti1Image | None:
    """Voxel-route map: ``predict_map`` resampled onto ``target_img``'s grid (None without one)."""
    from nilearn.image import resample_to_img

    predict_map = getattr(trained, "predict_map", None)  # absent on stand-in models
    img = None if predict_map is None else predict_map(text_input)
    if img is None:
        return None
    return resample_to_img(img, target_img, interpolation="continuous", force_resample=True, copy_header=True)
