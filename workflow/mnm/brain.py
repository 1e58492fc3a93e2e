"""Brain features: peaks -> Gaussian KDE -> least-squares coefficients on atlas maps.

Definition (the dense reference, :func:`reference_coefficients`)
-----------------------------------------------------------------
For one article with peaks ``p_1 .. p_n`` (MNI mm):

1. each peak is moved to the centre of its nearest voxel of the analysis grid
   (``floor(v + 0.5)`` on voxel coordinates ``v``; NeuroQuery and NiMARE also work on voxel
   indices, NeuroQuery with ``floor(v)``). This is what makes a lookup table possible;
2. the KDE is the sum of unit-height Gaussians (FWHM ``fwhm_mm``) centred there,
   ``kde(x) = sum_i exp(-|x - c_i|^2 / (2 sigma^2))``, evaluated at the centres of the brain
   voxels, not truncated. Units: a voxel on top of one isolated peak has value 1;
3. the coefficients are the least-squares fit of the KDE by the masked atlas maps ``D``
   (voxels x components), ``argmin_c |D c - kde|^2 = (D^T D)^-1 D^T kde``, which is what
   :class:`nilearn.maskers.NiftiMapsMasker` computes.

Peaks whose voxel lies farther than ``support_mm`` (default ``2 * fwhm_mm``) from every
voxel of the atlas, or outside the grid, are ignored: their Gaussian is below
``exp(-(2 fwhm)^2 / (2 sigma^2)) ~ 1.5e-5`` of its height on every atlas voxel (the corpus
stage already drops peaks farther than 10 mm from the brain). Peaks outside the brain mask
but within the support contribute the part of their Gaussian that reaches the brain.
Repeated rows count as many times as they appear (the KDE is a sum);
:func:`compute_coefficients` drops exact duplicates of ``(article_id, x, y, z)`` first
when asked to. Articles without any usable peak get a zero vector.

Fast path (:class:`BrainProjector`)
-----------------------------------
Both steps are linear, so ``c = (D^T D)^-1 sum_i (G * D)(c_i)``: smoothing every atlas map
once with the same Gaussian and folding in ``(D^T D)^-1`` gives a table with one row per
voxel of the support, and an article costs one row lookup per peak (a batch of articles
is one sparse count matrix times the table). The Gaussian is separable, so
the smoothing is three matrix products with exact (untruncated) 1D Gaussian matrices
``K[i, j] = exp(-((i - j) h)^2 / (2 sigma^2))``; this is hand-written because
``scipy.ndimage.gaussian_filter`` normalises and truncates its kernel, while the exact
kernel makes the table agree with the reference to float rounding. Optional z-scoring
(:func:`zscore_rows`) is applied afterwards, in :func:`compute_coefficients`, so the
projector itself stays linear (``inverse_transform`` / ``transform_img`` invert each other).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage, sparse

from mnm.io import atomic_path, read_parquet, save_nifti, write_matrix

__all__ = [
    "fwhm_to_sigma",
    "snap_to_voxels",
    "gaussian_kde_values",
    "grid_axes_mm",
    "separable_kde",
    "reference_kde",
    "reference_coefficients",
    "zscore_rows",
    "BrainProjector",
    "compute_coefficients",
    "write_qc_maps",
]

logger = logging.getLogger(__name__)

PEAK_COLUMNS = ("article_id", "x", "y", "z")
# Relative slack on the support distance so that lattice distances equal to the radius
# are classified identically by the table (Euclidean distance transform) and the
# reference (k-d tree).
_SUPPORT_SLACK = 1e-9


# --------------------------------------------------------------------------- shared definitions


def fwhm_to_sigma(fwhm_mm: float) -> float:
    """Gaussian standard deviation from its full width at half maximum."""
    return float(fwhm_mm) / np.sqrt(8.0 * np.log(2.0))


def snap_to_voxels(xyz_mm: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Index of the nearest voxel of each MNI position (``floor(v + 0.5)``).

    Parameters
    ----------
    xyz_mm : (n, 3) array
        Positions in mm.
    affine : (4, 4) array
        Voxel -> mm affine of the grid.

    Returns
    -------
    (n, 3) int64 array
        Voxel indices (may fall outside the grid).
    """
    xyz_mm = np.asarray(xyz_mm, dtype=np.float64).reshape(-1, 3)
    inverse = np.linalg.inv(affine)
    voxels = xyz_mm @ inverse[:3, :3].T + inverse[:3, 3]
    return np.floor(voxels + 0.5).astype(np.int64)


