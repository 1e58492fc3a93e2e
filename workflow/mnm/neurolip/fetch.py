"""ROI time series and phenotypes through nilearn's fetchers (ABIDE PCP, ADHD-200).

Both functions return ``(subjects, time_series)``: a table with one row per subject in the
project's standard columns (:data:`SUBJECT_COLUMNS`) and a list of ``(time points, ROIs)``
arrays in the same order. Downloads are cached in nilearn's layout under the given
``data_dir`` (the pipeline passes ``<resources_dir>/neurolip``); when the files are already
there nothing is downloaded, which is how the generated fixture (:mod:`mnm.neurolip.fixture`)
and the offline tests go through the real fetcher.

ABIDE (:func:`nilearn.datasets.fetch_abide_pcp`)
    ROI tables of one PCP derivative (``rois_cc200`` by default) and the phenotypic table:
    ``DX_GROUP`` 1 autism / 2 control, ``SEX`` 1 male / 2 female, ``SITE_ID``,
    ``AGE_AT_SCAN``; the subject id is ``FILE_ID`` (one scan per subject).
ADHD-200 (:func:`nilearn.datasets.fetch_adhd`, 40 subjects)
    4D functional images, reduced to ROI time series by
    :class:`nilearn.maskers.NiftiLabelsMasker` on a label atlas (detrended, z-scored,
    confounds from the fetcher's regressor files). Phenotypes from the fetcher's CSV,
    columns :data:`ADHD_COLUMNS` (``adhd`` 1 ADHD / 0 control; sex ``M``/``F`` or the
    ADHD-200 coding 1 male / 0 female).
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "SUBJECT_COLUMNS",
    "ADHD_COLUMNS",
    "abide_strategy",
    "config_strategy",
    "fetch_abide",
    "abide_subjects",
    "fetch_adhd_time_series",
    "adhd_subjects",
]

logger = logging.getLogger(__name__)

#: Columns of the standard subject table (``generated`` is true only for the fixture).
SUBJECT_COLUMNS = ["subject_id", "diagnosis", "sex", "site", "age", "generated"]
#: Columns of nilearn's ADHD phenotypic CSV read by :func:`adhd_subjects`.
ADHD_COLUMNS = {"subject": "Subject", "diagnosis": "adhd", "sex": "sex", "site": "site", "age": "age"}
ADHD_PHENOTYPIC = "ADHD200_40subs_motion_parameters_and_phenotypics.csv"
ABIDE_PHENOTYPIC = "Phenotypic_V1_0b_preprocessed1.csv"


def _require(table: pd.DataFrame, columns, where: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing}; found {list(table.columns)}")


def _coded(values: pd.Series, codes: dict, where: str) -> np.ndarray:
    """Map raw codes (compared as lower-case strings) to values; unknown codes are errors."""
    keys = values.astype(str).str.strip().str.lower()
    unknown = sorted(set(keys) - set(codes))
    if unknown:
        raise ValueError(f"{where}: unknown value(s) {unknown[:5]} (expected {sorted(codes)})")
    return keys.map(codes).to_numpy()


def abide_strategy(band_pass_filtering: bool, global_signal_regression: bool) -> str:
    """Folder name nilearn's ``fetch_abide_pcp`` builds for a strategy (``nofilt_noglobal``)."""
    return f"{'' if band_pass_filtering else 'no'}filt_{'' if global_signal_regression else 'no'}global"


def config_strategy(abide: dict) -> str:
    """:func:`abide_strategy` of the config section ``neurolip.abide``."""
    return abide_strategy(abide["band_pass_filtering"], abide["global_signal_regression"])


