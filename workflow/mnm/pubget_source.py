"""The pubget corpus source: download over NCBI's E-utilities, then read pubget's output safely.

pubget (https://neuroquery.github.io/pubget/) downloads PubMed Central articles in batches
("articlesets") and extracts them offline into CSV files. This module drives it and reads its
output without trusting it blindly:

* exit codes of the download: 1 only means that ``n_docs`` stopped the download before the
  query's match count (normal for a trial run: the count goes to QC); 2 means that some batches
  failed, which stops the corpus stage with a message saying that a rerun resumes (pubget keeps
  the downloaded batches and fetches only the missing ones);
* ``info.json`` with ``is_complete: false`` (an interrupted download or extraction) is refused
  unless ``corpus.allow_incomplete`` says otherwise;
* every CSV is checked to be whole UTF-8 text ending with a newline (a file cut while being
  written would otherwise be read as shorter valid data: ``-3`` instead of ``-30``) and to
  parse; errors name the file and line;
* duplicate or conflicting rows and rows without a readable PMCID are reported in QC;
  ``PMC``-prefixed identifiers are accepted;
* the NCBI API key is read from the environment, handed to pubget only, redacted from log
  records and scrubbed from pubget's dumps of failed requests (NCBI echoes it in error bodies).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import json
import logging
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from mnm.corpus import CorpusError, QCLog, filled_fields

_LOG = logging.getLogger(__name__)

NCBI_API_KEY_ENV = "NCBI_API_KEY"
REDACTED = "<NCBI_API_KEY>"
TEXT_FIELDS = ["title", "keywords", "abstract", "body"]
METADATA_FIELDS = ["pmid", "doi", "journal", "publication_year"]
# Columns each pubget CSV must have.
CSV_COLUMNS = {
    "text.csv": ["pmcid", *TEXT_FIELDS],
    "metadata.csv": ["pmcid", *METADATA_FIELDS],
    "coordinates.csv": ["pmcid", "table_id", "x", "y", "z"],
    "coordinate_space.csv": ["pmcid", "coordinate_space"],
}
UNKNOWN_SPACE = "UNKNOWN"
_CHUNK_BYTES = 1 << 24


# --------------------------------------------------------------------------------------
# Checked CSV reading
# --------------------------------------------------------------------------------------
def check_whole_utf8(path: Path) -> None:
    """Raise :class:`CorpusError` unless ``path`` is non-empty UTF-8 ending with a newline.

    pubget writes its CSV files line by line; a file cut while being written (a killed job, a
    full disk) ends without a newline, and the last value would otherwise be read as a valid,
    shorter one. The file is streamed, so memory stays small for a multi-GB text.csv.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    newlines, last_byte = 0, b""
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK_BYTES):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as error:
                # error.object is the decoder's pending bytes (never a newline) + this chunk
                line = newlines + error.object.count(b"\n", 0, error.start) + 1
                raise CorpusError(
                    f"{path}: line {line}: not UTF-8 text ({error.reason}: byte "
                    f"{error.object[error.start:error.start + 1]!r})"
                ) from None
            newlines += chunk.count(b"\n")
            last_byte = chunk[-1:]
    if not last_byte:
        raise CorpusError(f"{path}: empty file (pubget writes at least a header line)")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise CorpusError(f"{path}: line {newlines + 1}: file ends inside a UTF-8 "
                          "character: it was cut while being written") from None
    if last_byte != b"\n":
        raise CorpusError(
            f"{path}: line {newlines + 1}: the file does not end with a newline: it was cut "
            "while being written; run pubget's extraction again (delete the folder)"
        )


def locate_csv_problem(path: Path) -> tuple[int, str] | None:
    """First physical line where ``path`` stops being valid CSV, with what is wrong.

    Used only after pandas refused the file, to name the line: pandas counts records, and
    pubget's text fields span many lines.
    """
    with open(path, newline="", encoding="utf-8") as stream:
        reader = csv.reader(stream, strict=True)
        try:
            width = len(next(reader))
            for record in reader:
                if len(record) not in (0, width):
                    return reader.line_num, f"{len(record)} fields where the header has {width}"
        except csv.Error as error:
            return reader.line_num, str(error)
    return None


