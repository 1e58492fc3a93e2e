"""Every article's KDE map on Text2Brain's coarse 4 mm grid (the voxel target of ``text2brain``).

The map is the brain stage's own KDE (:mod:`mnm.brain`): the article's peaks snapped to the
nearest voxel of the *analysis* grid, the peaks outside the atlas support dropped
(:meth:`mnm.brain.BrainProjector.kde_centres`), unit-height Gaussians of FWHM
``brain.fwhm_mm`` summed (:func:`mnm.brain.separable_kde`), only evaluated at the centres of
the coarse grid's voxels instead of the analysis grid's. Where a coarse voxel centre is also an
analysis voxel centre (always, for 1 and 2 mm analysis grids) the value equals the dense
reference :func:`mnm.brain.reference_kde` there (tested).

Grid: :data:`COARSE_SHAPE` voxels of 4 mm with affine :data:`COARSE_AFFINE`, the crop of the
MNI152 4 mm grid that Text2Brain's public decoder fills (its ``predict.py`` pastes the
40 x 48 x 40 output at offset (3, 3, 0) of the 46 x 55 x 46 grid whose origin is
(-90, -126, -72) mm). It holds every voxel of nilearn's 4 mm MNI152 brain mask
(29,398 voxels), which restricts the maps (:func:`coarse_mask`).

Stage output (rule ``kde_maps``): ``brain/{atlas}/kde_4mm/maps.parquet`` (article_id,
``kde`` list<float32> over the mask voxels in C order, n_peaks) and
``brain/{atlas}/kde_4mm/mask.nii.gz`` (the grid and its mask). The maps are computed and
written in chunks of articles, so memory does not grow with the corpus.
"""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mnm.io import atomic_path, read_matrix, read_parquet, save_nifti, vectors_to_arrow

__all__ = [
    "COARSE_SHAPE",
    "COARSE_AFFINE",
    "coarse_mask",
    "coarse_kde",
    "iter_kde_chunks",
    "compute_kde_maps",
    "read_kde_maps",
]

log = logging.getLogger(__name__)

#: Text2Brain's output grid (voxels) and its voxel -> MNI mm affine (4 mm, RAS).
COARSE_SHAPE = (40, 48, 40)
COARSE_AFFINE = np.array([[4.0, 0, 0, -78.0], [0, 4.0, 0, -114.0], [0, 0, 4.0, -72.0], [0, 0, 0, 1.0]])


def coarse_mask() -> nib.Nifti1Image:
    """nilearn's 4 mm MNI152 brain mask on :data:`COARSE_SHAPE` / :data:`COARSE_AFFINE`.

    Raises
    ------
    ValueError
        If a brain voxel falls outside the coarse grid (it would be silently lost).
    """
    from nilearn.image import resample_img

    from mnm.atlas import analysis_mask

    mni = analysis_mask(4)
    img = resample_img(mni, target_affine=COARSE_AFFINE, target_shape=COARSE_SHAPE,
                       interpolation="nearest", force_resample=True, copy_header=True)
    inside = int((np.asarray(img.dataobj) > 0).sum())
    total = int((np.asarray(mni.dataobj) > 0).sum())
    if inside != total:
        raise ValueError(f"{total - inside} of {total} brain voxels of the 4 mm MNI152 mask lie "
                         "outside Text2Brain's 40 x 48 x 40 grid")
    return nib.Nifti1Image((np.asarray(img.dataobj) > 0).astype(np.uint8), COARSE_AFFINE)


def coarse_kde(projector, xyz_mm, mask: np.ndarray, affine=COARSE_AFFINE) -> np.ndarray:
    """One article's KDE at the voxels of ``mask`` on the coarse grid, float32.

    Parameters
    ----------
    projector : mnm.brain.BrainProjector
        On the analysis grid: snaps the peaks and applies the support rule.
    xyz_mm : (n, 3) array
        The article's peaks (MNI mm).
    mask : 3D bool array
        Coarse-grid voxels to return (C order of ``np.nonzero(mask)``).
    affine : (4, 4) array
        Coarse grid affine.
    """
    from mnm.brain import grid_axes_mm, separable_kde

    volume = separable_kde(projector.kde_centres(xyz_mm), grid_axes_mm(affine, mask.shape), projector.fwhm_mm)
    return volume[mask].astype(np.float32)


