"""pubget output that fails loudly: real pubget extraction of the PMC fixture, damaged copies.

Each case damages one file of a fresh copy of pubget's own output and checks the error (file
and line, computed independently from the bytes written) or the QC row and the kept data.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from nimare.utils import tal2mni

from mnm import corpus, pubget_source
from mnm.corpus import CorpusError, QCLog

from pmc_fixture import MNI_PEAKS, NO_ID_TABLE_PEAKS, TAL_PEAKS, write_pmc_download


@pytest.fixture(scope="module")
def pubget_output(tmp_path_factory):
    """pubget's extracted-data folder for the fixture articles (extracted once)."""
    data_dir = tmp_path_factory.mktemp("pubget_source")
    write_pmc_download(data_dir)
    extracted, _ = pubget_source.run_pubget(None, data_dir, QCLog(), download_articles=False)
    return extracted


@pytest.fixture
def output(pubget_output, tmp_path):
    """A private copy of pubget's output folder, as ``<data>/query_x/subset_..._extractedData``."""
    target = tmp_path / "data" / "query_x" / pubget_output.name
    shutil.copytree(pubget_output, target)
    return target


def _build(folder, **config):
    paths = [folder.parents[2] / f"{name}.parquet" for name in ("articles", "peaks", "qc")]
    return corpus.build_corpus({"source": "pubget_dir", "pubget_dir": str(folder), **config},
                               *paths)


def _qc(qc_table, reason_start):
    rows = qc_table[qc_table.reason.str.startswith(reason_start)]
    return rows["count"].sum(), " ".join(rows["detail"])


def _accounting_holds(qc_table, level):
    rows = qc_table[qc_table.level == level]
    dropped = rows[rows.reason.str.startswith("dropped")]["count"].sum()
    kept = rows[rows.reason == "kept"]["count"].sum()
    return rows[rows.reason == "input"]["count"].sum() == kept + dropped


def _lines_before(data: bytes, position: int) -> int:
    """1-based number of the line holding byte ``position`` (the independent reference)."""
    return data.count(b"\n", 0, position) + 1


# ------------------------------------------------------------------------- clean output
def test_clean_output_both_id_forms_and_table_without_id(output):
    articles, peaks, qc = _build(output)
    assert articles["article_id"].tolist() == ["PMC1001", "PMC1002", "PMC1004"]
    # PMC1004 uses pub-id-type="pmcid" ("PMC1004"), its table has no id and Unicode minus
    assert articles.set_index("article_id").loc["PMC1004", "pmid"] == 9004
    no_id = peaks[peaks.article_id == "PMC1004"]
    assert no_id["table_id"].tolist() == ["Table 1", "Table 1"]  # named by its label
    np.testing.assert_allclose(no_id[["x", "y", "z"]], NO_ID_TABLE_PEAKS)
    np.testing.assert_allclose(peaks[peaks.article_id == "PMC1001"][["x", "y", "z"]],
                               MNI_PEAKS)
    np.testing.assert_allclose(peaks[peaks.article_id == "PMC1002"][["x", "y", "z"]],
                               tal2mni(np.array(TAL_PEAKS)), atol=1e-9)
    assert not qc.level.eq("file").any()
    assert _accounting_holds(qc, "article") and _accounting_holds(qc, "peak")


def test_pmc_prefixed_ids_give_the_same_corpus(output, tmp_path):
    expected = _build(output)[:2]
    for name in ("text.csv", "metadata.csv", "coordinates.csv", "coordinate_space.csv"):
        path = output / name
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        table["pmcid"] = "PMC" + table["pmcid"]
        table.to_csv(path, index=False)
    actual = _build(output)[:2]
    for got, want in zip(actual, expected):
        pd.testing.assert_frame_equal(got, want)


# ------------------------------------------------------------------ unreadable CSV files
def test_text_cut_inside_a_quoted_field(output):
    path = output / "text.csv"
    data = path.read_bytes()
    cut = data.index(b"Parietal responses")  # inside the third record's quoted fields
    cut = data.index(b"\n", data.index(b"We contrasted", cut)) + 1  # after an inner newline
    path.write_bytes(data[:cut])  # ends with a newline, but inside an open quote
    with pytest.raises(CorpusError, match=rf"text\.csv: line \d+: not valid CSV") as error:
        _build(output)
    line = int(str(error.value).split("line ")[1].split(":")[0])
    # the line reported is where the unterminated quoted field reaches the end of the data
    assert line == _lines_before(data, cut - 1)


