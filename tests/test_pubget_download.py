"""pubget's download -> extraction -> corpus path over HTTP, against a loopback E-utilities.

The server (tests/eutils_server.py) serves seven real-shaped PMC articles with coordinate
tables; batches of 3 make three efetch requests. Cases: a clean download, ``n_docs`` below
the match count, and a failed batch (HTTP 500) that stops the corpus rule of a real Snakemake
run with a message saying that a rerun resumes, then a rerun that completes with no article
lost or duplicated. The NCBI API key must reach the server on every request and never any
file of the run.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from nimare.utils import tal2mni

from mnm import corpus, pubget_source

from eutils_server import EutilsServer, EutilsState, point_pubget_at
from pmc_fixture import ARTICLES, MORE_ARTICLES
from workflow_utils import make_project, snakemake

SECRET = "loopback-key-3f9a0c2e7b"
QUERY = "working memory[Abstract] AND fMRI"
ALL_ARTICLES = ARTICLES + MORE_ARTICLES
BATCH = 3
TESTS_DIR = Path(__file__).resolve().parent


def _expected_peaks(articles) -> pd.DataFrame:
    """Peaks the corpus must hold: the fixture's, TAL converted with NiMARE, in MNI mm."""
    rows = []
    for article in articles:
        xyz = np.array(article["peaks"] or np.empty((0, 3)), dtype=float)
        if article["pmcid"] == 1002:  # the AFNI/Talairach article
            xyz = tal2mni(xyz)
        rows += [(f"PMC{article['pmcid']}", *p) for p in xyz]
    return pd.DataFrame(rows, columns=["article_id", "x", "y", "z"])