def _peaks_by_article(peaks_path, drop_duplicate_peaks: bool) -> dict:
    from mnm.brain import PEAK_COLUMNS, _read_peaks

    peaks = _read_peaks(peaks_path)
    if drop_duplicate_peaks:
        peaks = peaks.drop_duplicates(subset=list(PEAK_COLUMNS))
    peaks = peaks.assign(article_id=peaks["article_id"].astype(str))
    return {article: group[["x", "y", "z"]].to_numpy(dtype=np.float64)
            for article, group in peaks.groupby("article_id", sort=False)}


def iter_kde_chunks(projector, peaks: dict, article_ids, mask: np.ndarray, chunk_size: int = 512):
    """Yield ``(ids, maps (n, n_mask) float32, n_peaks)`` for consecutive chunks of articles.

    Articles without peaks get a zero map; ``n_peaks`` counts the peaks kept by the support rule.
    """
    no_peaks = np.zeros((0, 3))
    article_ids = [str(a) for a in article_ids]
    for start in range(0, len(article_ids), int(chunk_size)):
        ids = article_ids[start:start + int(chunk_size)]
        maps = np.empty((len(ids), int(mask.sum())), dtype=np.float32)
        n_peaks = np.empty(len(ids), dtype=np.int64)
        for row, article in enumerate(ids):
            xyz = peaks.get(article, no_peaks)
            n_peaks[row] = len(projector.kde_centres(xyz))
            maps[row] = coarse_kde(projector, xyz, mask)
        yield ids, maps, n_peaks


def compute_kde_maps(atlas_path, peaks_path, articles_path, out_maps, out_mask, fwhm_mm: float = 9.0,
                     drop_duplicate_peaks: bool = True, chunk_size: int = 512) -> int:
    """Stage function of rule ``kde_maps``: every article's coarse KDE map, written by chunks.

    Parameters
    ----------
    atlas_path : path-like
        ``atlas.nii.gz`` on the analysis grid (snapping grid and support of the KDE).
    peaks_path, articles_path : path-like
        ``corpus/peaks.parquet``, ``corpus/articles.parquet`` (one row per article, in its order).
    out_maps, out_mask : path-like
        ``maps.parquet`` and ``mask.nii.gz``.
    fwhm_mm, drop_duplicate_peaks
        The brain stage's settings (``brain.fwhm_mm``, ``brain.drop_duplicate_peaks``).
    chunk_size : int
        Articles computed and written together (peak memory ~ chunk_size x 29,398 x 4 bytes).

    Returns
    -------
    int
        Number of articles written.
    """
    from mnm.brain import BrainProjector

    article_ids = read_parquet(articles_path, columns=["article_id"])["article_id"].astype(str).tolist()
    peaks = _peaks_by_article(peaks_path, drop_duplicate_peaks)
    projector = BrainProjector(atlas_path, fwhm_mm=fwhm_mm)  # the KDE needs no lookup table
    mask_img = coarse_mask()
    mask = np.asarray(mask_img.dataobj) > 0
    schema = pa.schema([("article_id", pa.string()), ("kde", pa.list_(pa.float32())), ("n_peaks", pa.int64())])
    n_written = 0
    with atomic_path(out_maps) as tmp:
        with pq.ParquetWriter(tmp, schema) as writer:
            for ids, maps, n_peaks in iter_kde_chunks(projector, peaks, article_ids, mask, chunk_size):
                writer.write_table(pa.table({"article_id": pa.array(ids, pa.string()),
                                             "kde": vectors_to_arrow(maps), "n_peaks": pa.array(n_peaks)},
                                            schema=schema))
                n_written += len(ids)
                log.info("KDE maps: %d / %d articles", n_written, len(article_ids))
    save_nifti(mask_img, out_mask)
    log.info("%d articles x %d voxels (4 mm) written to %s", n_written, int(mask.sum()), out_maps)
    return n_written


def read_kde_maps(maps_path, mask_path) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Image]:
    """``(article ids, maps (n, n_mask) float32, mask image)`` written by :func:`compute_kde_maps`.

    Raises
    ------
    ValueError
        When the vectors do not have one value per mask voxel (files of different runs).
    """
    ids, maps = read_matrix(maps_path, "kde")
    mask_img = nib.load(mask_path)
    n_mask = int((np.asarray(mask_img.dataobj) > 0).sum())
    if maps.size and maps.shape[1] != n_mask:
        raise ValueError(f"{maps_path}: maps have {maps.shape[1]} voxels but {mask_path} has {n_mask}")
    return ids, maps, mask_img