def gaussian_kde_values(points_mm: np.ndarray, centres_mm: np.ndarray, fwhm_mm: float) -> np.ndarray:
    """Sum of unit-height Gaussians centred at ``centres_mm``, evaluated at ``points_mm``."""
    sigma = fwhm_to_sigma(fwhm_mm)
    values = np.zeros(len(points_mm), dtype=np.float64)
    for centre in np.asarray(centres_mm, dtype=np.float64).reshape(-1, 3):
        squared = ((points_mm - centre) ** 2).sum(axis=1)
        values += np.exp(-squared / (2.0 * sigma**2))
    return values


def grid_axes_mm(affine, shape) -> list[np.ndarray]:
    """mm coordinate of the voxel centres along each axis of an axis-aligned grid."""
    affine = np.asarray(affine, dtype=np.float64)
    linear = affine[:3, :3]
    if not np.allclose(linear, np.diag(np.diag(linear))):
        raise ValueError(f"grid must be axis-aligned, got affine\n{affine}")
    return [affine[a, a] * np.arange(n) + affine[a, 3] for a, n in enumerate(shape[:3])]


def separable_kde(centres_mm: np.ndarray, axes_mm, fwhm_mm: float) -> np.ndarray:
    """:func:`gaussian_kde_values` at every voxel centre of an axis-aligned grid, float64.

    A unit Gaussian factorises over the three axes, so each centre costs three 1D kernels
    and the sum over centres is one matrix product, instead of a distance from every centre
    to every voxel. The grid need not be the one the centres were snapped to (the coarse
    Text2Brain grid evaluates the analysis grid's snapped peaks, :mod:`mnm.kde_maps`).

    Parameters
    ----------
    centres_mm : (n, 3) array
        Gaussian centres (mm).
    axes_mm : sequence of three 1D arrays
        Voxel-centre coordinates along x, y, z (:func:`grid_axes_mm`).
    fwhm_mm : float

    Returns
    -------
    (len(x), len(y), len(z)) float64 array
    """
    centres_mm = np.asarray(centres_mm, dtype=np.float64).reshape(-1, 3)
    sigma = fwhm_to_sigma(fwhm_mm)
    kx, ky, kz = (np.exp(-((np.asarray(axis)[None, :] - centres_mm[:, [a]]) ** 2) / (2 * sigma**2))
                  for a, axis in enumerate(axes_mm))  # three (n_centres, n_axis) arrays
    plane = (kx[:, :, None] * ky[:, None, :]).reshape(len(centres_mm), kx.shape[1] * ky.shape[1])
    return (plane.T @ kz).reshape(kx.shape[1], ky.shape[1], kz.shape[1])


def _as_4d_array(maps_img) -> np.ndarray:
    if maps_img.ndim != 4:
        raise ValueError(f"atlas maps must be a 4D image, got shape {maps_img.shape}")
    return np.asarray(maps_img.dataobj, dtype=np.float32)


def _voxel_mm(affine, ijk: np.ndarray) -> np.ndarray:
    return nib.affines.apply_affine(affine, ijk)


def _default_support_mm(fwhm_mm: float, support_mm: float | None) -> float:
    return 2.0 * float(fwhm_mm) if support_mm is None else float(support_mm)


# --------------------------------------------------------------------------- dense reference


def reference_kde(xyz_mm, maps_img, mask_img, fwhm_mm: float = 9.0, support_mm=None) -> np.ndarray:
    """Dense KDE of one article on the brain voxels (the reference definition).

    Parameters
    ----------
    xyz_mm : (n, 3) array
        The article's peaks (MNI mm).
    maps_img : 4D image
        Atlas maps; defines the grid and which peaks are in the support.
    mask_img : 3D image
        Brain mask on the same grid.
    fwhm_mm, support_mm : float
        Kernel width and support radius (see the module docstring).

    Returns
    -------
    (n_mask_voxels,) float64 array
        KDE values at the mask voxels in C order of ``np.nonzero(mask)``.
    """
    from scipy.spatial import cKDTree

    support_mm = _default_support_mm(fwhm_mm, support_mm)
    maps = _as_4d_array(maps_img)
    affine = maps_img.affine
    ijk = snap_to_voxels(xyz_mm, affine)
    atlas_mm = _voxel_mm(affine, np.argwhere(_nonzero_anywhere(maps)))
    in_grid = ((ijk >= 0) & (ijk < np.array(maps.shape[:3]))).all(axis=1)
    centres = _voxel_mm(affine, ijk[in_grid])
    if len(centres):
        distance, _ = cKDTree(atlas_mm).query(centres)
        centres = centres[distance <= support_mm * (1 + _SUPPORT_SLACK)]
    mask = np.asarray(mask_img.dataobj) > 0
    return gaussian_kde_values(_voxel_mm(affine, np.argwhere(mask)), centres, fwhm_mm)