def read_pubget_csv(path: str | os.PathLike, columns: list[str]) -> pd.DataFrame:
    """Read one of pubget's CSV files as strings; any problem names the file and line.

    Only empty fields are missing values (a title reading "NA" stays a title).
    """
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{path}: pubget output file not found")
    check_whole_utf8(path)
    try:
        table = pd.read_csv(path, dtype=str, encoding="utf-8", keep_default_na=False,
                            na_values=[""])
    except pd.errors.ParserError as error:
        where = locate_csv_problem(path)
        if where is None:
            raise CorpusError(f"{path}: not valid CSV ({error})") from None
        raise CorpusError(f"{path}: line {where[0]}: not valid CSV ({where[1]})") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise CorpusError(f"{path}: missing column(s) {missing}")
    return table


# --------------------------------------------------------------------------------------
# pubget output folders
# --------------------------------------------------------------------------------------
def find_extracted_dir(pubget_dir: str | os.PathLike) -> Path:
    """The one ``subset_*_extractedData`` folder in ``pubget_dir`` (or ``pubget_dir`` itself).

    ``pubget_dir`` may be a pubget data folder, one ``query_*``/``pmcidList_*`` folder or an
    extracted-data folder. Several candidates (several queries were downloaded there) are an
    error listing them: the choice must be made in the configuration, not by sort order.
    """
    pubget_dir = Path(pubget_dir)
    if (pubget_dir / "text.csv").is_file():
        return pubget_dir
    if not pubget_dir.is_dir():
        raise CorpusError(f"{pubget_dir}: pubget folder not found")
    found = sorted(pubget_dir.glob("**/subset_*_extractedData"))
    if not found:
        raise CorpusError(f"{pubget_dir}: no pubget 'subset_*_extractedData' folder inside")
    if len(found) > 1:
        listing = "\n  ".join(str(f) for f in found)
        raise CorpusError(
            f"{pubget_dir}: {len(found)} pubget extractions (one per query or subset):\n  "
            f"{listing}\nset config key corpus.pubget_dir to the one to use"
        )
    return found[0]


def read_info(folder: Path) -> dict | None:
    """pubget's ``info.json`` of a step folder, or None when it is missing."""
    path = Path(folder) / "info.json"
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CorpusError(f"{path}: unreadable pubget info file ({error})") from None
    if not isinstance(info, dict):
        raise CorpusError(f"{path}: expected a JSON object")
    return info


def check_complete(folder: Path, qc: QCLog, allow_incomplete: bool = False,
                   limited_by_n_docs: bool = False) -> None:
    """Refuse pubget output that says it is incomplete, unless that is allowed or expected.

    pubget writes ``info.json`` at the end of each step, with ``is_complete`` false when the
    step or any earlier one did not finish: a missing file means an interrupted extraction.
    ``limited_by_n_docs`` (download exit code 1) is the expected incompleteness of a trial run.
    """
    info = read_info(folder)
    if info is not None and info.get("is_complete") is True:
        return
    if limited_by_n_docs:
        return
    problem = ("has no info.json: pubget's extraction did not finish" if info is None
               else "info.json says is_complete: false: pubget's download or extraction "
                    "did not finish")
    if not allow_incomplete:
        raise CorpusError(
            f"{folder}: {problem}. Run the corpus stage again (the download resumes), or set "
            "config key corpus.allow_incomplete: true to use the articles that are there"
        )
    qc.add("file", "kept: incomplete pubget output (corpus.allow_incomplete)", 1,
           f"{folder}: {problem}")


def quarantine_corrupt_articlesets(articlesets_dir: Path, qc: QCLog | None = None) -> list[Path]:
    """Move articlesets that do not parse as XML to ``<articlesets>/../corrupt_articlesets``.

    pubget skips a batch whose file exists and parses each articleset in one go, so one file
    cut while being written would stay forever or abort the extraction. Before a download the
    file is set aside (kept, never deleted) so that pubget fetches the batch again; after it,
    the lost batch is counted in ``qc``.
    """
    from lxml import etree

    corrupt = []
    for path in sorted(Path(articlesets_dir).glob("articleset_*.xml")):
        try:
            etree.parse(str(path))
        except etree.XMLSyntaxError as error:
            target = path.parent.parent / "corrupt_articlesets" / path.name
            target.parent.mkdir(exist_ok=True)
            shutil.move(str(path), target)
            corrupt.append(target)
            _LOG.warning("%s: corrupt articleset moved to %s (%s)", path, target, error)
            if qc is not None:
                qc.add("file", "dropped: corrupt articleset", 1, f"{path.name}: {error}")
    return corrupt


