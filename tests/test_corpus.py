"""Corpus stage: pubget extraction on a PMC XML fixture, cleaning rules, QC (NiMARE's
studysets: tests/test_nimare_io.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from nimare.utils import tal2mni

from mnm import corpus
from mnm.corpus import QCLog, clean_corpus, load_nimare_studyset
from mnm.pubget_source import load_pubget_extracted, run_pubget

from pmc_fixture import MNI_PEAKS, NO_ID_TABLE_PEAKS, TAL_PEAKS, write_pmc_download


def _accounting_holds(qc: QCLog, level: str, kept: int) -> bool:
    table = qc.to_frame()
    n_input = table.loc[(table.level == level) & (table.reason == "input"), "count"].sum()
    return n_input == kept + qc.dropped(level)


@pytest.fixture(scope="module")
def pubget_tables(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("pubget")
    write_pmc_download(data_dir)
    qc = QCLog()
    extracted, _ = run_pubget(None, data_dir, qc, download_articles=False)
    raw_articles, raw_peaks = load_pubget_extracted(extracted, qc)
    articles, peaks = clean_corpus(raw_articles, raw_peaks, qc)
    return data_dir, qc, articles, peaks


def test_pubget_fixture_articles_row_by_row(pubget_tables):
    data_dir, qc, articles, _ = pubget_tables
    assert articles["article_id"].tolist() == ["PMC1001", "PMC1002", "PMC1004"]
    assert articles["pmcid"].tolist() == [1001, 1002, 1004]
    assert articles["pmid"].tolist() == [9001, 9002, 9004]
    assert articles["doi"].tolist() == ["10.1000/fixture.1001", "10.1000/fixture.1002",
                                        "10.1000/fixture.1004"]
    assert articles["year"].tolist() == [2019, 2020, 2024]
    assert articles.loc[0, "title"] == "Prefrontal cortex supports working memory updating"
    assert "n-back task" in articles.loc[0, "abstract"]
    assert "SPM12" in articles.loc[0, "body"]
    assert (articles["source"] == "pubget").all()
    assert list(articles.columns) == corpus.ARTICLE_COLUMNS


def test_pubget_fixture_peaks_with_tal_converted(pubget_tables):
    _, _, _, peaks = pubget_tables
    mni = peaks[peaks.article_id == "PMC1001"][["x", "y", "z"]].to_numpy()
    np.testing.assert_allclose(mni, np.array(MNI_PEAKS))
    tal = peaks[peaks.article_id == "PMC1002"][["x", "y", "z"]].to_numpy()
    np.testing.assert_allclose(tal, tal2mni(np.array(TAL_PEAKS)), rtol=0, atol=1e-9)
    assert not np.allclose(tal, np.array(TAL_PEAKS))  # the transform did something
    no_id = peaks[peaks.article_id == "PMC1004"]
    np.testing.assert_allclose(no_id[["x", "y", "z"]].to_numpy(), np.array(NO_ID_TABLE_PEAKS))
    assert set(peaks["table_id"]) == {"tbl1", "Table 1"}  # a table without id: its label
    assert list(peaks.columns) == corpus.PEAK_COLUMNS


def test_pubget_fixture_qc(pubget_tables):
    data_dir, qc, _, peaks = pubget_tables
    table = qc.to_frame()
    corrupt = table[table.reason == "dropped: corrupt articleset"]
    assert corrupt["count"].tolist() == [1]
    assert "articleset_00001.xml" in corrupt["detail"].iloc[0]
    # set aside, not deleted
    assert (data_dir / "query_fixture" / "corrupt_articlesets" / "articleset_00001.xml").is_file()
    no_peaks = table[(table.level == "article") & (table.reason == "dropped: no peaks")]
    assert no_peaks["count"].tolist() == [1]  # PMC1003 has no coordinate table
    tal = table[table.reason == "converted: TAL to MNI (Lancaster)"]
    assert tal["count"].tolist() == [2]
    assert _accounting_holds(qc, "article", 3)
    assert _accounting_holds(qc, "peak", len(peaks))


def test_pubget_dir_source(tmp_path):
    write_pmc_download(tmp_path / "pubget")
    run_pubget(None, tmp_path / "pubget", QCLog(), download_articles=False)
    out = [tmp_path / f"{k}.parquet" for k in ("a", "p", "q")]
    articles, peaks, _ = corpus.build_corpus(
        {"source": "pubget_dir", "pubget_dir": str(tmp_path / "pubget")}, *out)
    assert articles["article_id"].tolist() == ["PMC1001", "PMC1002", "PMC1004"]
    assert len(peaks) == 7


def _toy_tables():
    articles = pd.DataFrame({
        "article_id": ["a", "b", "c", "d", "e"],
        "pmcid": pd.array([1, 1, 2, 3, pd.NA], dtype="Int64"),
        "pmid": pd.array([pd.NA] * 5, dtype="Int64"),
        "doi": None, "title": ["t"] * 5,
        "abstract": ["x", "x", "x", "  ", "x"], "body": None, "keywords": None,
        "journal": None, "year": pd.array([pd.NA] * 5, dtype="Int64"), "source": "toy",
    })
    peaks = pd.DataFrame({
        "article_id": ["a", "b", "c", "c", "c", "d", "e", "zz"],
        "table_id": ["1"] * 8,
        "x": [0.0, 0.0, np.nan, 10.0, 150.0, 0.0, 20.0, 0.0],
        "y": [0.0] * 8, "z": [10.0] * 8,
        "space": ["MNI", "MNI", "MNI", "UNKNOWN", "MNI", "MNI", "OTHER", "MNI"],
    })
    return articles, peaks


def test_clean_corpus_rules_and_accounting():
    articles, peaks = _toy_tables()
    qc = QCLog()
    kept_articles, kept_peaks = clean_corpus(articles, peaks, qc, unknown_space="drop")
    table = qc.to_frame().set_index(["level", "reason"])["count"]
    assert table[("article", "dropped: duplicate article")] == 1  # b duplicates a's pmcid
    assert table[("peak", "dropped: no matching article")] == 1  # zz
    assert table[("peak", "dropped: non-finite coordinate")] == 1
    assert table[("peak", "dropped: outside the brain")] == 1  # x=150
    assert table[("peak", "dropped: unknown space")] == 2
    assert table[("article", "dropped: no abstract")] == 1  # d
    assert table[("article", "dropped: no peaks")] == 2  # c (all 3 peaks dropped), e (OTHER)
    assert kept_articles["article_id"].tolist() == ["a"]
    assert _accounting_holds(qc, "article", len(kept_articles))
    assert _accounting_holds(qc, "peak", len(kept_peaks))


def test_clean_corpus_keeps_the_richest_duplicate():
    articles, peaks = _toy_tables()
    articles.loc[articles.article_id == "b", "body"] = "b has a body, a has none"
    qc = QCLog()
    kept_articles, kept_peaks = clean_corpus(articles, peaks, qc, unknown_space="drop")
    assert kept_articles["article_id"].tolist() == ["b"]  # a (first, poorer) is dropped
    assert kept_peaks["article_id"].tolist() == ["b"]
    table = qc.to_frame().set_index(["level", "reason"])["count"]
    assert table[("peak", "dropped: article duplicate article")] == 1  # a's peak
    assert _accounting_holds(qc, "article", 1) and _accounting_holds(qc, "peak", 1)


def test_clean_corpus_unknown_space_kept_as_mni():
    articles, peaks = _toy_tables()
    qc = QCLog()
    kept_articles, kept_peaks = clean_corpus(articles, peaks, qc, unknown_space="mni")
    assert set(kept_articles["article_id"]) == {"a", "c", "e"}
    assert qc.to_frame().set_index("reason")["count"]["kept: unknown space treated as MNI"] == 2
    assert _accounting_holds(qc, "peak", len(kept_peaks))


def test_clean_corpus_bad_option_names_key():
    articles, peaks = _toy_tables()
    with pytest.raises(ValueError, match="corpus.unknown_space"):
        clean_corpus(articles, peaks, QCLog(), unknown_space="tal")


def test_missing_studyset_table_names_file(tmp_path):
    with pytest.raises(corpus.CorpusError, match="studies.parquet"):
        load_nimare_studyset(tmp_path)
