"""Corpus stage: articles, peak coordinates and a QC table from one of three sources.

Sources
-------
``nimare_bundled``
    The real studyset that NiMARE ships (``nback_vs_flanker_studyset_2026-07``: 320 studies
    with titles and abstracts, 906 analyses, 9,492 peaks). One article per study, every
    analysis' peaks, the analysis id as ``table_id``.
``pubget``
    A PubMed Central query downloaded with pubget, then pubget's own offline extraction.
``pubget_dir``
    An existing pubget data folder.

Every record that does not reach the output tables is counted in the QC table with the
reason, so that ``kept + dropped == input`` holds at article and peak level.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
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
NCBI_API_KEY_ENV = "NCBI_API_KEY"


class CorpusError(ValueError):
    """Raised when a corpus input is unusable; the message names the file and key."""


@dataclass
class QCLog:
    """Accumulates counts of dropped or altered records, one row per (level, reason)."""

    stage: str = "corpus"
    rows: list = field(default_factory=list)

    def add(self, level: str, reason: str, count: int, detail: str = "") -> None:
        """Record ``count`` records of ``level`` ('article', 'peak', 'file') for ``reason``."""
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


def _read_checked(path: Path, columns: list[str], what: str) -> pd.DataFrame:
    """Read a Parquet or CSV input, naming the file and any missing column on error."""
    if not path.is_file():
        raise CorpusError(f"{path}: {what} not found")
    table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise CorpusError(f"{path}: missing column(s) {missing}")
    return table


def _read_table(folder: Path, name: str, columns: list[str]) -> pd.DataFrame:
    return _read_checked(folder / f"{name}.parquet", columns, f"studyset table '{name}'")


def _ids_from_slug(slug) -> tuple:
    """NeuroStore slugs read '<pmid>-<doi with dashes>[-pmc<pmcid>]'."""
    if not isinstance(slug, str):
        return pd.NA, pd.NA
    pmid = re.match(r"^(\d+)-", slug)
    pmcid = re.search(r"-pmc(\d+)$", slug)
    return (int(pmid.group(1)) if pmid else pd.NA, int(pmcid.group(1)) if pmcid else pd.NA)


def load_nimare_studyset(folder: str | os.PathLike | None = None):
    """Read a NiMARE parquet studyset into raw article and peak tables.

    Parameters
    ----------
    folder : path-like, optional
        Studyset folder (``studies.parquet``, ``coordinates.parquet``, ...). Defaults to the
        studyset bundled with NiMARE.

    Returns
    -------
    articles : DataFrame with :data:`ARTICLE_COLUMNS`
    peaks : DataFrame with ``article_id, table_id, x, y, z, space``
    """
    folder = Path(folder) if folder else bundled_studyset_dir()
    studies = _read_table(folder, "studies", ["study_id", "name", "description"])
    coords = _read_table(folder, "coordinates", ["id", "study_id", "x", "y", "z", "space"])
    metadata_path = folder / "metadata.parquet"
    meta = (
        pd.read_parquet(metadata_path).drop_duplicates("study_id").set_index("study_id")
        if metadata_path.is_file() else pd.DataFrame()
    )

    def meta_column(name):
        if name in meta.columns:
            return studies["study_id"].map(meta[name])
        return pd.Series(pd.NA, index=studies.index)

    ids = [_ids_from_slug(s) for s in meta_column("slug")]
    journal = studies["publication"] if "publication" in studies else meta_column("journal")
    articles = pd.DataFrame({
        "article_id": studies["study_id"].astype(str),
        "pmcid": pd.array([i[1] for i in ids], dtype="Int64"),
        "pmid": pd.array([i[0] for i in ids], dtype="Int64"),
        "doi": pd.Series(pd.NA, index=studies.index, dtype="string"),
        "title": studies["name"].astype("string"),
        "abstract": studies["description"].astype("string"),
        "body": pd.Series(pd.NA, index=studies.index, dtype="string"),
        "keywords": meta_column("keywords").astype("string"),
        "journal": journal.astype("string"),
        "year": pd.array([pd.NA] * len(studies), dtype="Int64"),
        "source": "nimare_bundled",
    })
    peaks = pd.DataFrame({
        "article_id": coords["study_id"].astype(str),
        "table_id": coords["id"].astype(str),
        "x": coords["x"].astype("float64"),
        "y": coords["y"].astype("float64"),
        "z": coords["z"].astype("float64"),
        "space": coords["space"].fillna("UNKNOWN").astype(str).str.upper(),
    })
    return articles, peaks


def _read_csv(folder: Path, name: str, columns: list[str]) -> pd.DataFrame:
    return _read_checked(folder / name, columns, "pubget output file")


def find_pubget_extracted_dir(pubget_dir: str | os.PathLike) -> Path:
    """Locate the ``subset_*_extractedData`` folder inside a pubget data folder."""
    pubget_dir = Path(pubget_dir)
    if (pubget_dir / "text.csv").is_file():
        return pubget_dir
    found = sorted(pubget_dir.glob("**/subset_*_extractedData"))
    found = [f for f in found if (f / "text.csv").is_file()]
    if not found:
        raise CorpusError(
            f"{pubget_dir}: no pubget 'subset_*_extractedData' folder with text.csv inside"
        )
    if len(found) > 1:
        _LOG.warning("several pubget extractions in %s; using %s", pubget_dir, found[0])
    return found[0]


def load_pubget_extracted(folder: str | os.PathLike):
    """Read pubget's extracted CSV files into raw article and peak tables.

    Parameters
    ----------
    folder : path-like
        A pubget ``subset_*_extractedData`` folder, or a data folder containing one.
    """
    folder = find_pubget_extracted_dir(folder)
    text = _read_csv(folder, "text.csv", ["pmcid", "title", "keywords", "abstract", "body"])
    meta = _read_csv(folder, "metadata.csv", ["pmcid", "pmid", "doi", "journal",
                                              "publication_year"])
    coords = _read_csv(folder, "coordinates.csv", ["pmcid", "table_id", "x", "y", "z"])
    spaces = _read_csv(folder, "coordinate_space.csv", ["pmcid", "coordinate_space"])
    meta = meta.drop(columns=["title"], errors="ignore").drop_duplicates("pmcid")
    table = text.merge(meta, on="pmcid", how="left")
    articles = pd.DataFrame({
        "article_id": "PMC" + table["pmcid"].astype("int64").astype(str),
        "pmcid": table["pmcid"].astype("Int64"),
        "pmid": pd.to_numeric(table["pmid"], errors="coerce").astype("Int64"),
        "doi": table["doi"].astype("string"),
        "title": table["title"].astype("string"),
        "abstract": table["abstract"].astype("string"),
        "body": table["body"].astype("string"),
        "keywords": table["keywords"].astype("string"),
        "journal": table["journal"].astype("string"),
        "year": pd.to_numeric(table["publication_year"], errors="coerce").astype("Int64"),
        "source": "pubget",
    })
    space = coords["pmcid"].map(spaces.drop_duplicates("pmcid").set_index("pmcid")
                                ["coordinate_space"])
    peaks = pd.DataFrame({
        "article_id": "PMC" + coords["pmcid"].astype("int64").astype(str),
        "table_id": coords["table_id"].astype(str),
        "x": pd.to_numeric(coords["x"], errors="coerce"),
        "y": pd.to_numeric(coords["y"], errors="coerce"),
        "z": pd.to_numeric(coords["z"], errors="coerce"),
        "space": space.fillna("UNKNOWN").astype(str).str.upper(),
    })
    return articles, peaks


def quarantine_corrupt_articlesets(articlesets_dir: Path, qc: QCLog) -> list[Path]:
    """Move articlesets that do not parse as XML to ``<articlesets>/../corrupt_articlesets``.

    pubget parses each articleset in one go, so one truncated download would abort the whole
    extraction; we check each file first and set bad ones aside (kept, never deleted).
    """
    from lxml import etree

    corrupt = []
    for path in sorted(articlesets_dir.glob("articleset_*.xml")):
        try:
            etree.parse(str(path))
        except etree.XMLSyntaxError as error:
            target = articlesets_dir.parent / "corrupt_articlesets" / path.name
            target.parent.mkdir(exist_ok=True)
            shutil.move(str(path), target)
            corrupt.append(target)
            qc.add("file", "dropped: corrupt articleset", 1, f"{path.name}: {error}")
    return corrupt


def run_pubget(
    query: str,
    data_dir: str | os.PathLike,
    qc: QCLog,
    n_docs: int | None = None,
    n_jobs: int = 1,
    download: bool = True,
) -> Path:
    """Download (optional) and extract PubMed Central articles with pubget.

    The NCBI API key is read from the ``NCBI_API_KEY`` environment variable and handed to
    pubget only; it is never logged or written. Exit code 1 (incomplete download) is
    logged as a warning and the extraction proceeds on what was downloaded.

    Returns
    -------
    Path of pubget's ``subset_allArticles_extractedData`` folder.
    """
    import pubget

    data_dir = Path(data_dir)
    if download:
        if not query:
            raise CorpusError("config key corpus.pubget.query is required for source 'pubget'")
        api_key = os.environ.get(NCBI_API_KEY_ENV) or None
        if api_key is None:
            _LOG.warning("%s is not set: NCBI allows 3 requests/s without a key",
                         NCBI_API_KEY_ENV)
        articlesets_dir, code = pubget.download_query_results(
            query, data_dir, n_docs=n_docs, api_key=api_key
        )
        if int(code) == 1:
            _LOG.warning("pubget download incomplete (exit code 1); continuing with what "
                         "was downloaded")
        elif int(code) > 1:
            raise CorpusError(f"{articlesets_dir}: pubget download failed (exit code {int(code)})")
    else:
        found = sorted(data_dir.glob("**/articlesets"))
        if not found:
            raise CorpusError(f"{data_dir}: no pubget 'articlesets' folder")
        articlesets_dir = found[0]
    quarantine_corrupt_articlesets(Path(articlesets_dir), qc)
    articles_dir, _ = pubget.extract_articles(articlesets_dir, n_jobs=n_jobs)
    extracted_dir, _ = pubget.extract_data_to_csv(articles_dir, n_jobs=n_jobs)
    return Path(extracted_dir)


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


def clean_corpus(
    articles: pd.DataFrame,
    peaks: pd.DataFrame,
    qc: QCLog,
    unknown_space: str = "mni",
    max_distance_to_brain_mm: float = 10.0,
    required_section: str = "abstract",
):
    """Apply the corpus rules and record every dropped or converted record in ``qc``.

    Order: duplicate articles, peaks of unknown articles, coordinate space, non-finite and
    out-of-brain peaks, articles without peaks, articles without ``required_section``.
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

    # duplicates: same article_id, or same pmcid (kept: first by article_id)
    duplicate = articles["article_id"].duplicated()
    if articles["pmcid"].notna().any():
        duplicate |= articles["pmcid"].notna() & articles["pmcid"].duplicated()
    dup_ids = set(articles.loc[duplicate, "article_id"])
    # a duplicated article_id keeps its first row; its peaks stay with the kept row
    qc.add("article", "dropped: duplicate article", int(duplicate.sum()))
    lost = peaks["article_id"].isin(dup_ids - set(articles.loc[~duplicate, "article_id"]))
    qc.add("peak", "dropped: article duplicate article", int(lost.sum()))
    articles = articles.loc[~duplicate].reset_index(drop=True)
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