# --------------------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------------------
class _Redact(logging.Filter):
    """Replace a secret in every log record a handler emits."""

    def __init__(self, secret: str):
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.secret in message:
            record.msg, record.args = message.replace(self.secret, REDACTED), ()
        return True


@contextlib.contextmanager
def redacted_logs(secret: str | None):
    """Redact ``secret`` from the records of every handler of the root logger meanwhile."""
    handlers = list(logging.getLogger().handlers) if secret else []
    redact = _Redact(secret) if secret else None
    for handler in handlers:
        handler.addFilter(redact)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(redact)


def scrub_secret(folder: Path, secret: str | None) -> int:
    """Replace ``secret`` in every file under ``folder``; return how many files changed.

    pubget dumps failed requests (request body with the key shortened, and the response,
    in which NCBI's error messages repeat the key) under ``articlesets/failed_requests_dumps``.
    """
    if not secret or not Path(folder).is_dir():
        return 0
    needle, changed = secret.encode(), 0
    for path in Path(folder).rglob("*"):
        if path.is_file() and needle in (content := path.read_bytes()):
            path.write_bytes(content.replace(needle, REDACTED.encode()))
            changed += 1
    return changed


def _expected_batches(info: dict, n_docs: int | None) -> int:
    count = int(info.get("search_result", {}).get("count", 0))
    n_docs = count if n_docs is None else min(n_docs, count)
    return math.ceil(n_docs / int(info.get("retmax", 500))) if n_docs else 0


def download(query: str, data_dir: Path, qc: QCLog, n_docs: int | None = None,
             batch_size: int = 500, allow_incomplete: bool = False) -> tuple[Path, bool]:
    """Download (or resume downloading) the articles matching ``query`` with pubget.

    With ``allow_incomplete``, failed batches are counted in ``qc`` instead of stopping.

    Returns
    -------
    articlesets_dir : Path
    limited_by_n_docs : bool
        True when ``n_docs`` stopped the download before the match count (exit code 1).

    Raises
    ------
    CorpusError
        When batches failed (exit code 2); the message says that a rerun resumes.
    """
    import pubget

    if not query:
        raise CorpusError("config key corpus.pubget.query is required for source 'pubget'")
    api_key = os.environ.get(NCBI_API_KEY_ENV) or None
    if api_key is None:
        _LOG.warning("%s is not set: NCBI allows 3 requests/s without a key", NCBI_API_KEY_ENV)
    for previous in Path(data_dir).glob("*/articlesets"):
        # a batch cut by a killed download would be skipped as done: fetch it again
        quarantine_corrupt_articlesets(previous)
    with redacted_logs(api_key):
        articlesets_dir, code = pubget.download_query_results(
            query, data_dir, n_docs=n_docs, retmax=batch_size, api_key=api_key)
    articlesets_dir = Path(articlesets_dir)
    scrub_secret(articlesets_dir, api_key)
    info = read_info(articlesets_dir) or {}
    count = int(info.get("search_result", {}).get("count", 0))
    qc.add("query", "matching articles", count, f"{articlesets_dir.parent.name}: {query}")
    if int(code) >= 2:
        present = len(list(articlesets_dir.glob("articleset_*.xml")))
        missing = max(_expected_batches(info, n_docs) - present, 1)
        if allow_incomplete:
            qc.add("query", "not downloaded: failed batches (corpus.allow_incomplete)",
                   missing, f"batches of {batch_size} articles; a rerun fetches them")
            return articlesets_dir, False
        raise CorpusError(
            f"{articlesets_dir}: pubget could not download {missing} batch(es) of "
            f"{batch_size} articles (exit code {int(code)}; failed requests are described in "
            f"{articlesets_dir / 'failed_requests_dumps'}). The {present} batch(es) already "
            "downloaded are kept: run the workflow again and the download resumes with the "
            "missing batches only. If the failures persist for hours, NCBI's search session "
            f"has expired: delete {articlesets_dir.parent} to start over."
        )
    return articlesets_dir, int(code) == 1


def extract(articlesets_dir: Path, n_jobs: int = 1) -> Path:
    """pubget's offline extraction of an articlesets folder; return the extracted-data folder."""
    import pubget

    articles_dir, _ = pubget.extract_articles(articlesets_dir, n_jobs=n_jobs)
    extracted_dir, _ = pubget.extract_data_to_csv(articles_dir, n_jobs=n_jobs)
    return Path(extracted_dir)


