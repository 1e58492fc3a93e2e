"""NiMARE in and out: studysets read through NiMARE's classes, corpora written for NiMARE.

Reading (:func:`read_studyset`, :func:`studyset_tables`)
    NiMARE's parquet studyset releases (the bundled ``nback_vs_flanker_studyset_2026-07``),
    NIMADS studyset JSON documents and NiMARE Dataset JSON documents are all opened as a
    :class:`nimare.nimads.Studyset` (a Dataset through :class:`nimare.dataset.Dataset` and
    :meth:`~nimare.nimads.Studyset.from_dataset`) and turned into the raw article and peak
    tables of the corpus stage. Coordinates are read in their reported space
    (``target=None``); the corpus stage converts Talairach peaks with NiMARE's Lancaster
    transform (:func:`nimare.utils.tal2mni`, the one NiMARE's own space harmonisation
    applies) and counts every conversion and drop in its QC table.

Writing (:func:`export_nimare`)
    A corpus (``articles.parquet``, ``peaks.parquet``, peaks in MNI) becomes a NIMADS
    studyset (written by NiMARE itself, :meth:`~nimare.nimads.Studyset.to_nimads`) and a
    NiMARE Dataset JSON (the dictionary format :class:`nimare.dataset.Dataset` reads; NiMARE
    has no writer for it). One study per article, one analysis per peak table.

Where article fields live
    ============  ==========================================================================
    field         read from (first non-empty), written to
    ============  ==========================================================================
    title         Dataset text ``title``; study ``name`` (NIMADS).  Written to both.
    abstract      Dataset text ``abstract``; study ``description`` (NIMADS).
    body          Dataset text ``body``; study metadata ``body`` (NIMADS).
    pmid, doi,    study attributes (NIMADS); metadata (Dataset). NeuroStore slugs
    year          ``<pmid>-<doi>[-pmc<pmcid>]`` give pmid and pmcid when nothing else does.
    pmcid,        metadata (``source`` as ``mnm_source``).
    keywords,
    source
    journal       study ``publication`` (NIMADS); metadata ``journal`` (Dataset).
    ============  ==========================================================================
"""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from mnm.io import atomic_path

_LOG = logging.getLogger(__name__)

#: File names written by :func:`export_nimare`.
NIMADS_FILE = "nimads_studyset.json"
DATASET_FILE = "nimare_dataset.json"
#: Space label of exported peaks (the corpus stage stores MNI coordinates).
EXPORT_SPACE = "MNI"
#: Metadata key holding the corpus ``source`` of an exported article (NeuroStore's own
#: ``source`` metadata means something else: the database a study came from).
PROVENANCE_KEY = "mnm_source"


class StudysetError(ValueError):
    """A studyset that cannot be read; the message names the file."""


# --------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------
def _quiet_dataset(document: dict):
    """:class:`nimare.dataset.Dataset` of a Dataset JSON document, coordinates untouched.

    NiMARE deprecates ``Dataset`` (0.21) but still reads the format through it; its
    deprecation notice and the "no target space" notice say nothing the user can act on.
    """
    from nimare.dataset import Dataset

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*nimare.dataset.Dataset is deprecated")
        warnings.filterwarnings("ignore", message="No mask or target space specified")
        return Dataset(document, target=None)


def _is_dataset_document(document) -> bool:
    """NiMARE's Dataset format: ``{study id: {"contrasts": {contrast id: {...}}}}``."""
    return (isinstance(document, dict) and bool(document)
            and all(isinstance(v, dict) and isinstance(v.get("contrasts"), dict)
                    for v in document.values()))