def reference_coefficients(
    xyz_mm, maps_img, mask_img, fwhm_mm: float = 9.0, support_mm=None
) -> np.ndarray:
    """Least-squares coefficients of the dense KDE on the masked maps.

    Parameters
    ----------
    xyz_mm : (n, 3) array, or list of them
        One article's peaks, or a list of articles (solved together: one factorisation).
    maps_img, mask_img, fwhm_mm, support_mm
        As in :func:`reference_kde`.

    Returns
    -------
    float64 array
        (k,) for one article, (n_articles, k) for a list.
    """
    from scipy.linalg import lstsq  # the solver NiftiMapsMasker uses

    many = isinstance(xyz_mm, (list, tuple))
    articles = list(xyz_mm) if many else [xyz_mm]
    mask = np.asarray(mask_img.dataobj) > 0
    design = _masked_columns(_as_4d_array(maps_img), mask).astype(np.float64)
    kde = np.stack(
        [reference_kde(xyz, maps_img, mask_img, fwhm_mm, support_mm) for xyz in articles], axis=1
    )
    coefficients = lstsq(design, kde)[0].T
    return coefficients if many else coefficients[0]


# --------------------------------------------------------------------------- helpers


def zscore_rows(coefficients: np.ndarray) -> np.ndarray:
    """Z-score each row across its components (NeuroConText); constant rows become 0."""
    coefficients = np.asarray(coefficients, dtype=np.float64)
    mean = coefficients.mean(axis=1, keepdims=True)
    std = coefficients.std(axis=1, keepdims=True)
    safe = np.where(std > 0, std, 1.0)
    return np.where(std > 0, (coefficients - mean) / safe, 0.0).astype(np.float32)


def _gaussian_matrix(n: int, step_mm: float, sigma_mm: float) -> np.ndarray:
    """Exact 1D Gaussian smoothing matrix ``K[i, j] = exp(-((i - j) h)^2 / 2 sigma^2)``."""
    offsets = (np.arange(n)[:, None] - np.arange(n)[None, :]) * step_mm
    return np.exp(-(offsets**2) / (2.0 * sigma_mm**2))


def _smooth_separable(block: np.ndarray, kernels: list[np.ndarray]) -> np.ndarray:
    """Smooth C-contiguous ``block`` (maps, x, y, z) along x, y, z with 1D matrices.

    Each step is a (batched) matrix product on the block's memory layout, so no
    transposed copies are made.
    """
    n_maps, nx, ny, nz = block.shape
    kx, ky, kz = (k.astype(block.dtype) for k in kernels)
    block = (block.reshape(-1, nz) @ kz.T).reshape(n_maps * nx, ny, nz)
    block = np.matmul(ky, block).reshape(n_maps, nx, ny * nz)
    return np.matmul(kx, block).reshape(n_maps, nx, ny, nz)


def _nonzero_anywhere(maps: np.ndarray) -> np.ndarray:
    """Voxels where any map is non-zero, one map at a time (no 4D temporary)."""
    voxels = np.zeros(maps.shape[:3], dtype=bool)
    for j in range(maps.shape[3]):
        voxels |= maps[..., j] != 0
    return voxels


def _masked_columns(maps: np.ndarray, voxels: np.ndarray) -> np.ndarray:
    """``maps[voxels]`` as a Fortran-ordered (n_voxels, k) array, gathered map by map.

    NIfTI data load in Fortran order (each map contiguous), where one boolean index over
    the spatial axes would gather with a stride of the whole volume.
    """
    design = np.empty((int(voxels.sum()), maps.shape[3]), dtype=np.float32, order="F")
    for j in range(maps.shape[3]):
        design[:, j] = maps[..., j][voxels]
    return design


def _sparse_design(design: np.ndarray):
    """``design`` as a float64 CSC matrix when it is mostly zeros, else None.

    Probabilistic atlases are sparse too (the generated DiFuMo-512 stand-in: about 3 % of its
    atlas-voxel x map entries): the Gram matrix, the label projections and the inverse
    transform then cost a pass over the non-zeros, not over the dense matrix.
    """
    density = np.count_nonzero(design) / max(design.size, 1)
    return sparse.csc_matrix(design, dtype=np.float64) if density < 0.2 else None