def run_pubget(query: str | None, data_dir: str | os.PathLike, qc: QCLog,
               n_docs: int | None = None, n_jobs: int = 1, batch_size: int = 500,
               download_articles: bool = True,
               allow_incomplete: bool = False) -> tuple[Path, bool]:
    """Download (optional) and extract PubMed Central articles with pubget.

    Without download, ``data_dir`` must hold exactly one ``articlesets`` folder. See
    :func:`download` for ``allow_incomplete``.

    Returns
    -------
    extracted_dir : Path
        pubget's ``subset_allArticles_extractedData`` folder.
    limited_by_n_docs : bool
        Whether ``n_docs`` stopped the download early (counted in ``qc``).
    """
    data_dir = Path(data_dir)
    limited = False
    if download_articles:
        articlesets_dir, limited = download(query, data_dir, qc, n_docs, batch_size,
                                            allow_incomplete)
    else:
        found = sorted(data_dir.glob("**/articlesets"))
        if len(found) != 1:
            raise CorpusError(f"{data_dir}: expected one pubget 'articlesets' folder, found "
                              f"{[str(f) for f in found]}")
        articlesets_dir = found[0]
    quarantine_corrupt_articlesets(articlesets_dir, qc)
    extracted_dir = extract(articlesets_dir, n_jobs)
    if limited:
        downloaded = int((read_info(extracted_dir.parent / "articles") or {}).get(
            "n_articles", 0))
        total = int((read_info(articlesets_dir) or {}).get("search_result", {}).get("count", 0))
        qc.add("query", "not downloaded: corpus.pubget.n_docs below the match count",
               total - downloaded, f"n_docs={n_docs}, downloaded {downloaded} of {total}")
    return extracted_dir, limited


# --------------------------------------------------------------------------------------
# Loading pubget's extracted data
# --------------------------------------------------------------------------------------
def parse_ids(values: pd.Series) -> pd.Series:
    """Positive integer ids (PMCID, PMID) as nullable integers: "PMC123", " 123 " and "123"
    all give 123; anything else gives NA."""
    text = values.astype("string").str.strip().str.replace(r"^PMC", "", case=False, regex=True)
    numbers = pd.to_numeric(text, errors="coerce")
    numbers = numbers.where(np.isfinite(numbers) & (numbers % 1 == 0) & (numbers > 0))
    return numbers.astype("Int64")


def _data_rows(mask: pd.Series, limit: int = 5) -> str:
    rows = (np.flatnonzero(mask.to_numpy()) + 1).tolist()
    more = f" (+{len(rows) - limit} more)" if len(rows) > limit else ""
    return ", ".join(map(str, rows[:limit])) + more


def _with_pmcids(table: pd.DataFrame, path: Path, qc: QCLog, drop: bool) -> pd.DataFrame:
    """Parse the pmcid column; report unreadable ones (and drop them when ``drop``)."""
    table = table.assign(pmcid=parse_ids(table["pmcid"]))
    bad = table["pmcid"].isna()
    if bad.any():
        action = "ignored" if drop else "reported"
        qc.add("file", f"{action}: rows without a readable pmcid", int(bad.sum()),
               f"{path}: data rows {_data_rows(bad)}")
        if drop:
            table = table.loc[~bad].reset_index(drop=True)
    return table


def _one_row_per_pmcid(table: pd.DataFrame, columns: list[str], path: Path,
                       qc: QCLog) -> pd.DataFrame:
    """Keep the richest row of each pmcid (most non-empty ``columns``); report duplicates."""
    duplicated = table["pmcid"].duplicated(keep=False)
    if not duplicated.any():
        return table
    dups = table.loc[duplicated, ["pmcid", *columns]]
    conflicting = dups.fillna("").groupby("pmcid")[columns].nunique().gt(1).any(axis=1)
    n_conflicts, n_extra = int(conflicting.sum()), int(duplicated.sum() - dups.pmcid.nunique())
    qc.add("file", "conflicting duplicate rows: kept the richest", n_conflicts,
           f"{path}: pmcid {', '.join(map(str, conflicting[conflicting].index[:5]))}")
    qc.add("file", "ignored: duplicate rows", n_extra, f"{path}")
    order = table.assign(_filled=filled_fields(table, columns), _row=np.arange(len(table)))
    order = order.sort_values(["pmcid", "_filled", "_row"], ascending=[True, False, True])
    kept = order.drop_duplicates("pmcid").sort_values("_row")
    return kept.drop(columns=["_filled", "_row"]).reset_index(drop=True)