def read_studyset(source: str | os.PathLike):
    """Open a studyset with NiMARE, coordinates in their reported spaces.

    Parameters
    ----------
    source : path-like
        A NiMARE parquet studyset folder (``studyset.json``, ``studies.parquet``,
        ``analyses.parquet``, ``coordinates.parquet``, ...), a NIMADS studyset JSON file
        (top-level ``studies``) or a NiMARE Dataset JSON file (study id -> ``contrasts``).

    Returns
    -------
    nimare.nimads.Studyset
        With ``target=None``: :attr:`~nimare.nimads.Studyset.coordinates` are as reported.

    Raises
    ------
    StudysetError
        Naming the path when it is missing, unreadable or of no known format.
    """
    from nimare.nimads import Studyset

    path = Path(source)
    if path.is_dir():
        try:
            return Studyset(str(path), target=None)
        except (ValueError, KeyError, OSError) as error:
            raise StudysetError(
                f"{path}: not a NiMARE parquet studyset ({error}); a studyset folder needs "
                "studies.parquet and analyses.parquet (and coordinates.parquet)") from error
    if not path.is_file():
        raise StudysetError(f"{path}: studyset not found (a NiMARE parquet studyset folder, "
                            "a NIMADS studyset JSON or a NiMARE Dataset JSON)")
    try:
        document = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise StudysetError(f"{path}: not a JSON file ({error})") from error
    try:
        if isinstance(document, dict) and "studies" in document:
            return Studyset(document, target=None)
        if _is_dataset_document(document):
            return Studyset.from_dataset(_quiet_dataset(document))
    except (ValueError, KeyError, TypeError, IndexError) as error:
        raise StudysetError(f"{path}: NiMARE cannot read this studyset ({error!r})") from error
    raise StudysetError(
        f"{path}: neither a NIMADS studyset (a top-level 'studies' list) nor a NiMARE "
        "Dataset (study id -> {'contrasts': {...}})")


def nimare_space_label(space) -> str:
    """``MNI``, ``TAL`` or the upper-cased label, by NiMARE's own rule.

    NiMARE treats a space naming ``mni`` or ``ale`` as MNI and one naming ``tal`` as
    Talairach (``nimare.io.convert_nimads_to_dataset``, ``nimare.studyset.layout``); any
    other label (``UNKNOWN``, ``OTHER``) is left for the corpus stage's ``unknown_space``.
    """
    if not isinstance(space, str) or not space.strip():
        return "UNKNOWN"
    lowered = space.lower()
    if "mni" in lowered or "ale" in lowered:
        return "MNI"
    if "tal" in lowered:
        return "TAL"
    return space.strip().upper()


def _missing(value) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip() or value == "None"
    if isinstance(value, (list, tuple, dict, np.ndarray)):
        return len(value) == 0
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _first_per_study(frame: pd.DataFrame, column: str) -> pd.Series:
    """First non-empty value of ``column`` per ``study_id`` (empty Series if absent)."""
    if frame is None or column not in frame.columns or frame.empty:
        return pd.Series(dtype=object)
    present = frame.loc[~frame[column].map(_missing), ["study_id", column]]
    return present.drop_duplicates("study_id").set_index("study_id")[column]


def _as_text(value):
    """Text of a field; lists and dicts (keywords) as JSON, like NeuroStore's own strings."""
    if _missing(value):
        return pd.NA
    if isinstance(value, (list, tuple, dict, np.ndarray)):
        return json.dumps(list(value) if isinstance(value, np.ndarray) else value)
    return str(value)


def _as_int(value):
    """An integer id or year; NA when absent or not a whole number ("PMC123" -> 123)."""
    if _missing(value):
        return pd.NA
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return int(value) if float(value).is_integer() else pd.NA
    match = re.fullmatch(r"\s*(?:PMC)?(\d+)(?:\.0+)?\s*", str(value), flags=re.IGNORECASE)
    return int(match.group(1)) if match else pd.NA


def _ids_from_slug(slug) -> tuple:
    """NeuroStore slugs read '<pmid>-<doi with dashes>[-pmc<pmcid>]'."""
    if not isinstance(slug, str):
        return pd.NA, pd.NA
    pmid = re.match(r"^(\d+)-", slug)
    pmcid = re.search(r"-pmc(\d+)$", slug)
    return (int(pmid.group(1)) if pmid else pd.NA, int(pmcid.group(1)) if pmcid else pd.NA)


def _pick(*candidates):
    """The first non-missing candidate (NA when none)."""
    return next((c for c in candidates if not _missing(c)), pd.NA)