def fetch_abide(data_dir, derivative: str = "rois_cc200", pipeline: str = "cpac",
                band_pass_filtering: bool = False, global_signal_regression: bool = False,
                quality_checked: bool = True, n_subjects: int | None = None):
    """ABIDE PCP ROI time series and phenotypes through :func:`nilearn.datasets.fetch_abide_pcp`.

    Parameters
    ----------
    data_dir : path-like
        nilearn data folder (receives ``ABIDE_pcp/``).
    derivative : str
        A ``rois_*`` derivative of the PCP (``rois_cc200``, ``rois_ho``, ...).
    pipeline, band_pass_filtering, global_signal_regression, quality_checked, n_subjects
        Passed to the fetcher.

    Returns
    -------
    subjects : pandas.DataFrame
        :data:`SUBJECT_COLUMNS`.
    time_series : list of numpy.ndarray
        ``(time points, ROIs)`` per subject.

    Raises
    ------
    FileNotFoundError
        When the files are absent and cannot be downloaded; the message says where they go.
    """
    from nilearn.datasets import fetch_abide_pcp

    if not derivative.startswith("rois_"):
        raise ValueError(f"neurolip.abide.derivative must be a rois_* derivative, got {derivative!r}")
    data_dir = Path(data_dir)
    try:
        fetched = fetch_abide_pcp(
            data_dir=str(data_dir), n_subjects=n_subjects, pipeline=pipeline,
            band_pass_filtering=band_pass_filtering, global_signal_regression=global_signal_regression,
            derivatives=[derivative], quality_checked=quality_checked, verbose=0,
        )
    except Exception as exc:  # network errors come in many types (URLError, OSError, ...)
        folder = data_dir / "ABIDE_pcp"
        strategy = abide_strategy(band_pass_filtering, global_signal_regression)
        raise FileNotFoundError(
            f"could not fetch ABIDE PCP (no network?): {exc}\nDownload it on a machine with "
            f"network access (nilearn.datasets.fetch_abide_pcp(data_dir={str(data_dir)!r}, "
            f"derivatives=[{derivative!r}])), or place:\n  {folder / ABIDE_PHENOTYPIC}\n  "
            f"{folder / pipeline / strategy}/<FILE_ID>_{derivative}.1D (one per subject)"
        ) from exc
    subjects = abide_subjects(fetched["phenotypic"], where=str(data_dir / "ABIDE_pcp" / ABIDE_PHENOTYPIC))
    series = [np.atleast_2d(np.asarray(s, dtype=np.float64)) for s in fetched[derivative]]
    return subjects, series


def abide_subjects(phenotypic: pd.DataFrame, where: str = "ABIDE phenotypic table") -> pd.DataFrame:
    """Standard subject table from ABIDE's phenotypic columns (see the module docstring)."""
    _require(phenotypic, ["FILE_ID", "DX_GROUP", "SEX", "SITE_ID", "AGE_AT_SCAN"], where)
    generated = phenotypic["GENERATED"].astype(str).str.lower().eq("true") if "GENERATED" in phenotypic else False
    return pd.DataFrame({
        "subject_id": phenotypic["FILE_ID"].astype(str).to_numpy(),
        "diagnosis": _coded(phenotypic["DX_GROUP"], {"1": 1, "2": 0}, f"{where} column DX_GROUP"),
        "sex": _coded(phenotypic["SEX"], {"1": "male", "2": "female"}, f"{where} column SEX"),
        "site": phenotypic["SITE_ID"].astype(str).to_numpy(),
        "age": pd.to_numeric(phenotypic["AGE_AT_SCAN"], errors="coerce").to_numpy(dtype=float),
        "generated": np.broadcast_to(np.asarray(generated), len(phenotypic)).astype(bool),
    }).astype({"diagnosis": np.int64})