def _gram(design: np.ndarray, design_sparse=None) -> np.ndarray:
    """``D^T D`` in float64, from the sparse copy of :func:`_sparse_design` when there is one."""
    if design_sparse is not None:
        return (design_sparse.T @ design_sparse).toarray()
    return design.T.astype(np.float64) @ design.astype(np.float64)


def _sum_rows_per_article(table, article_of_peak, rows, n_peaks) -> np.ndarray:
    """``out[a] = sum of table[rows[i]] over peaks i of article a`` (float32).

    Written as a sparse (articles x table rows) count matrix times the table, run by
    torch's multi-threaded CSR kernel (about twice scipy's single-threaded product on 2
    cores); repeated rows in a CSR row add up, so duplicate peaks count twice.
    """
    import torch

    order = np.argsort(article_of_peak, kind="stable")
    indptr = np.concatenate([[0], np.cumsum(n_peaks)]).astype(np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        counts = torch.sparse_csr_tensor(
            torch.from_numpy(indptr),
            torch.from_numpy(rows[order].astype(np.int64)),
            torch.ones(len(rows), dtype=torch.float32),
            size=(len(n_peaks), len(table)),
        )
        if len(rows) == 0:
            return np.zeros((len(n_peaks), table.shape[1]), dtype=np.float32)
        return torch.sparse.mm(counts, torch.from_numpy(table)).numpy()


def _check_peaks(peaks: pd.DataFrame) -> None:
    missing = [c for c in PEAK_COLUMNS if c not in peaks.columns]
    if missing:
        raise ValueError(f"peaks table lacks column(s) {missing}; has {list(peaks.columns)}")
    xyz = peaks[["x", "y", "z"]].to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(xyz).all(axis=1))
    if len(bad):
        rows = ", ".join(str(i) for i in bad[:10])
        raise ValueError(f"peaks table has non-finite coordinates in row(s) {rows}")


# --------------------------------------------------------------------------- fast path