def studyset_tables(studyset, source_label: str = "nimare_bundled"):
    """Raw article and peak tables of a studyset (one article per study).

    Parameters
    ----------
    studyset : nimare.nimads.Studyset
        Opened with ``target=None`` (:func:`read_studyset`), so that peaks keep their space.
    source_label : str
        Value of the articles' ``source`` column when the studyset names none.

    Returns
    -------
    articles : DataFrame with :data:`mnm.corpus.ARTICLE_COLUMNS`
    peaks : DataFrame ``article_id, table_id, x, y, z, space``: ``table_id`` is the
        analysis id, ``space`` ``MNI``/``TAL`` or another upper-case label
        (:func:`nimare_space_label`).
    """
    texts, metadata = studyset.texts, studyset.metadata
    by_study = {
        (frame_name, column): _first_per_study(frame, column)
        for frame_name, frame, columns in (
            ("text", texts, ("title", "abstract", "body", "keywords")),
            ("meta", metadata, ("title", "abstract", "body", "keywords", "pmid", "pmcid", "doi",
                                "year", "journal", "slug", PROVENANCE_KEY)),
        )
        for column in columns
    }

    def field(frame_name, column, study_id):
        return by_study[(frame_name, column)].get(study_id, pd.NA)

    rows = []
    for study in studyset.studies:
        sid = study.id
        slug_pmid, slug_pmcid = _ids_from_slug(field("meta", "slug", sid))
        # a study converted from a Dataset without a title is named by its id: not a title
        name = study.name if study.name != sid else None
        rows.append({
            "article_id": sid,
            "pmcid": _as_int(_pick(field("meta", "pmcid", sid), slug_pmcid)),
            "pmid": _as_int(_pick(study.pmid, field("meta", "pmid", sid), slug_pmid)),
            "doi": _as_text(_pick(study.doi, field("meta", "doi", sid))),
            "title": _as_text(_pick(field("text", "title", sid), name,
                                    field("meta", "title", sid))),
            "abstract": _as_text(_pick(field("text", "abstract", sid), study.description,
                                       field("meta", "abstract", sid))),
            "body": _as_text(_pick(field("text", "body", sid), study.metadata.get("body"),
                                   field("meta", "body", sid))),
            "keywords": _as_text(_pick(field("text", "keywords", sid),
                                       study.metadata.get("keywords"),
                                       field("meta", "keywords", sid))),
            "journal": _as_text(_pick(study.publication, field("meta", "journal", sid))),
            "year": _as_int(_pick(study.year, field("meta", "year", sid))),
            "source": _as_text(_pick(study.metadata.get(PROVENANCE_KEY),
                                     field("meta", PROVENANCE_KEY, sid), source_label)),
        })
    from mnm.corpus import ARTICLE_COLUMNS

    articles = pd.DataFrame(rows, columns=ARTICLE_COLUMNS).astype({
        "article_id": "string", "pmcid": "Int64", "pmid": "Int64", "doi": "string",
        "title": "string", "abstract": "string", "body": "string", "keywords": "string",
        "journal": "string", "year": "Int64", "source": "string",
    }).astype({"article_id": str, "source": str})
    coordinates = studyset.coordinates
    peaks = pd.DataFrame({
        "article_id": coordinates["study_id"].astype(str).to_numpy(),
        "table_id": coordinates["contrast_id"].astype(str).to_numpy(),
        "x": coordinates["x"].to_numpy(dtype=np.float64),
        "y": coordinates["y"].to_numpy(dtype=np.float64),
        "z": coordinates["z"].to_numpy(dtype=np.float64),
        "space": [nimare_space_label(s) for s in coordinates["space"]],
    })
    return articles, peaks


# --------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------
def _json_value(value):
    """A JSON-ready scalar (None for missing; numpy and pandas scalars unwrapped)."""
    if _missing(value):
        return None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return value


def _study_fields(article) -> dict:
    """The article's fields, JSON-ready, under the names of the tables."""
    fields = {name: _json_value(article[name]) for name in
              ("title", "abstract", "body", "keywords", "pmid", "pmcid", "doi", "journal", "year")}
    fields[PROVENANCE_KEY] = _json_value(article["source"])
    return fields


def _peak_groups(peaks: pd.DataFrame) -> dict:
    """``{article_id: {table_id: (n, 3) float64 xyz}}``, tables in order of appearance."""
    groups: dict = {}
    xyz = peaks[["x", "y", "z"]].to_numpy(dtype=np.float64)
    keys = zip(peaks["article_id"].astype(str), peaks["table_id"].astype(str))
    rows: dict = {}
    for row, key in enumerate(keys):
        rows.setdefault(key, []).append(row)
    for (article, table), indices in rows.items():
        groups.setdefault(article, {})[table] = xyz[indices]
    return groups