def build_corpus(
    corpus_config: dict,
    articles_path: str | os.PathLike,
    peaks_path: str | os.PathLike,
    qc_path: str | os.PathLike,
    resources_dir: str | os.PathLike = "resources",
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Build ``articles.parquet``, ``peaks.parquet`` and ``qc.parquet`` from ``corpus_config``.

    ``corpus_config`` is the validated ``corpus`` section of the configuration.
    """
    qc = QCLog()
    source = corpus_config["source"]
    if source == "nimare_bundled":
        articles, peaks = load_nimare_studyset(corpus_config.get("nimare_studyset"))
    elif source == "pubget":
        pubget_cfg = corpus_config.get("pubget") or {}
        extracted = run_pubget(
            pubget_cfg.get("query"),
            Path(resources_dir) / "pubget",
            qc,
            n_docs=pubget_cfg.get("n_docs"),
            n_jobs=pubget_cfg.get("n_jobs", 1),
        )
        articles, peaks = load_pubget_extracted(extracted)
    elif source == "pubget_dir":
        folder = corpus_config.get("pubget_dir")
        if not folder:
            raise CorpusError("config key corpus.pubget_dir is required for source 'pubget_dir'")
        articles, peaks = load_pubget_extracted(folder)
    else:
        raise CorpusError(f"config key corpus.source: unknown source {source!r}")
    articles, peaks = clean_corpus(
        articles,
        peaks,
        qc,
        unknown_space=corpus_config.get("unknown_space", "mni"),
        max_distance_to_brain_mm=corpus_config.get("max_distance_to_brain_mm", 10.0),
        required_section=corpus_config.get("required_section", "abstract"),
    )
    qc_table = qc.to_frame()
    write_parquet(articles, articles_path)
    write_parquet(peaks, peaks_path)
    write_parquet(qc_table, qc_path)
    _LOG.info("corpus: %d articles, %d peaks", len(articles), len(peaks))
    return articles, peaks, qc_table