class BrainProjector:
    """Peaks (or images) -> least-squares coefficients on atlas maps, through a lookup table.

    Parameters
    ----------
    maps_img : 4D Niimg
        Atlas maps on the analysis grid, brain mask applied (``atlas.nii.gz``). The grid
        must be axis-aligned (diagonal affine), as the MNI templates are.
    fwhm_mm : float
        FWHM of the Gaussian placed at each peak.
    mask_img : 3D Niimg, optional
        Brain mask for :meth:`kde_img` and :meth:`transform_img`; default the MNI152 brain
        mask at the maps' voxel size.
    support_mm : float, optional
        Peaks farther than this from every atlas voxel are ignored (default ``2 * fwhm_mm``).
    batch_maps : int
        Maps smoothed together while building the table (bounds memory).

    Attributes
    ----------
    table_ : (n_support_voxels, k) float32 array
        Row ``r`` holds ``(G * D)(v_r) (D^T D)^-1`` for support voxel ``v_r``.
    row_of_voxel_ : 3D int32 array
        Row of ``table_`` for each grid voxel, -1 outside the support.
    """

    def __init__(self, maps_img, fwhm_mm: float = 9.0, mask_img=None, support_mm=None, batch_maps: int = 32):
        self.maps_img = nib.load(maps_img) if isinstance(maps_img, (str, Path)) else maps_img
        self.fwhm_mm = float(fwhm_mm)
        self.mask_img = mask_img
        self.support_mm = _default_support_mm(fwhm_mm, support_mm)
        self.batch_maps = int(batch_maps)
        if self.fwhm_mm <= 0:
            raise ValueError(f"fwhm_mm must be positive, got {fwhm_mm}")

    # -- fitting ---------------------------------------------------------------

    def _grid_steps(self) -> np.ndarray:
        affine = self.maps_img.affine
        linear = affine[:3, :3]
        if not np.allclose(linear, np.diag(np.diag(linear))):
            raise ValueError(f"atlas grid must be axis-aligned, got affine\n{affine}")
        return np.abs(np.diag(linear))

    def _brain_mask(self) -> np.ndarray:
        """Boolean brain mask on the maps' grid (loaded once; does not need :meth:`fit`)."""
        if getattr(self, "_mask_cache", None) is None:
            self._mask_cache = self._load_mask()
        return self._mask_cache

    def _load_mask(self):
        from nilearn.image import resample_to_img

        mask_img = self.mask_img
        if mask_img is None:
            from mnm.atlas import analysis_mask

            mask_img = analysis_mask(int(round(self._grid_steps()[0])))
        elif isinstance(mask_img, (str, Path)):
            mask_img = nib.load(mask_img)
        same = mask_img.shape[:3] == self.maps_img.shape[:3] and np.allclose(
            mask_img.affine, self.maps_img.affine
        )
        if not same:
            mask_img = resample_to_img(
                mask_img, self.maps_img.slicer[..., 0], interpolation="nearest",
                force_resample=True, copy_header=True,
            )
        return np.asarray(mask_img.dataobj) > 0

    def fit(self, y=None, lookup_table: bool = True):
        """Precompute ``(D^T D)^-1`` and the peak lookup table (smoothed maps times it).

        ``lookup_table=False`` skips the table (the expensive part: smoothing every map),
        which only :meth:`transform_peaks` needs; image projection, label vectors, inverse
        transform and KDE maps work without it (the query tool and the report use this).

        Raises
        ------
        ValueError
            If the maps are not 4D, the grid is oblique, or ``D^T D`` is singular (a map
            that is empty or a linear combination of others).
        """
        from tqdm.auto import tqdm

        steps = self._grid_steps()
        maps = _as_4d_array(self.maps_img)
        n_maps = maps.shape[3]
        atlas_voxels = _nonzero_anywhere(maps)
        if not atlas_voxels.any():
            raise ValueError("atlas maps are all zero")
        design = _masked_columns(maps, atlas_voxels)  # (n_atlas_voxels, k) float32
        design_sparse = _sparse_design(design)
        gram = _gram(design, design_sparse)
        condition = np.linalg.cond(gram)
        if not np.isfinite(condition) or condition > 1e10:
            empty = np.flatnonzero(np.diag(gram) == 0)
            raise ValueError(
                f"atlas maps are linearly dependent (cond(D^T D)={condition:.3g}); "
                f"empty map indices: {empty.tolist()}"
            )
        gram_inv = np.linalg.inv(gram)
        self.design_ = design
        self.design_sparse_ = design_sparse  # float64 CSC copy, or None for a dense atlas
        self.gram_inv_ = gram_inv
        self.atlas_voxels_ = atlas_voxels
        self.mask_ = self._brain_mask()
        self.n_components_ = n_maps
        if not lookup_table:
            return self

        distance = ndimage.distance_transform_edt(~atlas_voxels, sampling=steps)
        support = distance <= self.support_mm * (1 + _SUPPORT_SLACK)
        lo = np.argwhere(support).min(axis=0)
        hi = np.argwhere(support).max(axis=0) + 1
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        support_box = support[box]
        sigma = fwhm_to_sigma(self.fwhm_mm)
        kernels = [_gaussian_matrix(n, h, sigma) for n, h in zip(hi - lo, steps)]

        smoothed = np.empty((int(support_box.sum()), n_maps), dtype=np.float32)
        starts = range(0, n_maps, self.batch_maps)
        for start in tqdm(starts, desc="smoothing atlas maps", unit="batch", leave=False):
            stop = min(start + self.batch_maps, n_maps)
            # float32 is enough: Gaussian weights are positive, so sums do not cancel.
            block = np.ascontiguousarray(
                np.moveaxis(maps[box + (slice(start, stop),)], -1, 0), dtype=np.float32
            )
            smoothed[:, start:stop] = _smooth_separable(block, kernels)[:, support_box].T
        del maps
        if np.count_nonzero(gram - np.diag(np.diag(gram))) == 0:
            # Non-overlapping maps (label atlases): (D^T D)^-1 is diagonal, a column scaling.
            smoothed *= np.diag(gram_inv).astype(np.float32)
        else:
            # Fold in (D^T D)^-1 block by block, in float64 and in place, to bound memory.
            for start in range(0, len(smoothed), 32768):
                rows = slice(start, start + 32768)
                smoothed[rows] = smoothed[rows].astype(np.float64) @ gram_inv

        row_of_voxel = np.full(atlas_voxels.shape, -1, dtype=np.int32)
        row_of_voxel[box][support_box] = np.arange(len(smoothed), dtype=np.int32)
        self.table_ = smoothed
        self.row_of_voxel_ = row_of_voxel
        return self

    def _check_fitted(self, table: bool = False):
        if not hasattr(self, "design_"):
            raise RuntimeError("BrainProjector is not fitted: call fit() first")
        if table and not hasattr(self, "table_"):
            raise RuntimeError("this method needs the peak lookup table: call fit(lookup_table=True)")

    # -- peaks -----------------------------------------------------------------

    def peak_rows(self, xyz_mm) -> np.ndarray:
        """Table row of each peak, -1 for peaks ignored (outside the grid or support)."""
        self._check_fitted(table=True)
        ijk = snap_to_voxels(xyz_mm, self.maps_img.affine)
        in_grid = ((ijk >= 0) & (ijk < np.array(self.row_of_voxel_.shape))).all(axis=1)
        rows = np.full(len(ijk), -1, dtype=np.int64)
        rows[in_grid] = self.row_of_voxel_[tuple(ijk[in_grid].T)]
        return rows

    def transform_peaks(self, peaks: pd.DataFrame, article_ids=None):
        """Coefficients of every article from its peaks (sum of table rows).

        Parameters
        ----------
        peaks : DataFrame
            Columns ``article_id``, ``x``, ``y``, ``z`` (MNI mm); one row per peak.
        article_ids : sequence of str, optional
            Articles to return, in this order; articles without peaks get zeros. Default:
            the articles of ``peaks`` in order of first appearance.

        Returns
        -------
        article_ids : (n,) object array
        coefficients : (n, k) float32 array
        """
        ids, coefficients, _ = self.transform_peaks_counted(peaks, article_ids)
        return ids, coefficients

    def transform_peaks_counted(self, peaks: pd.DataFrame, article_ids=None):
        """:meth:`transform_peaks` plus the number of peaks used per article."""
        self._check_fitted(table=True)
        _check_peaks(peaks)
        # Factorise the id column once, then match the (few) unique ids as strings.
        codes, uniques = pd.factorize(peaks["article_id"])
        uniques = np.asarray([str(u) for u in uniques], dtype=object)
        if article_ids is None:
            article_ids = uniques
        article_ids = np.asarray([str(a) for a in article_ids], dtype=object)
        index = pd.Index(article_ids)
        if not index.is_unique:
            raise ValueError("article_ids contains duplicates")
        article_of_peak = index.get_indexer(uniques)[codes]
        rows = self.peak_rows(peaks[["x", "y", "z"]].to_numpy(dtype=np.float64))
        used = (rows >= 0) & (article_of_peak >= 0)
        n_ignored = int(((rows < 0) & (article_of_peak >= 0)).sum())
        if n_ignored:
            logger.warning(
                "%d peak(s) farther than %.1f mm from the atlas (or off the grid) ignored",
                n_ignored, self.support_mm,
            )
        n_peaks = np.bincount(article_of_peak[used], minlength=len(article_ids))
        coefficients = _sum_rows_per_article(self.table_, article_of_peak[used], rows[used], n_peaks)
        return article_ids, coefficients, n_peaks

    # -- images ----------------------------------------------------------------

    def _grid_reference(self):
        return self.maps_img.slicer[..., 0]

    def _volume_on_grid(self, img) -> np.ndarray:
        from nilearn.image import load_img, resample_to_img

        img = load_img(img)
        if img.ndim == 4 and img.shape[3] == 1:
            img = img.slicer[..., 0]
        if img.ndim != 3:
            raise ValueError(f"transform_img expects one 3D map, got shape {img.shape}")
        if img.shape != self.maps_img.shape[:3] or not np.allclose(img.affine, self.maps_img.affine):
            warnings.warn(
                f"image of shape {img.shape} resampled onto the atlas grid "
                f"{self.maps_img.shape[:3]} (continuous interpolation)",
                stacklevel=3,
            )
            img = resample_to_img(
                img, self._grid_reference(), interpolation="continuous",
                force_resample=True, copy_header=True,
            )
        return np.asarray(img.dataobj, dtype=np.float32)

    def transform_img(self, img) -> np.ndarray:
        """Least-squares coefficients of any MNI map (as ``NiftiMapsMasker``), float32 (k,)."""
        self._check_fitted()
        volume = self._volume_on_grid(img)
        values = np.where(self.mask_, volume, 0.0)[self.atlas_voxels_].astype(np.float32)
        projected = (self.design_.T @ values).astype(np.float64)
        return (self.gram_inv_ @ projected).astype(np.float32)

    def transform_labels(self, label_volume, n_labels: int) -> np.ndarray:
        """Coefficients of the binary mask of each label ``0 .. n_labels - 1``.

        The same as :meth:`transform_img` of each mask (tested), in one sparse product:
        parcel maps of a whole atlas level cost one pass instead of one per parcel.

        Parameters
        ----------
        label_volume : 3D int array on the atlas grid
            Label of each voxel; negative values belong to no label.
        n_labels : int

        Returns
        -------
        (n_labels, k) float32 array
        """
        self._check_fitted()
        labels = np.asarray(label_volume)
        if labels.shape != self.mask_.shape:
            raise ValueError(f"label volume of shape {labels.shape} is not on the atlas grid "
                             f"{self.mask_.shape}")
        labels = np.where(self.mask_, labels, -1)[self.atlas_voxels_]
        rows = np.flatnonzero((labels >= 0) & (labels < n_labels))
        indicator = sparse.csr_matrix(
            (np.ones(len(rows), dtype=np.float64), (labels[rows], rows)),
            shape=(int(n_labels), len(labels)),
        )
        if self.design_sparse_ is not None:
            projected = (indicator @ self.design_sparse_).toarray()
        else:
            projected = np.asarray(indicator @ self.design_.astype(np.float64))
        return (projected @ self.gram_inv_).astype(np.float32)  # (D^T D)^-1 is symmetric

    def inverse_transform(self, coefficients) -> nib.Nifti1Image:
        """Map ``sum_j c_j D_j`` (3D for one vector, 4D for a (n, k) matrix)."""
        self._check_fitted()
        coefficients = np.asarray(coefficients, dtype=np.float32)
        if coefficients.shape[-1] != self.n_components_:
            raise ValueError(
                f"expected {self.n_components_} coefficients, got shape {coefficients.shape}"
            )
        matrix = np.atleast_2d(coefficients)
        volume = np.zeros(self.atlas_voxels_.shape + (len(matrix),), dtype=np.float32)
        if self.design_sparse_ is not None:
            volume[self.atlas_voxels_] = self.design_sparse_ @ matrix.T.astype(np.float64)
        else:
            volume[self.atlas_voxels_] = self.design_ @ matrix.T
        if coefficients.ndim == 1:
            volume = volume[..., 0]
        return nib.Nifti1Image(volume, self.maps_img.affine)

    def _kde_geometry(self) -> tuple[np.ndarray, np.ndarray]:
        """(support, brain mask) boolean volumes; computed once, without the lookup table."""
        if not hasattr(self, "_kde_support"):
            if hasattr(self, "atlas_voxels_"):
                atlas_voxels = self.atlas_voxels_
            else:
                atlas_voxels = (_as_4d_array(self.maps_img) != 0).any(axis=-1)
            distance = ndimage.distance_transform_edt(~atlas_voxels, sampling=self._grid_steps())
            self._kde_support = distance <= self.support_mm * (1 + _SUPPORT_SLACK)
            self._kde_mask = self.mask_ if hasattr(self, "mask_") else self._brain_mask()
        return self._kde_support, self._kde_mask

    def kde_centres(self, xyz_mm) -> np.ndarray:
        """Centres (mm) of the Gaussians of one article's KDE: its peaks snapped to the
        nearest voxel of the analysis grid, without those off the grid or outside the support
        (the rule of the lookup table and of :func:`reference_kde`)."""
        support, _ = self._kde_geometry()
        xyz_mm = np.asarray(xyz_mm, dtype=np.float64).reshape(-1, 3)
        ijk = snap_to_voxels(xyz_mm, self.maps_img.affine)
        in_grid = ((ijk >= 0) & (ijk < np.array(support.shape))).all(axis=1)
        ijk = ijk[in_grid]
        return _voxel_mm(self.maps_img.affine, ijk[support[tuple(ijk.T)]])

    def kde_img(self, xyz_mm) -> nib.Nifti1Image:
        """Dense KDE map of one article's peaks, masked to the brain.

        Equals :func:`reference_kde` (same snapped peaks, same support rule; tested), but
        evaluated by :func:`separable_kde` (about 100x faster than a distance from every peak
        to every brain voxel).
        """
        _, mask = self._kde_geometry()
        volume = separable_kde(self.kde_centres(xyz_mm), grid_axes_mm(self.maps_img.affine, mask.shape),
                               self.fwhm_mm)
        volume[~mask] = 0.0
        return nib.Nifti1Image(volume.astype(np.float32), self.maps_img.affine)