def _assert_corpus(articles, peaks, downloaded):
    expected = _expected_peaks(downloaded)
    assert articles["article_id"].is_unique
    assert sorted(articles["article_id"]) == sorted(set(expected["article_id"]))
    got = peaks.sort_values(["article_id", "x", "y", "z"]).reset_index(drop=True)
    want = expected.sort_values(["article_id", "x", "y", "z"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got[["article_id", "x", "y", "z"]], want, atol=1e-9,
                                  check_dtype=False)


def _files_containing(folder: Path, secret: str) -> list[Path]:
    return [p for p in folder.rglob("*")
            if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.fixture
def eutils(monkeypatch):
    state = EutilsState(articles=ALL_ARTICLES, api_key=SECRET)
    with EutilsServer(state, lifetime_s=120) as server:
        point_pubget_at(server.base_url, monkeypatch)
        monkeypatch.setenv("NCBI_API_KEY", SECRET)
        yield server


def _build(tmp_path, allow_incomplete=False, **pubget_config):
    config = {"source": "pubget", "allow_incomplete": allow_incomplete,
              "pubget": {"query": QUERY, "n_docs": None, "n_jobs": 1, "batch_size": BATCH,
                         **pubget_config}}
    out = [tmp_path / "results" / f"{name}.parquet" for name in ("articles", "peaks", "qc")]
    return corpus.build_corpus(config, *out, resources_dir=tmp_path / "resources")


def test_clean_download_over_http(eutils, tmp_path):
    articles, peaks, qc = _build(tmp_path)
    _assert_corpus(articles, peaks, ALL_ARTICLES)
    state = eutils.state
    assert state.count("esearch.fcgi") == 1 and state.count("efetch.fcgi") == 3
    assert all(form.get("api_key") == SECRET for _, form in state.requests)
    assert sorted(int(f["retstart"]) for e, f in state.requests if e == "efetch.fcgi") == [0, 3, 6]
    matches = qc[(qc.level == "query") & (qc.reason == "matching articles")]
    assert matches["count"].tolist() == [len(ALL_ARTICLES)]
    assert _files_containing(tmp_path, SECRET) == []


def test_n_docs_below_the_match_count_succeeds_with_the_count_in_qc(eutils, tmp_path):
    articles, peaks, qc = _build(tmp_path, n_docs=BATCH)
    _assert_corpus(articles, peaks, ALL_ARTICLES[:BATCH])  # 1003 has no peaks: dropped
    rows = qc[qc.level == "query"].set_index("reason")
    assert rows.loc["matching articles", "count"] == len(ALL_ARTICLES)
    skipped = rows.loc["not downloaded: corpus.pubget.n_docs below the match count"]
    assert skipped["count"] == len(ALL_ARTICLES) - BATCH
    assert f"n_docs={BATCH}" in skipped["detail"]
    assert eutils.state.count("efetch.fcgi") == 1


def test_failed_batch_accepted_only_with_allow_incomplete(eutils, tmp_path):
    eutils.state.fail_batches = {1}
    articles, peaks, qc = _build(tmp_path, allow_incomplete=True)
    _assert_corpus(articles, peaks, ALL_ARTICLES[:BATCH] + ALL_ARTICLES[2 * BATCH:])
    rows = qc.set_index("reason")["count"]
    assert rows["not downloaded: failed batches (corpus.allow_incomplete)"] == 1
    assert rows["kept: incomplete pubget output (corpus.allow_incomplete)"] == 1


def test_failed_batch_stops_the_rule_and_a_rerun_resumes(tmp_path, monkeypatch):
    state = EutilsState(articles=ALL_ARTICLES, api_key=SECRET, fail_batches={1})
    pubget_config = {"query": QUERY, "batch_size": BATCH}
    project = make_project(tmp_path, {"corpus": {"source": "pubget", "pubget": pubget_config}})
    with EutilsServer(state, lifetime_s=120) as server:
        # The corpus rule in a real Snakemake run. Its job is a subprocess of Snakemake:
        # loopback_site/sitecustomize.py points that process's pubget at this server.
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
            [str(TESTS_DIR / "loopback_site"), os.environ.get("PYTHONPATH", "")]))
        monkeypatch.setenv("MNM_TEST_EUTILS_URL", server.base_url)
        monkeypatch.setenv("MNM_TEST_EUTILS_TESTS_DIR", str(TESTS_DIR))
        monkeypatch.setenv("NCBI_API_KEY", SECRET)
        failed = snakemake(project, "--cores", "1", "results/corpus/qc.parquet", check=False)
        assert failed.returncode != 0
        assert "could not download 1 batch(es)" in failed.stdout
        assert "run the workflow again and the download resumes" in failed.stdout
        assert "the download resumes" in (project / "results/logs/corpus.log").read_text()
        assert not (project / "results/corpus/articles.parquet").exists()
        fetched = [int(f["retstart"]) for e, f in state.requests if e == "efetch.fcgi"]
        assert fetched == [0, 3, 3, 3, 3, 3, 6]  # pubget tried the failing batch 5 times

        # The rerun (in this process, to save a second Snakemake start-up: the rule's
        # script only calls build_corpus) resumes with the missing batch only.
        state.fail_batches.clear()
        state.requests.clear()
        point_pubget_at(server.base_url, monkeypatch)
        articles, peaks, _ = corpus.build_corpus(
            {"source": "pubget", "pubget": {**pubget_config, "n_jobs": 1}},
            *[project / f"results/corpus/{name}.parquet" for name in ("articles", "peaks", "qc")],
            resources_dir=project / "resources")
        assert [(e, int(f["retstart"])) for e, f in state.requests] == [("efetch.fcgi", 3)]
        assert state.requests[0][1].get("api_key") == SECRET

    _assert_corpus(articles, peaks, ALL_ARTICLES)
    # the key reached the server but no file of the run: results/, resources/ (pubget's
    # dumps of the failed requests, whose responses echo it, as NCBI's do), logs, .snakemake/
    assert list((project / "resources/pubget").glob("*/articlesets/failed_requests_dumps/*"))
    assert _files_containing(project, SECRET) == []


def test_log_records_carrying_the_key_are_redacted(tmp_path):
    handler = logging.FileHandler(tmp_path / "run.log")
    logging.getLogger().addHandler(handler)
    try:
        with pubget_source.redacted_logs(SECRET):
            logging.getLogger("pubget").warning("GET %s?api_key=%s", "efetch.fcgi", SECRET)
        logging.getLogger("pubget").warning("after: %s", SECRET)  # the filter is gone again
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    lines = (tmp_path / "run.log").read_text().splitlines()
    assert lines == ["GET efetch.fcgi?api_key=<NCBI_API_KEY>", f"after: {SECRET}"]
