"""Corpus stage: articles, peak coordinates and a QC table from one of three sources.

Sources
-------
``nimare_bundled``
    The real studyset that NiMARE ships (``nback_vs_flanker_studyset_2026-07``: 320 studies
    with titles and abstracts, 906 analyses, 9,492 peaks), or the studyset named by
    ``corpus.nimare_studyset`` (a NiMARE parquet studyset folder, a NIMADS studyset JSON or a
    NiMARE Dataset JSON), read through NiMARE's own classes (:mod:`mnm.nimare_io`). One
    article per study, every analysis' peaks, the analysis id as ``table_id``.
``pubget``
    A PubMed Central query downloaded with pubget, then pubget's own offline extraction
    (:mod:`mnm.pubget_source`, which also checks pubget's output).
``pubget_dir``
    An existing pubget data folder.

Every record that does not reach the output tables is counted in the QC table with the
reason, so that ``kept + dropped == input`` holds at article and peak level. Rows at level
``file`` describe problems found in input files and ``query`` rows the download.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mnm.io import write_parquet

_LOG = logging.getLogger(__name__)

ARTICLE_COLUMNS = [
    "article_id", "pmcid", "pmid", "doi", "title", "abstract", "body",
    "keywords", "journal", "year", "source",
]
PEAK_COLUMNS = ["article_id", "table_id", "x", "y", "z"]
QC_COLUMNS = ["stage", "level", "reason", "count", "detail"]
TEXT_SECTIONS = ("title", "abstract", "body")
NIMARE_STUDYSET_NAME = "nback_vs_flanker_studyset_2026-07"


class CorpusError(ValueError):
    """Raised when a corpus input is unusable; the message names the file and key."""


@dataclass
class QCLog:
    """Accumulates counts of dropped or altered records, one row per (level, reason)."""

    stage: str = "corpus"
    rows: list = field(default_factory=list)

    def add(self, level: str, reason: str, count: int, detail: str = "") -> None:
        """Record ``count`` records of ``level`` ('article', 'peak', 'file', 'query')."""
        if count:
            self.rows.append(
                {"stage": self.stage, "level": level, "reason": reason,
                 "count": int(count), "detail": detail}
            )
            _LOG.info("QC %s: %s x%d %s", level, reason, count, detail)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=QC_COLUMNS).astype({"count": "int64"})

    def dropped(self, level: str) -> int:
        """Number of records of ``level`` dropped (rows whose reason starts with 'dropped')."""
        return sum(
            r["count"] for r in self.rows
            if r["level"] == level and r["reason"].startswith("dropped")
        )


# --------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------
def bundled_studyset_dir() -> Path:
    """Folder of the studyset bundled with NiMARE (>= 0.22), found without importing NiMARE
    (its import takes seconds and config validation calls this at every start)."""
    import importlib.util

    spec = importlib.util.find_spec("nimare")
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError("NiMARE is not installed; install nimare>=0.22 or set "
                          "corpus.nimare_studyset to a studyset folder")
    path = Path(list(spec.submodule_search_locations)[0]) / "resources" / NIMARE_STUDYSET_NAME
    if not path.is_dir():
        raise CorpusError(
            f"{path}: NiMARE's bundled studyset is missing; install nimare>=0.22 "
            "or set corpus.nimare_studyset to a studyset folder"
        )
    return path


def load_nimare_studyset(source: str | os.PathLike | None = None, qc: QCLog | None = None):
    """Read a studyset through NiMARE (:mod:`mnm.nimare_io`) into raw article and peak tables.

    Parameters
    ----------
    source : path-like, optional
        A NiMARE parquet studyset folder, a NIMADS studyset JSON or a NiMARE Dataset JSON.
        Defaults to the studyset bundled with NiMARE.
    qc : QCLog, optional
        Receives a ``file`` row when NiMARE ignores coordinate rows of a parquet studyset
        (rows naming no analysis of ``analyses.parquet``).

    Returns
    -------
    articles : DataFrame with :data:`ARTICLE_COLUMNS`
    peaks : DataFrame with ``article_id, table_id, x, y, z, space`` (as reported: the
        TAL -> MNI conversion and its QC count happen in :func:`clean_corpus`)
    """
    from mnm.nimare_io import StudysetError, read_studyset, studyset_tables

    path = Path(source) if source else bundled_studyset_dir()
    try:
        studyset = read_studyset(path)
    except StudysetError as error:
        raise CorpusError(str(error)) from None
    articles, peaks = studyset_tables(studyset, source_label="nimare_bundled")
    coordinates_file = path / "coordinates.parquet"
    if qc is not None and path.is_dir() and coordinates_file.is_file():
        import pyarrow.parquet as pq

        ignored = pq.ParquetFile(coordinates_file).metadata.num_rows - len(peaks)
        qc.add("file", "ignored: coordinates of no listed analysis", ignored,
               str(coordinates_file))
    return articles, peaks


# --------------------------------------------------------------------------------------
# Cleaning
# --------------------------------------------------------------------------------------
def tal_to_mni(xyz: np.ndarray) -> np.ndarray:
    """Talairach -> MNI with the Lancaster (tal2icbm) transform, via NiMARE."""
    from nimare.utils import tal2mni

    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    if len(xyz) == 0:
        return xyz
    return np.asarray(tal2mni(xyz), dtype=np.float64)


def distance_to_brain_mm(xyz: np.ndarray) -> np.ndarray:
    """Distance (mm) from each point to the nearest voxel of the MNI152 2 mm brain mask.

    Points inside the mask get 0; points outside the template's field of view get +inf.
    """
    from nilearn.datasets import load_mni152_brain_mask
    from scipy.ndimage import distance_transform_edt

    mask = load_mni152_brain_mask(resolution=2)
    inside = np.asarray(mask.get_fdata()) > 0
    zooms = mask.header.get_zooms()[:3]
    distance = distance_transform_edt(~inside, sampling=zooms)
    ijk = np.rint(
        np.c_[xyz, np.ones(len(xyz))] @ np.linalg.inv(mask.affine).T
    )[:, :3]
    finite = np.all(np.isfinite(ijk), axis=1)
    ijk = np.where(finite[:, None], ijk, -1).astype(np.int64)
    in_grid = finite & np.all((ijk >= 0) & (ijk < np.array(inside.shape)), axis=1)
    out = np.full(len(xyz), np.inf)
    out[in_grid] = distance[tuple(ijk[in_grid].T)]
    return out


def _has_text(series: pd.Series) -> pd.Series:
    return series.fillna("").astype(str).str.strip().str.len() > 0


def filled_fields(table: pd.DataFrame, columns: list[str]) -> pd.Series:
    """Number of non-empty (after stripping) ``columns`` per row: how rich a row is."""
    return sum((_has_text(table[c]).astype(int) for c in columns),
               pd.Series(0, index=table.index))


def _richness(articles: pd.DataFrame) -> dict[str, pd.Series]:
    """Non-empty text fields (``_filled``) and characters of text (``_chars``) per row."""
    fields = [*TEXT_SECTIONS, "keywords"]
    return {
        "_filled": filled_fields(articles, fields),
        "_chars": sum(articles[f].fillna("").astype(str).str.len() for f in fields),
    }


def _duplicate_key(articles: pd.DataFrame) -> pd.Series:
    """Rows with the same key are one article: same pmcid, or same id when there is none."""
    pmcid = "pmcid:" + articles["pmcid"].astype("string")
    return pmcid.fillna("id:" + articles["article_id"].astype("string"))


def clean_corpus(
    articles: pd.DataFrame,
    peaks: pd.DataFrame,
    qc: QCLog,
    unknown_space: str = "mni",
    max_distance_to_brain_mm: float = 10.0,
    required_section: str = "abstract",
):
    """Apply the corpus rules and record every dropped or converted record in ``qc``.

    Order: records without an id, duplicate articles (the richest row is kept), peaks of
    unknown articles, coordinate space, non-finite and out-of-brain peaks, articles without
    peaks, articles without ``required_section``.
    Peaks of a dropped article are counted at peak level with the article's reason.
    """
    if unknown_space not in ("mni", "drop"):
        raise CorpusError(f"config key corpus.unknown_space: expected 'mni' or 'drop', "
                          f"got {unknown_space!r}")
    if required_section not in TEXT_SECTIONS:
        raise CorpusError(f"config key corpus.required_section: expected one of "
                          f"{TEXT_SECTIONS}, got {required_section!r}")
    articles = articles.sort_values("article_id", kind="stable").reset_index(drop=True)
    peaks = peaks.reset_index(drop=True)
    qc.add("article", "input", len(articles))
    qc.add("peak", "input", len(peaks))

    def drop_articles(mask: pd.Series, reason: str):
        nonlocal articles, peaks
        gone = set(articles.loc[mask, "article_id"])
        qc.add("article", f"dropped: {reason}", len(gone))
        lost = peaks["article_id"].isin(gone)
        qc.add("peak", f"dropped: article {reason}", int(lost.sum()))
        articles = articles.loc[~mask].reset_index(drop=True)
        peaks = peaks.loc[~lost].reset_index(drop=True)

    # rows without an id (pubget rows whose pmcid is empty or unreadable)
    no_id = articles["article_id"].isna()
    qc.add("article", "dropped: no readable pmcid", int(no_id.sum()))
    articles = articles.loc[~no_id].reset_index(drop=True)
    no_id = peaks["article_id"].isna()
    qc.add("peak", "dropped: no readable pmcid", int(no_id.sum()))
    peaks = peaks.loc[~no_id].reset_index(drop=True)

    # duplicates: same article_id, or same pmcid; the richest row is kept (most non-empty
    # text fields, then most text, then the first article_id), never just the first copy
    ranked = articles.assign(_key=_duplicate_key(articles), **_richness(articles))
    ranked = ranked.sort_values(["_filled", "_chars", "article_id"],
                                ascending=[False, False, True], kind="stable")
    duplicate = ranked["_key"].duplicated() | ranked["article_id"].duplicated()
    qc.add("article", "dropped: duplicate article", int(duplicate.sum()),
           "same pmcid or article_id; the row with the most text was kept")
    kept_ids = set(ranked.loc[~duplicate, "article_id"])
    # peaks belong to an article_id: those of a kept article_id stay with the kept row
    lost = peaks["article_id"].isin(set(ranked.loc[duplicate, "article_id"]) - kept_ids)
    qc.add("peak", "dropped: article duplicate article", int(lost.sum()))
    articles = (ranked.loc[~duplicate, ARTICLE_COLUMNS]
                .sort_values("article_id", kind="stable").reset_index(drop=True))
    peaks = peaks.loc[~lost].reset_index(drop=True)

    orphan = ~peaks["article_id"].isin(articles["article_id"])
    qc.add("peak", "dropped: no matching article", int(orphan.sum()))
    peaks = peaks.loc[~orphan].reset_index(drop=True)

    space = peaks.get("space", pd.Series("MNI", index=peaks.index)).fillna("UNKNOWN")
    space = space.astype(str).str.upper()
    tal = space.isin(["TAL", "TALAIRACH"]).to_numpy()
    xyz = peaks[["x", "y", "z"]].to_numpy(dtype=np.float64, copy=True)
    if tal.any():
        xyz[tal] = tal_to_mni(xyz[tal])
        qc.add("peak", "converted: TAL to MNI (Lancaster)", int(tal.sum()))
    peaks[["x", "y", "z"]] = xyz
    unknown = (~space.isin(["MNI", "TAL", "TALAIRACH"])).to_numpy()
    if unknown.any():
        labels = ", ".join(f"{k}={v}" for k, v in space[unknown].value_counts().items())
        if unknown_space == "mni":
            qc.add("peak", "kept: unknown space treated as MNI", int(unknown.sum()), labels)
        else:
            qc.add("peak", "dropped: unknown space", int(unknown.sum()), labels)
            peaks = peaks.loc[~unknown].reset_index(drop=True)
            xyz = xyz[~unknown]

    finite = np.all(np.isfinite(xyz), axis=1)
    qc.add("peak", "dropped: non-finite coordinate", int((~finite).sum()))
    peaks, xyz = peaks.loc[finite].reset_index(drop=True), xyz[finite]
    far = distance_to_brain_mm(xyz) > max_distance_to_brain_mm
    qc.add("peak", "dropped: outside the brain", int(far.sum()),
           f"> {max_distance_to_brain_mm} mm from the MNI152 brain mask")
    peaks = peaks.loc[~far].reset_index(drop=True)

    drop_articles(~articles["article_id"].isin(peaks["article_id"]), "no peaks")
    drop_articles(~_has_text(articles[required_section]), f"no {required_section}")

    qc.add("article", "kept", len(articles))
    qc.add("peak", "kept", len(peaks))
    peaks = peaks[PEAK_COLUMNS].astype({"x": "float64", "y": "float64", "z": "float64"})
    return articles[ARTICLE_COLUMNS].reset_index(drop=True), peaks


def _load_source(corpus_config: dict, qc: QCLog, resources_dir: Path):
    """Raw article and peak tables of the configured source, and where they came from."""
    source = corpus_config["source"]
    if source == "nimare_bundled":
        studyset = corpus_config.get("nimare_studyset")
        articles, peaks = load_nimare_studyset(studyset, qc)
        return articles, peaks, studyset or bundled_studyset_dir()
    from mnm import pubget_source

    allow_incomplete = bool(corpus_config.get("allow_incomplete", False))
    if source == "pubget":
        pubget_cfg = corpus_config.get("pubget") or {}
        extracted, limited = pubget_source.run_pubget(
            pubget_cfg.get("query"),
            resources_dir / "pubget",
            qc,
            n_docs=pubget_cfg.get("n_docs"),
            n_jobs=pubget_cfg.get("n_jobs", 1),
            batch_size=pubget_cfg.get("batch_size", 500),
            allow_incomplete=allow_incomplete,
        )
        articles, peaks = pubget_source.load_pubget_extracted(
            extracted, qc, allow_incomplete, limited_by_n_docs=limited)
        return articles, peaks, extracted
    if source == "pubget_dir":
        folder = corpus_config.get("pubget_dir")
        if not folder:
            raise CorpusError("config key corpus.pubget_dir is required for source 'pubget_dir'")
        articles, peaks = pubget_source.load_pubget_extracted(folder, qc, allow_incomplete)
        return articles, peaks, folder
    raise CorpusError(f"config key corpus.source: unknown source {source!r}")


def _qc_summary(qc: QCLog) -> str:
    """One line of the QC counts, for error messages."""
    return "QC: " + "; ".join(f"{r['level']} {r['reason']}: {r['count']}" for r in qc.rows)


def build_corpus(
    corpus_config: dict,
    articles_path: str | os.PathLike,
    peaks_path: str | os.PathLike,
    qc_path: str | os.PathLike,
    resources_dir: str | os.PathLike = "resources",
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Build ``articles.parquet``, ``peaks.parquet`` and ``qc.parquet`` from ``corpus_config``.

    ``corpus_config`` is the validated ``corpus`` section of the configuration.

    Raises
    ------
    CorpusError
        On unusable input, naming the file (and line or key), or when no article is left;
        the message also goes to the log (the rule's log file).
    """
    qc = QCLog()
    try:
        articles, peaks, origin = _load_source(corpus_config, qc, Path(resources_dir))
        articles, peaks = clean_corpus(
            articles,
            peaks,
            qc,
            unknown_space=corpus_config.get("unknown_space", "mni"),
            max_distance_to_brain_mm=corpus_config.get("max_distance_to_brain_mm", 10.0),
            required_section=corpus_config.get("required_section", "abstract"),
        )
        if articles.empty:
            raise CorpusError(f"{origin}: no article left for the corpus; {_qc_summary(qc)}")
    except CorpusError as error:
        _LOG.error("%s", error)
        raise
    qc_table = qc.to_frame()
    write_parquet(articles, articles_path)
    write_parquet(peaks, peaks_path)
    write_parquet(qc_table, qc_path)
    _LOG.info("corpus: %d articles, %d peaks", len(articles), len(peaks))
    return articles, peaks, qc_table