# --------------------------------------------------------------------------- stage functions


def _read_peaks(peaks_path) -> pd.DataFrame:
    peaks = read_parquet(peaks_path)
    try:
        _check_peaks(peaks)
    except ValueError as exc:
        raise ValueError(f"{peaks_path}: {exc}") from exc
    return peaks


def compute_coefficients(
    atlas_path,
    peaks_path,
    articles_path,
    output_path,
    fwhm_mm: float = 9.0,
    zscore: bool = False,
    delta: float = 0.05,
    drop_duplicate_peaks: bool = True,
) -> pd.DataFrame:
    """Coefficients stage: one row per article of ``articles.parquet``.

    Writes ``coefficients.parquet`` with ``article_id``, ``coefficients`` (list<float32>),
    ``n_peaks`` (peaks used) and ``n_active`` (components with coefficient > ``delta``).

    Returns
    -------
    DataFrame
        ``article_id``, ``n_peaks``, ``n_active`` (for logging and tests).
    """
    articles = read_parquet(articles_path, columns=["article_id"])
    peaks = _read_peaks(peaks_path)
    if drop_duplicate_peaks:
        before = len(peaks)
        peaks = peaks.drop_duplicates(subset=list(PEAK_COLUMNS))
        logger.info("dropped %d duplicate peak row(s)", before - len(peaks))
    projector = BrainProjector(atlas_path, fwhm_mm=fwhm_mm).fit()
    ids, coefficients, n_peaks = projector.transform_peaks_counted(
        peaks, article_ids=articles["article_id"].astype(str).tolist()
    )
    if zscore:
        coefficients = zscore_rows(coefficients)
    n_active = (coefficients > delta).sum(axis=1)
    logger.info(
        "%d articles, %d without peaks; n_active median %d (range %d-%d of %d)",
        len(ids), int((n_peaks == 0).sum()), int(np.median(n_active)),
        int(n_active.min(initial=0)), int(n_active.max(initial=0)), coefficients.shape[1],
    )
    extra = {"n_peaks": n_peaks.astype(np.int64), "n_active": n_active.astype(np.int64)}
    write_matrix(output_path, ids, coefficients, column="coefficients", extra=extra)
    return pd.DataFrame({"article_id": ids, "n_peaks": n_peaks, "n_active": n_active})