def _expect_error_at(output, name, damaged, original, position, message):
    """Write ``damaged`` as ``name``: the error names the file, ``message`` and the line of
    byte ``position`` of the ``original`` content."""
    (output / name).write_bytes(damaged)
    with pytest.raises(CorpusError, match=message) as error:
        _build(output)
    assert f"{name}: line {_lines_before(original, position)}:" in str(error.value)


def test_text_cut_mid_line(output):
    data = (output / "text.csv").read_bytes()
    cut = data.index(b"intraparietal") + 5
    _expect_error_at(output, "text.csv", data[:cut], data, cut, "does not end with a newline")


def test_text_with_one_non_utf8_byte(output):
    data = (output / "text.csv").read_bytes()
    at = data.index(b"flanker task")
    damaged = data[:at] + b"\xff" + data[at + 1:]
    _expect_error_at(output, "text.csv", damaged, data, at, "not UTF-8")


def test_coordinates_cut_inside_the_last_number(output):
    data = (output / "coordinates.csv").read_bytes()
    assert data.endswith(b",-54,42\r\n")  # 1002's last peak: z = 42
    cut = len(data) - 3  # "...,4": pandas alone reads z = 4, a valid number
    (output / "coordinates.csv").write_bytes(data[:cut])
    assert pd.read_csv(output / "coordinates.csv")["z"].iloc[-1] == 4
    _expect_error_at(output, "coordinates.csv", data[:cut], data, cut,
                     "does not end with a newline")


def test_coordinates_row_with_an_extra_field(output):
    path = output / "coordinates.csv"
    lines = path.read_bytes().split(b"\r\n")
    lines[3] += b",99"
    path.write_bytes(b"\r\n".join(lines))
    with pytest.raises(CorpusError,
                       match=r"coordinates\.csv: line 4: not valid CSV \(7 fields where the "
                             r"header has 6\)"):
        _build(output)


@pytest.mark.parametrize("name", ["metadata.csv", "coordinate_space.csv"])
def test_empty_file(output, name):
    (output / name).write_bytes(b"")
    with pytest.raises(CorpusError, match=rf"{name}: empty file"):
        _build(output)


def test_missing_column_names_file(output):
    path = output / "coordinates.csv"
    path.write_text(path.read_text().replace("table_id", "tableid"))
    with pytest.raises(CorpusError, match=r"coordinates\.csv: missing column\(s\) \['table_id'\]"):
        _build(output)


# ----------------------------------------------------------------------- completeness
def _set_complete(folder, value):
    info = json.loads((folder / "info.json").read_text())
    (folder / "info.json").write_text(json.dumps({**info, "is_complete": value}))


def test_incomplete_output_is_refused_unless_allowed(output):
    _set_complete(output, False)
    with pytest.raises(CorpusError, match=r"is_complete: false.*corpus\.allow_incomplete"):
        _build(output)
    articles, _, qc = _build(output, allow_incomplete=True)
    assert len(articles) == 3
    assert _qc(qc, "kept: incomplete pubget output")[0] == 1


def test_missing_info_json_means_interrupted_extraction(output):
    (output / "info.json").unlink()
    with pytest.raises(CorpusError, match="no info.json"):
        _build(output)


# ------------------------------------------------------------- duplicates and bad ids
def _append_rows(path, *rows):
    with open(path, "a", newline="", encoding="utf-8") as stream:
        for row in rows:
            stream.write(row + "\r\n")


def _prepend_rows(path, *rows):
    header, rest = path.read_bytes().split(b"\r\n", 1)
    path.write_bytes(b"\r\n".join([header, *(r.encode() for r in rows), rest]))


def test_duplicate_pmcid_keeps_the_richest_row(output):
    # an empty copy of 1001 before the real one: "keep first" would keep the empty one
    _prepend_rows(output / "text.csv", "1001,,,,")
    articles, _, qc = _build(output)
    assert articles["article_id"].is_unique
    kept = articles.set_index("article_id").loc["PMC1001"]
    assert "n-back task" in kept["abstract"] and "SPM12" in kept["body"]
    assert _qc(qc, "dropped: duplicate article")[0] == 1
    assert _accounting_holds(qc, "article")