def _coordinate_spaces(spaces: pd.DataFrame, path: Path, qc: QCLog) -> pd.Series:
    """One space per pmcid; conflicting duplicates keep the only known value, else UNKNOWN."""
    values = spaces.assign(space=spaces["coordinate_space"].fillna(UNKNOWN_SPACE)
                           .astype(str).str.strip().str.upper())
    unique = values.drop_duplicates(["pmcid", "space"])
    resolved = unique.drop_duplicates("pmcid", keep=False).set_index("pmcid")["space"]
    conflicts = unique[unique["pmcid"].duplicated(keep=False)]
    if conflicts.empty:
        return resolved
    options = conflicts.groupby("pmcid")["space"].agg(sorted)
    qc.add("file", "conflicting coordinate_space duplicates", len(options),
           f"{path}: " + "; ".join(f"PMC{k}: {'/'.join(v)}" for k, v in options.head(5).items())
           + " (a single known space is kept, else UNKNOWN)")

    def resolve(choices):
        known = [c for c in choices if c != UNKNOWN_SPACE]
        return known[0] if len(known) == 1 else UNKNOWN_SPACE

    return pd.concat([resolved, options.map(resolve)])


def _article_ids(pmcids: pd.Series) -> pd.Series:
    return ("PMC" + pmcids.astype("string")).astype("string")


def load_pubget_extracted(folder: str | os.PathLike, qc: QCLog | None = None,
                          allow_incomplete: bool = False, limited_by_n_docs: bool = False):
    """Read pubget's extracted CSV files into raw article and peak tables.

    Parameters
    ----------
    folder : path-like
        A pubget ``subset_*_extractedData`` folder, or a folder containing exactly one.
    qc : QCLog, optional
        Receives file-level problems (unreadable pmcids, duplicates, conflicts).
    allow_incomplete, limited_by_n_docs : bool
        See :func:`check_complete`.

    Returns
    -------
    articles : DataFrame with the corpus article columns (``article_id`` "PMC<pmcid>", NA
        when the row has no readable pmcid; the cleaning step drops and counts those)
    peaks : DataFrame with ``article_id, table_id, x, y, z, space``
    """
    from mnm.corpus import ARTICLE_COLUMNS

    qc = QCLog() if qc is None else qc
    folder = find_extracted_dir(folder)
    check_complete(folder, qc, allow_incomplete, limited_by_n_docs)
    tables = {name: read_pubget_csv(folder / name, columns)
              for name, columns in CSV_COLUMNS.items()}
    text = _with_pmcids(tables["text.csv"], folder / "text.csv", qc, drop=False)
    meta = _with_pmcids(tables["metadata.csv"], folder / "metadata.csv", qc, drop=True)
    meta = _one_row_per_pmcid(meta, METADATA_FIELDS, folder / "metadata.csv", qc)
    coords = _with_pmcids(tables["coordinates.csv"], folder / "coordinates.csv", qc,
                          drop=False)
    spaces = _with_pmcids(tables["coordinate_space.csv"], folder / "coordinate_space.csv",
                          qc, drop=True)
    space = _coordinate_spaces(spaces, folder / "coordinate_space.csv", qc)

    table = text.merge(meta[["pmcid", *METADATA_FIELDS]], on="pmcid", how="left")
    articles = pd.DataFrame({
        "article_id": _article_ids(table["pmcid"]),
        "pmcid": table["pmcid"],
        "pmid": parse_ids(table["pmid"]),
        "doi": table["doi"].astype("string"),
        **{name: table[name].astype("string") for name in TEXT_FIELDS},
        "journal": table["journal"].astype("string"),
        "year": pd.to_numeric(table["publication_year"], errors="coerce").astype("Int64"),
        "source": "pubget",
    })[ARTICLE_COLUMNS]
    table_label = coords["table_label"] if "table_label" in coords else pd.Series(
        pd.NA, index=coords.index, dtype="string")
    peaks = pd.DataFrame({
        "article_id": _article_ids(coords["pmcid"]),
        # a table without an id (allowed by JATS) is named by its label
        "table_id": coords["table_id"].fillna(table_label).fillna("").astype(str),
        **{axis: pd.to_numeric(coords[axis], errors="coerce") for axis in "xyz"},
        "space": coords["pmcid"].map(space).fillna(UNKNOWN_SPACE).astype(str),
    })
    return articles, peaks