def write_qc_maps(
    atlas_path, peaks_path, output_dir, png_path, fwhm_mm: float = 9.0, n_maps: int = 3
) -> list[Path]:
    """Visual QC: KDE maps of the ``n_maps`` articles with most peaks + a glass-brain PNG.

    Writes ``<output_dir>/kde_<i>.nii.gz`` for ``i = 0 .. n_maps - 1`` (the article id is
    in the PNG titles and the log) and one PNG with a glass brain per article.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from nilearn import plotting

    peaks = _read_peaks(peaks_path)
    projector = BrainProjector(atlas_path, fwhm_mm=fwhm_mm)  # kde_img needs no table
    counts = peaks["article_id"].astype(str).value_counts(sort=False)
    chosen = counts.sort_values(ascending=False, kind="stable").index[:n_maps]
    output_dir = Path(output_dir)
    figure, axes = plt.subplots(max(len(chosen), 1), 1, figsize=(8, 3 * max(len(chosen), 1)))
    axes = np.atleast_1d(axes)
    paths = []
    for i in range(n_maps):
        path = output_dir / f"kde_{i}.nii.gz"
        if i < len(chosen):
            article = chosen[i]
            xyz = peaks.loc[peaks["article_id"].astype(str) == article, ["x", "y", "z"]]
            img = projector.kde_img(xyz.to_numpy(dtype=np.float64))
            peak_value = float(np.asarray(img.dataobj).max())
            plotting.plot_glass_brain(
                img, axes=axes[i], colorbar=True, cmap="hot", vmin=0,
                vmax=max(peak_value, 1e-6), threshold=0.05 * peak_value,
                title=f"{article} ({len(xyz)} peaks)",
            )
            logger.info("QC map %s: article %s", path.name, article)
        else:  # fewer articles than requested: an empty map keeps the declared outputs
            img = nib.Nifti1Image(np.zeros(projector.maps_img.shape[:3], np.float32), projector.maps_img.affine)
        save_nifti(img, path)
        paths.append(path)
    with atomic_path(png_path, suffix=".png") as tmp:
        figure.savefig(tmp, dpi=100)
    plt.close(figure)
    return paths
