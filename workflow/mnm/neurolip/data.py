"""NeuroLIP data stage: fetch (or read the generated fixture), connectomes, folds, Parquet.

Outputs (all under ``results/neurolip/<dataset>/``):

``subjects.parquet``
    ``subject_id``, ``diagnosis`` (1 patient / 0 control), ``sex``, ``site``, ``age``,
    ``generated`` (true for every fixture row).
``connectivity.parquet``
    ``subject_id``, ``connectivity`` (nilearn vector, see :mod:`mnm.neurolip.connectivity`),
    ``region_valid`` (1/0 per ROI).
``regions.parquet``
    ``roi`` (column), ``label_value``, ``name``.
``folds.parquet``
    ``subject_id``, ``fold`` (stratified by diagnosis and site).
``planted.parquet``
    the fixture's planted edges (``effect``, ``site``, ``region_a``, ``region_b``,
    ``amplitude``, ``generated``); empty for real data.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from mnm.io import write_matrix, write_parquet
from mnm.neurolip import fetch
from mnm.neurolip.connectivity import connectomes
from mnm.neurolip.fixture import read_planted_edges
from mnm.neurolip.folds import stratified_folds
from mnm.neurolip.rois import RoiAtlas

__all__ = ["DATASETS", "load_subjects_and_series", "build_dataset", "PLANTED_COLUMNS"]

logger = logging.getLogger(__name__)

DATASETS = ("generated", "abide", "adhd")
PLANTED_COLUMNS = ["effect", "site", "region_a", "region_b", "amplitude", "generated"]


def load_subjects_and_series(dataset: str, data_dir, abide: dict, adhd: dict, atlas: RoiAtlas | None):
    """Subjects table and ROI time series of ``dataset`` through nilearn's fetchers.

    ``generated`` reads the fixture with the ABIDE fetcher (``data_dir`` is the fixture
    root); ``adhd`` needs ``atlas`` to extract time series.
    """
    if dataset in ("generated", "abide"):
        return fetch.fetch_abide(data_dir, **abide)
    if dataset == "adhd":
        if atlas is None:
            raise ValueError("the adhd dataset needs a ROI atlas to extract time series")
        return fetch.fetch_adhd_time_series(data_dir, atlas.image, **adhd)
    raise ValueError(f"neurolip.dataset must be one of {DATASETS}, got {dataset!r}")


def _drop_unusable(subjects: pd.DataFrame, series: list) -> tuple[pd.DataFrame, list]:
    """Drop subjects without an age or whose time series is too short (logged)."""
    keep = subjects["age"].notna().to_numpy() & np.array([np.asarray(s).shape[0] >= 3 for s in series])
    if not keep.all():
        logger.warning("dropped %d subject(s) without age or with < 3 time points: %s",
                       int((~keep).sum()), subjects.loc[~keep, "subject_id"].head(5).tolist())
    return subjects[keep].reset_index(drop=True), [s for s, k in zip(series, keep) if k]


def build_dataset(dataset: str, data_dir, out_dir, *, abide: dict, adhd: dict, atlas_image=None,
                  atlas_names=None, kind: str = "correlation", n_folds: int = 5, seed: int = 0) -> None:
    """Run the data stage and write its Parquet outputs into ``out_dir`` (module docstring).

    Parameters
    ----------
    dataset : {"generated", "abide", "adhd"}
    data_dir : path-like
        nilearn data folder (the fixture root for ``generated``).
    out_dir : path-like
    abide, adhd : dict
        Keyword arguments of :func:`mnm.neurolip.fetch.fetch_abide` / ``fetch_adhd_time_series``.
    atlas_image, atlas_names : path-like, optional
        ROI label image and names (see :mod:`mnm.neurolip.rois`).
    kind : str
        ``ConnectivityMeasure`` kind.
    n_folds, seed : int
    """
    out_dir = Path(out_dir)
    atlas = RoiAtlas(atlas_image, atlas_names) if atlas_image else None
    subjects, series = load_subjects_and_series(dataset, data_dir, abide, adhd, atlas)
    subjects, series = _drop_unusable(subjects, series)
    vectors, region_valid = connectomes(series, kind=kind, seed=seed)
    n_regions = region_valid.shape[1]
    if atlas is not None and atlas.n_regions != n_regions:
        raise ValueError(f"{atlas_image}: {atlas.n_regions} ROIs in the atlas but {n_regions} time-series columns")
    regions = atlas.table() if atlas is not None else pd.DataFrame(
        {"roi": np.arange(n_regions), "label_value": np.arange(1, n_regions + 1),
         "name": [f"ROI {k + 1}" for k in range(n_regions)]})
    planted = (read_planted_edges(data_dir) if dataset == "generated"
               else pd.DataFrame({c: pd.Series(dtype=object) for c in PLANTED_COLUMNS}))
    folds = stratified_folds(subjects, n_folds, seed)
    write_parquet(subjects, out_dir / "subjects.parquet")
    write_matrix(out_dir / "connectivity.parquet", subjects["subject_id"], vectors, column="connectivity",
                 id_column="subject_id", extra={"region_valid": region_valid.astype(np.float32)})
    write_parquet(regions, out_dir / "regions.parquet")
    write_parquet(planted[PLANTED_COLUMNS], out_dir / "planted.parquet")
    write_parquet(folds, out_dir / "folds.parquet")
    logger.info("%s: %d subjects (%d patients), %d ROIs, %d invalid ROI columns, %d folds%s",
                dataset, len(subjects), int(subjects["diagnosis"].sum()), n_regions,
                int((~region_valid).sum()), n_folds, " (GENERATED data)" if dataset == "generated" else "")
