"""Classical coordinate-based meta-analysis (NiMARE) of the articles a query retrieves.

NeuroConText (Ghayem et al., Imaging Neuroscience 2026) proposes feeding the peaks of the
top-k studies a text retrieves to a coordinate-based meta-analysis (CBMA), a second-level
synthesis next to the model's own predicted map. :func:`meta_analysis` does that for a
query of :mod:`mnm.query`:

1. the peaks of the retrieved articles (``corpus/peaks.parquet``, MNI) become a NiMARE
   studyset with one study and one analysis (experiment) per article -- an article's tables
   are pooled, as the brain stage pools them, so that one study never counts as several
   independent experiments (Turkeltaub et al. 2012);
2. NiMARE's estimator runs on the run's analysis grid: the MNI152 brain mask on the atlas
   grid (``atlas.resolution_mm``), so its maps and the model's are voxel for voxel comparable:

   * ``ale``: :class:`nimare.meta.cbma.ALE` with a fixed kernel FWHM of ``brain.fwhm_mm`` (the
     corpus has no sample sizes for ALE's sample-size-dependent kernel; the fixed width is the
     one the model's brain maps are built with; :func:`nimare_ale_fwhm` makes NiMARE's kernel
     that wide on any grid, not only 2 mm);
   * ``mkda``: :class:`nimare.meta.cbma.MKDADensity` with NiMARE's default 10 mm spheres;

   both with NiMARE's default analytic ("approximate") null: uncorrected z, p and -log10 p
   maps, in seconds (a Monte Carlo FWE correction would take minutes: run NiMARE on
   ``mnm export --nimare`` for that);
3. the Pearson correlation between the meta-analytic z map and the model's predicted map
   (decoder route) over the brain-mask voxels the atlas covers (where the model's map is
   defined).

The web page calls :func:`meta_analysis` with the table and decoder map of
:func:`mnm.query.query_text`; ``mnm query TEXT --meta-analysis ale|mkda`` does the same.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np
import pandas as pd

_LOG = logging.getLogger(__name__)

#: ``--meta-analysis`` choices.
METHODS = ("ale", "mkda")
#: Radius (mm) of MKDA's spheres: NiMARE's (and Wager et al. 2007's) default.
MKDA_RADIUS_MM = 10.0
#: Output map kinds, in the order they are written.
MAP_KINDS = ("z", "logp")


class MetaAnalysisError(ValueError):
    """A meta-analysis that cannot run (too few articles with peaks, unknown method)."""


@dataclass
class MetaAnalysis:
    """Maps and summary of one meta-analysis.

    Attributes
    ----------
    method : str
        ``ale`` or ``mkda``.
    images : dict
        ``{"stat", "z", "p", "logp"}`` -> 3D image on the run's analysis grid (``stat``: the
        ALE value or MKDA density; ``logp`` is ``-log10 p``; uncorrected).
    article_ids : list of str
        Articles whose peaks went in, in the query's rank order.
    n_peaks : int
    correlation : float or None
        Pearson r between the z map and the model's predicted map; None without a prediction.
    n_voxels : int
        Voxels the correlation is computed over (0 without a prediction).
    seconds : float
        Time spent in NiMARE's estimator.
    settings : dict
        Estimator, kernel and null used.
    """

    method: str
    images: dict
    article_ids: list
    n_peaks: int
    correlation: float | None = None
    n_voxels: int = 0
    seconds: float = 0.0
    settings: dict = field(default_factory=dict)

    def output_maps(self) -> dict:
        """``{"meta_<method>_z": img, "meta_<method>_logp": img}`` for
        :func:`mnm.query.write_outputs` (each written as NIfTI + glass brain; the glass
        brain of a p map shows -log10 p, the map NiMARE names ``logp``)."""
        return {f"meta_{self.method}_{kind}": self.images[kind] for kind in MAP_KINDS}

    def summary(self) -> dict:
        """JSON-ready summary (written as ``meta_analysis.json`` beside the maps)."""
        return {
            "method": self.method,
            "articles": list(self.article_ids),
            "n_articles": len(self.article_ids),
            "n_peaks": int(self.n_peaks),
            "correlation_with_decoder_map": self.correlation,
            "correlation_voxels": int(self.n_voxels),
            "seconds": round(float(self.seconds), 3),
            "maps": {kind: f"meta_{self.method}_{kind}.nii.gz" for kind in MAP_KINDS},
            **self.settings,
        }


def nimare_ale_fwhm(fwhm_mm: float, voxel_mm: float) -> float:
    """The ``fwhm`` to give NiMARE's ALE kernel for a Gaussian of FWHM ``fwhm_mm`` on an
    isotropic ``voxel_mm`` grid.

    ``nimare.meta.utils.get_ale_kernel`` (0.x) converts the FWHM to voxels by dividing by
    ``sqrt(prod(zooms))`` (= ``voxel_mm ** 1.5``) and takes ``sigma = fwhm_vox * sqrt(2) /
    (2 sqrt(2 ln 2))``; the two cancel on a 2 mm grid (GingerALE's) only. On a ``v`` mm grid its
    kernel has FWHM ``fwhm * sqrt(2 / v)`` (6.4 mm instead of 9 on the 4 mm grid), so the value
    is scaled by ``sqrt(v / 2)`` (identity at 2 mm). tests/test_meta.py checks the kernel width.
    """
    return float(fwhm_mm) * float(np.sqrt(voxel_mm / 2.0))


def make_estimator(method: str, fwhm_mm: float, voxel_mm: float = 2.0):
    """NiMARE's CBMA estimator for ``method`` on an isotropic ``voxel_mm`` grid (see the
    module docstring)."""
    from nimare.meta.cbma import ALE, MKDADensity

    if method == "ale":
        kernel_fwhm = nimare_ale_fwhm(fwhm_mm, voxel_mm)
        return ALE(kernel__fwhm=kernel_fwhm, null_method="approximate"), {
            "estimator": "nimare.meta.cbma.ALE", "kernel_fwhm_mm": float(fwhm_mm),
            "nimare_kernel_fwhm": kernel_fwhm, "null_method": "approximate", "corrected": False}
    if method == "mkda":
        return MKDADensity(kernel__r=MKDA_RADIUS_MM, null_method="approximate"), {
            "estimator": "nimare.meta.cbma.MKDADensity", "kernel_radius_mm": MKDA_RADIUS_MM,
            "null_method": "approximate", "corrected": False}
    raise MetaAnalysisError(f"unknown meta-analysis method {method!r}; expected one of {METHODS}")


def cbma_maps(articles: pd.DataFrame, peaks: pd.DataFrame, mask_img, method: str = "ale",
              fwhm_mm: float = 9.0) -> tuple[dict, dict, float]:
    """Run NiMARE's CBMA on the peaks of ``articles`` within ``mask_img``.

    Parameters
    ----------
    articles : DataFrame
        The articles (one experiment each), with the corpus table's columns.
    peaks : DataFrame
        ``article_id, x, y, z`` in MNI mm (``table_id`` ignored: an article's tables pool).
    mask_img : 3D Niimg
        Brain mask on the grid of the output maps.
    method : {"ale", "mkda"}
    fwhm_mm : float
        ALE kernel FWHM.

    Returns
    -------
    images : dict
        ``stat``, ``z``, ``p``, ``logp`` -> 3D float32 images on ``mask_img``'s grid.
    settings : dict
        What was run (estimator, kernel, null).
    seconds : float
        Time spent fitting.
    """
    from nimare.nimads import Studyset

    from mnm.nimare_io import nimads_document
    from mnm.report.figures import frozen_gc

    zooms = mask_img.header.get_zooms()[:3]
    if not np.allclose(zooms, zooms[0]):
        raise MetaAnalysisError(f"the analysis grid must be isotropic, got voxels of {zooms} mm")
    estimator, settings = make_estimator(method, fwhm_mm, float(zooms[0]))
    pooled = peaks.assign(table_id="all peaks")
    articles = articles[articles["article_id"].isin(set(pooled["article_id"]))]
    if len(articles) < 2:
        raise MetaAnalysisError(f"a meta-analysis needs at least 2 articles with peaks, got "
                                f"{len(articles)}; retrieve more articles (--top-k)")
    document = nimads_document(articles, pooled, name="query meta-analysis")
    start = time.perf_counter()
    with frozen_gc():  # nilearn's gc.collect() calls: 3.5 of 6 s of an ALE fit
        studyset = Studyset(document, target="mni152_2mm", mask=mask_img)
        result = estimator.fit(studyset)
        images = {kind: nib.Nifti1Image(np.asarray(result.get_map(kind).dataobj,
                                                   dtype=np.float32), mask_img.affine)
                  for kind in ("stat", "z", "p", "logp")}
    return images, settings, time.perf_counter() - start


def map_correlation(img_a, img_b, voxels: np.ndarray) -> tuple[float, int]:
    """Pearson correlation of two maps on one grid over the ``voxels`` mask.

    Returns ``(r, number of voxels)``; a constant map gives r = 0.

    Raises
    ------
    ValueError
        When the maps are not on ``voxels``' grid (same shape and affine): resample first.
    """
    import torch

    from mnm.models.base import pairwise_pearson

    voxels = np.asarray(voxels, dtype=bool)
    for img in (img_a, img_b):
        if img.shape[:3] != voxels.shape or not np.allclose(img.affine, img_a.affine):
            raise ValueError(f"map of shape {img.shape} (affine {img.affine.tolist()}) is not on "
                             f"the grid of shape {voxels.shape} and affine {img_a.affine.tolist()}")
    values = [np.asarray(img.dataobj, dtype=np.float64).reshape(voxels.shape)[voxels]
              for img in (img_a, img_b)]
    r = pairwise_pearson(torch.as_tensor(values[0][None]), torch.as_tensor(values[1][None]))
    return float(r[0, 0]), int(voxels.sum())


def _query_peaks(run, article_ids) -> pd.DataFrame:
    """The run's peaks of ``article_ids`` (``corpus/peaks.parquet``)."""
    from mnm.io import read_parquet
    from mnm.query import QueryError

    path = run.results / "corpus" / "peaks.parquet"
    if not path.is_file():
        raise QueryError(f"{path}: corpus peaks missing; the run is unfinished (run "
                         "`snakemake --cores all` first)", missing_run=True)
    peaks = read_parquet(path, columns=["article_id", "table_id", "x", "y", "z"])
    return peaks[peaks["article_id"].isin(set(article_ids))]


def meta_analysis(run, table: pd.DataFrame, method: str = "ale", predicted=None) -> MetaAnalysis:
    """Meta-analysis of the peaks of a query's retrieved articles, compared with the model.

    Parameters
    ----------
    run : mnm.query.QueryRun
        The run queried (its atlas grid, brain mask, corpus and ``brain.fwhm_mm``).
    table : DataFrame
        The query's result table (:data:`mnm.query.RESULT_COLUMNS`); every listed article
        with peaks is one experiment.
    method : {"ale", "mkda"}
    predicted : 3D image, optional
        The model's predicted map on the atlas grid (``maps["decoder"]`` of
        :func:`mnm.query.query_text`); the correlation is None without it.

    Returns
    -------
    MetaAnalysis

    Raises
    ------
    mnm.query.QueryError
        When the run's peaks are missing, or fewer than two retrieved articles have peaks.
    """
    from mnm.query import QueryError

    ids = [str(a) for a in table["article_id"]]
    peaks = _query_peaks(run, ids)
    with_peaks = [a for a in ids if a in set(peaks["article_id"])]
    projector = run.projector
    maps_img, _ = run.atlas
    mask_img = nib.Nifti1Image(projector.mask_.astype(np.uint8), maps_img.affine)
    articles = run.articles.loc[with_peaks].reset_index(drop=True)
    try:
        images, settings, seconds = cbma_maps(articles, peaks, mask_img, method,
                                              run.config["brain"]["fwhm_mm"])
    except MetaAnalysisError as error:
        raise QueryError(str(error)) from None
    result = MetaAnalysis(method=method, images=images, article_ids=with_peaks,
                          n_peaks=len(peaks), seconds=seconds,
                          settings={**settings, "grid_mm": float(abs(maps_img.affine[0, 0]))})
    if predicted is not None:
        result.correlation, result.n_voxels = map_correlation(
            images["z"], predicted, projector.mask_ & projector.atlas_voxels_)
    _LOG.info("%s meta-analysis of %d articles (%d peaks) in %.1f s; r(z, decoder) = %s",
              method, len(with_peaks), len(peaks), seconds, result.correlation)
    return result