def test_conflicting_metadata_duplicate_is_reported(output):
    _append_rows(output / "metadata.csv",
                 "1001,9999,,Prefrontal cortex supports working memory updating,,,",
                 "1002,9002,10.1000/fixture.1002,Parietal responses to conflict in the flanker"
                 " task,,2020,")
    articles, _, qc = _build(output)
    count, detail = _qc(qc, "conflicting duplicate rows")
    assert count == 1 and "metadata.csv" in detail and "1001" in detail
    assert _qc(qc, "ignored: duplicate rows")[0] == 2  # one extra row of 1001 and of 1002
    kept = articles.set_index("article_id")
    assert kept.loc["PMC1001", "pmid"] == 9001  # the richer row (doi and year filled)
    assert kept.loc["PMC1001", "doi"] == "10.1000/fixture.1001"


def test_conflicting_coordinate_space_duplicate(output):
    _append_rows(output / "coordinate_space.csv", "1001,TAL", "1004,UNKNOWN")
    _, peaks, qc = _build(output, unknown_space="drop")
    count, detail = _qc(qc, "conflicting coordinate_space")
    assert count == 2 and "PMC1001: MNI/TAL" in detail
    # 1001: MNI or TAL cannot be told -> UNKNOWN (dropped here); 1004: MNI over UNKNOWN
    assert "PMC1001" not in set(peaks.article_id)
    np.testing.assert_allclose(peaks[peaks.article_id == "PMC1004"][["x", "y", "z"]],
                               NO_ID_TABLE_PEAKS)
    assert _qc(qc, "dropped: unknown space")[0] == len(MNI_PEAKS)


def test_rows_without_a_readable_pmcid_go_to_qc(output):
    _append_rows(output / "text.csv", ",Orphan title,,An abstract.,A body.")
    _append_rows(output / "coordinates.csv", "abc,tbl1,Table 1,10,10,10")
    _append_rows(output / "metadata.csv", "nan,1,,,,,")
    articles, peaks, qc = _build(output)
    assert articles["article_id"].tolist() == ["PMC1001", "PMC1002", "PMC1004"]
    table = qc.set_index(["level", "reason"])["count"]
    assert table[("article", "dropped: no readable pmcid")] == 1
    assert table[("peak", "dropped: no readable pmcid")] == 1
    _, detail = _qc(qc, "reported: rows without a readable pmcid")
    assert "text.csv: data rows 5" in detail and "coordinates.csv: data rows 8" in detail
    assert _qc(qc, "ignored: rows without a readable pmcid")[0] == 1  # metadata.csv
    assert _accounting_holds(qc, "article") and _accounting_holds(qc, "peak")


def test_parse_ids_against_hand_values():
    values = pd.Series(["PMC123", " 45 ", "pmc7", "12.0", "1.5", "abc", None, "", "-3"])
    expected = [123, 45, 7, 12, None, None, None, None, None]
    assert pubget_source.parse_ids(values).tolist() == [
        pd.NA if v is None else v for v in expected]


# ------------------------------------------------------------- folders and empty corpus
def test_several_query_folders_are_listed(output):
    second = output.parents[1] / "query_y" / output.name
    shutil.copytree(output, second)
    with pytest.raises(CorpusError, match="corpus.pubget_dir") as error:
        _build(output.parents[1])  # the data folder holding query_x and query_y
    assert "query_x" in str(error.value) and "query_y" in str(error.value)
    articles, _, _ = _build(second.parent)  # naming the query folder picks it
    assert len(articles) == 3


def test_coordinates_with_only_a_header_is_an_error_at_the_corpus_stage(output):
    path = output / "coordinates.csv"
    path.write_bytes(path.read_bytes().split(b"\r\n")[0] + b"\r\n")
    with pytest.raises(CorpusError, match="no article left for the corpus") as error:
        _build(output)
    assert "no peaks: 4" in str(error.value)
    assert not (output.parents[2] / "articles.parquet").exists()


def test_missing_folder():
    with pytest.raises(CorpusError, match="not found"):
        pubget_source.find_extracted_dir(Path("/nonexistent/pubget"))