def nimads_document(articles: pd.DataFrame, peaks: pd.DataFrame, name: str = "MNM corpus") -> dict:
    """A NIMADS studyset: one study per article, one analysis per peak table (MNI points)."""
    groups = _peak_groups(peaks)
    studies = []
    for article in articles.to_dict("records"):
        fields = _study_fields(article)
        studies.append({
            "id": str(article["article_id"]),
            "name": fields["title"],
            "description": fields["abstract"],
            "doi": fields["doi"],
            # NIMADS (NeuroStore) stores PubMed ids as strings
            "pmid": None if fields["pmid"] is None else str(fields["pmid"]),
            "year": fields["year"],
            "publication": fields["journal"],
            "metadata": {k: fields[k] for k in ("pmcid", "keywords", "body", PROVENANCE_KEY)
                         if fields[k] is not None},
            "analyses": [
                {"id": table, "name": table, "points": [
                    {"coordinates": [float(v) for v in point], "space": EXPORT_SPACE}
                    for point in xyz]}
                for table, xyz in groups.get(str(article["article_id"]), {}).items()
            ],
        })
    return {"id": "mnm-corpus", "name": name, "studies": studies}


def dataset_document(articles: pd.DataFrame, peaks: pd.DataFrame) -> dict:
    """A NiMARE Dataset dictionary: study -> contrasts (one per peak table) -> coords, text,
    metadata. Study-level facts are repeated in each contrast: Dataset keeps only those."""
    groups = _peak_groups(peaks)
    document = {}
    for article in articles.to_dict("records"):
        fields = _study_fields(article)
        text = {k: fields[k] for k in ("title", "abstract", "body", "keywords")
                if fields[k] is not None}
        metadata = {k: fields[k] for k in ("title", "pmid", "pmcid", "doi", "journal", "year",
                                           PROVENANCE_KEY) if fields[k] is not None}
        document[str(article["article_id"])] = {"contrasts": {
            table: {
                "coords": {"space": EXPORT_SPACE, "x": xyz[:, 0].tolist(),
                           "y": xyz[:, 1].tolist(), "z": xyz[:, 2].tolist()},
                "text": text,
                "metadata": metadata,
            }
            for table, xyz in groups.get(str(article["article_id"]), {}).items()
        }}
    return document


def export_nimare(articles: pd.DataFrame, peaks: pd.DataFrame, out_dir: str | os.PathLike,
                  name: str = "MNM corpus") -> dict:
    """Write a corpus as a NIMADS studyset and a NiMARE Dataset JSON (atomically).

    Parameters
    ----------
    articles, peaks : DataFrame
        The corpus stage's tables (:data:`mnm.corpus.ARTICLE_COLUMNS`, peaks in MNI mm).
    out_dir : path-like
        Folder receiving :data:`NIMADS_FILE` and :data:`DATASET_FILE` (created).
    name : str
        Name of the studyset.

    Returns
    -------
    dict
        ``{"nimads": path, "dataset": path}``.
    """
    from nimare.nimads import Studyset

    unknown = sorted(set(peaks["article_id"].astype(str)) - set(articles["article_id"].astype(str)))
    if unknown:
        raise ValueError(f"peaks of {len(unknown)} article(s) missing from the articles table, "
                         f"e.g. {unknown[:3]}")
    out_dir = Path(out_dir)
    paths = {"nimads": out_dir / NIMADS_FILE, "dataset": out_dir / DATASET_FILE}
    # NiMARE parses the document and writes it back: what lands on disk is what it reads.
    studyset = Studyset(nimads_document(articles, peaks, name), target=None)
    with atomic_path(paths["nimads"]) as tmp:
        studyset.to_nimads(str(tmp))
    with atomic_path(paths["dataset"]) as tmp:
        tmp.write_text(json.dumps(dataset_document(articles, peaks)))
    _LOG.info("exported %d articles, %d peaks to %s", len(articles), len(peaks), out_dir)
    return {key: str(path) for key, path in paths.items()}


def export_run_corpus(config_path: str | os.PathLike, out_dir: str | os.PathLike) -> dict:
    """:func:`export_nimare` of a run's ``corpus/articles.parquet`` and ``peaks.parquet``.

    Raises
    ------
    mnm.query.QueryError
        When the config or the corpus tables are missing (``missing_run``) or ``out_dir`` is
        an existing file.
    """
    from mnm.io import read_parquet
    from mnm.query import QueryError, load_run_config

    config = load_run_config(config_path)
    corpus_dir = Path(config["results_dir"]) / "corpus"
    tables = {name: corpus_dir / f"{name}.parquet" for name in ("articles", "peaks")}
    for path in tables.values():
        if not path.is_file():
            raise QueryError(f"{path}: corpus table missing; run `snakemake --cores all "
                             f"{path}` first", missing_run=True)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise QueryError(f"{out_dir}: exists and is not a folder; choose another --nimare")
    return export_nimare(read_parquet(tables["articles"]), read_parquet(tables["peaks"]),
                         out_dir, name=f"MNM corpus ({config['corpus']['source']})")