def adhd_subjects(phenotypic: pd.DataFrame, subject_ids, where: str = ADHD_PHENOTYPIC) -> pd.DataFrame:
    """Standard subject table for the ADHD subjects ``subject_ids`` (in that order).

    Ids are matched as integers: nilearn's file names keep leading zeros (``0010042``)
    where the CSV drops them (``10042``).
    """
    _require(phenotypic, list(ADHD_COLUMNS.values()), where)
    by_id = phenotypic.assign(_key=pd.to_numeric(phenotypic[ADHD_COLUMNS["subject"]], errors="coerce"))
    by_id = by_id.drop_duplicates("_key").set_index("_key")
    keys = [int(s) for s in subject_ids]
    missing = [s for s, k in zip(subject_ids, keys) if k not in by_id.index]
    if missing:
        raise ValueError(f"{where}: no phenotypic row for subject(s) {missing[:5]}")
    rows = by_id.loc[keys]
    sex_codes = {"m": "male", "male": "male", "1": "male", "f": "female", "female": "female", "0": "female"}
    return pd.DataFrame({
        "subject_id": [str(s) for s in subject_ids],
        "diagnosis": _coded(rows[ADHD_COLUMNS["diagnosis"]], {"1": 1, "0": 0}, f"{where} column adhd"),
        "sex": _coded(rows[ADHD_COLUMNS["sex"]], sex_codes, f"{where} column sex"),
        "site": rows[ADHD_COLUMNS["site"]].astype(str).to_numpy(),
        "age": pd.to_numeric(rows[ADHD_COLUMNS["age"]], errors="coerce").to_numpy(dtype=float),
        "generated": False,
    }).astype({"diagnosis": np.int64})


def fetch_adhd_time_series(data_dir, labels_img, n_subjects: int | None = None):
    """ADHD-200 (nilearn's 40-subject sample) as ROI time series on ``labels_img``.

    Parameters
    ----------
    data_dir : path-like
        nilearn data folder (receives ``adhd/``).
    labels_img : path or Nifti1Image
        Label atlas; ROI column ``k`` is its ``k``-th smallest non-zero label. A label the
        masker finds no voxel of (after resampling to the functional grid) gives an all-zero
        column, which the connectivity stage masks.
    n_subjects : int, optional
        Number of subjects (nilearn's default order); None takes all 40.

    Returns
    -------
    subjects, time_series
        As :func:`fetch_abide`.
    """
    import nibabel as nib
    from nilearn.datasets import fetch_adhd
    from nilearn.maskers import NiftiLabelsMasker

    data_dir = Path(data_dir)
    try:
        fetched = fetch_adhd(n_subjects=n_subjects, data_dir=str(data_dir), verbose=0)
    except Exception as exc:  # network errors come in many types
        raise FileNotFoundError(
            f"could not fetch ADHD-200 (no network?): {exc}\nDownload it on a machine with network "
            f"access (nilearn.datasets.fetch_adhd(data_dir={str(data_dir)!r})), or place "
            f"{data_dir / 'adhd' / ADHD_PHENOTYPIC} and adhd/data/<id>/<id>_rest_tshift_RPI_voreg_mni.nii.gz "
            "with <id>_regressors.csv"
        ) from exc
    labels_img = nib.load(labels_img) if isinstance(labels_img, (str, Path)) else labels_img
    roi_values = np.unique(np.asarray(labels_img.dataobj))
    roi_values = roi_values[roi_values != 0]
    ids = [Path(f).name.split("_")[0] for f in fetched["func"]]
    phenotypic = pd.read_csv(data_dir / "adhd" / ADHD_PHENOTYPIC)  # nilearn's own copy drops zero-led ids
    subjects = adhd_subjects(phenotypic, ids, where=str(data_dir / "adhd" / ADHD_PHENOTYPIC))
    series = []
    # nilearn calls gc.collect() on every image access; freezing the objects alive meanwhile
    # keeps each collection cheap (as mnm.report.figures does for plotting).
    gc.freeze()
    try:
        for func, confounds in zip(fetched["func"], fetched["confounds"]):
            masker = NiftiLabelsMasker(labels_img, standardize="zscore_sample", detrend=True,
                                       t_r=fetched.get("t_r"), keep_masked_labels=False, reports=False)
            signals = masker.fit_transform(func, confounds=confounds)
            full = np.zeros((signals.shape[0], len(roi_values)))
            full[:, np.searchsorted(roi_values, _region_values(masker))] = signals
            series.append(full)
    finally:
        gc.unfreeze()
    return subjects, series


def _region_values(masker) -> np.ndarray:
    """Label values of the columns a fitted NiftiLabelsMasker returned (background excluded)."""
    ids = masker.region_ids_
    return np.asarray([ids[k] for k in sorted(k for k in ids if k != "background")], dtype=float)
