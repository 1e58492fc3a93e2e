"""NiMARE in and out: studysets read through NiMARE's classes, corpora exported for NiMARE.

References are NiMARE's own readers and transforms (``Studyset``, ``Dataset``, ``tal2mni``,
a studyset harmonised to MNI by NiMARE) and hand-written documents.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from nimare.nimads import Studyset
from nimare.utils import tal2mni

from mnm import corpus, nimare_io
from mnm.cli import EXIT_NO_RUN, main
from mnm.corpus import CorpusError, QCLog, build_corpus, clean_corpus, load_nimare_studyset

PEAK_KEY = ["article_id", "table_id", "x", "y", "z"]


@pytest.fixture(scope="module")
def bundled_raw():
    return load_nimare_studyset()


@pytest.fixture(scope="module")
def bundled_clean(bundled_raw):
    qc = QCLog()
    articles, peaks = clean_corpus(*bundled_raw, qc)
    return articles, peaks, qc


def _sorted_peaks(peaks: pd.DataFrame) -> pd.DataFrame:
    return (peaks[PEAK_KEY].astype({"article_id": str, "table_id": str})
            .sort_values(PEAK_KEY).reset_index(drop=True))


def _as_objects(frame: pd.DataFrame) -> list[dict]:
    """Rows as plain Python values (missing -> None), for exact comparison."""
    return [{k: (None if pd.isna(v) else v) for k, v in row.items()}
            for row in frame.astype(object).to_dict("records")]


# --------------------------------------------------------------------------------------
# in
# --------------------------------------------------------------------------------------
def test_bundled_studyset_through_nimare_keeps_counts_and_nimare_transform(bundled_raw, bundled_clean):
    raw_articles, raw_peaks = bundled_raw
    assert len(raw_articles) == 320 and len(raw_peaks) == 9492
    assert raw_peaks["space"].value_counts().to_dict() == {
        "MNI": 7819, "TAL": 1159, "OTHER": 347, "UNKNOWN": 167}
    assert raw_articles["title"].notna().all() and raw_articles["abstract"].notna().all()
    articles, peaks, qc = bundled_clean
    assert len(articles) == 320 and len(peaks) == 9492 - 66  # 66 outside the brain
    counts = qc.to_frame().set_index(["level", "reason"])["count"]
    for level, kept in (("article", len(articles)), ("peak", len(peaks))):
        assert counts[(level, "input")] == kept + qc.dropped(level)  # kept + dropped = input
    assert counts[("peak", "converted: TAL to MNI (Lancaster)")] == 1159  # converted, not dropped
    # every kept peak lies within the configured distance of the brain
    assert (corpus.distance_to_brain_mm(peaks[["x", "y", "z"]].to_numpy()) <= 10).all()
    # Every kept MNI/TAL peak sits where NiMARE's own harmonisation to MNI puts it.
    harmonised = Studyset(str(corpus.bundled_studyset_dir()), target="mni152_2mm").coordinates
    known = raw_peaks["space"].isin(["MNI", "TAL"]).to_numpy()
    expected = pd.DataFrame({
        "article_id": harmonised["study_id"].astype(str), "table_id": harmonised["contrast_id"],
        "x": harmonised["x"], "y": harmonised["y"], "z": harmonised["z"]})[known]
    kept_known = peaks.merge(raw_peaks.loc[known, ["article_id", "table_id"]].drop_duplicates(),
                             on=["article_id", "table_id"])
    merged = kept_known.merge(expected, on=["article_id", "table_id"], suffixes=("", "_nimare"))
    close = np.all(np.abs(merged[["x", "y", "z"]].to_numpy()
                          - merged[["x_nimare", "y_nimare", "z_nimare"]].to_numpy()) < 1e-9, axis=1)
    matched = merged.loc[close].drop_duplicates(PEAK_KEY)
    assert len(matched) == len(kept_known.drop_duplicates(PEAK_KEY)) > 8000


NIMADS_DOC = {
    "id": "hand", "name": "hand-made",
    "studies": [
        {"id": "s1", "name": "Working memory", "description": "An n-back study.", "pmid": "111",
         "doi": "10.1/s1", "year": 2019, "publication": "NeuroImage",
         "metadata": {"pmcid": "PMC222", "keywords": ["n-back", "fMRI"]},
         "analyses": [
             {"id": "a1", "name": "2-back > 0-back", "points": [
                 {"coordinates": [-40.0, 20.0, 30.0], "space": "MNI"},
                 {"coordinates": [44.0, 18.0, 28.0], "space": "mni152_2mm"}]},
             {"id": "a2", "name": "TAL table", "points": [
                 {"coordinates": [-30.0, -60.0, 40.0], "space": "TAL"}]}]},
        {"id": "s2", "name": "Flanker", "description": "Conflict.", "analyses": [
            {"id": "b1", "points": [
                {"coordinates": [2.0, 20.0, 40.0], "space": "UNKNOWN"},
                {"coordinates": [0.0, 0.0, 200.0], "space": "MNI"}]}]},
        {"id": "s3", "name": "No peaks", "description": "Review.", "analyses": []},
    ],
}

DATASET_DOC = {
    "d1": {"contrasts": {"c1": {
        "coords": {"space": "TAL", "x": [-30.0, 10.0], "y": [-60.0, 12.0], "z": [40.0, 50.0]},
        "text": {"title": "Stroop", "abstract": "Interference.", "body": "Methods..."},
        "metadata": {"pmid": 333, "doi": "10.1/d1", "year": 2001, "journal": "Brain"}}}},
    "d2": {"contrasts": {
        "c1": {"coords": {"space": "MNI", "x": [0.0], "y": [20.0], "z": [40.0]},
               "text": {"title": "Go/no-go", "abstract": "Inhibition."}},
        "c-2": {"coords": {"space": "MNI", "x": [30.0], "y": [22.0], "z": [4.0]},
                "text": {"title": "Go/no-go", "abstract": "Inhibition."}}}},
}


def _build(tmp_path, studyset_path):
    out = [tmp_path / f"{k}.parquet" for k in ("articles", "peaks", "qc")]
    return build_corpus({"source": "nimare_bundled", "nimare_studyset": str(studyset_path)}, *out)


def test_user_nimads_json_through_the_corpus_stage(tmp_path):
    path = tmp_path / "studyset.json"
    path.write_text(json.dumps(NIMADS_DOC))
    articles, peaks, qc = _build(tmp_path, path)
    assert articles["article_id"].tolist() == ["s1", "s2"]  # s3 has no peaks
    first = _as_objects(articles)[0]
    assert first == {"article_id": "s1", "pmcid": 222, "pmid": 111, "doi": "10.1/s1",
                     "title": "Working memory", "abstract": "An n-back study.", "body": None,
                     "keywords": '["n-back", "fMRI"]', "journal": "NeuroImage", "year": 2019,
                     "source": "nimare_bundled"}
    by_table = {t: g[["x", "y", "z"]].to_numpy() for t, g in peaks.groupby("table_id")}
    np.testing.assert_array_equal(by_table["a1"], [[-40, 20, 30], [44, 18, 28]])
    np.testing.assert_allclose(by_table["a2"], tal2mni(np.array([[-30.0, -60.0, 40.0]])), atol=1e-12)
    np.testing.assert_array_equal(by_table["b1"], [[2, 20, 40]])  # z=200 is outside the brain
    counts = qc.set_index(["level", "reason"])["count"]
    assert counts[("peak", "input")] == 5 and counts[("peak", "kept")] == 4
    assert counts[("peak", "converted: TAL to MNI (Lancaster)")] == 1
    assert counts[("peak", "kept: unknown space treated as MNI")] == 1
    assert counts[("peak", "dropped: outside the brain")] == 1
    assert counts[("article", "dropped: no peaks")] == 1


def test_user_dataset_json_through_the_corpus_stage(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps(DATASET_DOC))
    articles, peaks, _ = _build(tmp_path, path)
    rows = {r["article_id"]: r for r in _as_objects(articles)}
    assert rows["d1"] == {"article_id": "d1", "pmcid": None, "pmid": 333, "doi": "10.1/d1",
                          "title": "Stroop", "abstract": "Interference.", "body": "Methods...",
                          "keywords": None, "journal": "Brain", "year": 2001,
                          "source": "nimare_bundled"}
    assert rows["d2"]["title"] == "Go/no-go"
    d1 = peaks[peaks.article_id == "d1"][["x", "y", "z"]].to_numpy()
    np.testing.assert_allclose(d1, tal2mni(np.array([[-30.0, -60, 40], [10, 12, 50]])), atol=1e-12)
    assert sorted(peaks.loc[peaks.article_id == "d2", "table_id"]) == ["c-2", "c1"]


@pytest.mark.parametrize("content, message", [
    ("{not json", "not a JSON file"),
    ('{"a": 1}', "neither a NIMADS studyset"),
    (None, "studyset not found"),
    ("folder", "not a NiMARE parquet studyset"),
])
def test_unreadable_studyset_names_the_path(tmp_path, content, message):
    path = tmp_path / "input.json"
    if content == "folder":
        path.mkdir()
        (path / "studies.parquet").write_bytes(b"")
    elif content is not None:
        path.write_text(content)
    with pytest.raises(CorpusError, match=message) as caught:
        load_nimare_studyset(path)
    assert str(path) in str(caught.value)


# --------------------------------------------------------------------------------------
# out
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exported(bundled_clean, tmp_path_factory):
    """25 cleaned bundled articles (TAL converted) with hand-set metadata, exported."""
    articles, peaks, _ = bundled_clean
    articles = articles.head(25).copy()
    articles.loc[0, ["body", "doi", "year"]] = ["Body text with ünïcode.", "10.1/x", 2011]
    articles.loc[1, "source"] = "pubget"
    peaks = peaks[peaks.article_id.isin(articles.article_id)].reset_index(drop=True)
    paths = nimare_io.export_nimare(articles, peaks, tmp_path_factory.mktemp("export"))
    return articles, peaks, paths


def test_export_round_trip_nimads_with_nimare(exported):
    articles, peaks, paths = exported
    studyset = Studyset(paths["nimads"])
    coords = studyset.coordinates
    reloaded = pd.DataFrame({"article_id": coords["study_id"], "table_id": coords["contrast_id"],
                             "x": coords["x"], "y": coords["y"], "z": coords["z"]})
    assert len(reloaded) == len(peaks) > 500
    pd.testing.assert_frame_equal(_sorted_peaks(reloaded), _sorted_peaks(peaks))  # exact floats
    assert set(coords["space"]) == {"mni152_2mm"}  # NiMARE read every point as MNI
    studies = {s.id: s for s in studyset.studies}
    for row in _as_objects(articles):
        study = studies[row["article_id"]]
        assert (study.name, study.description, study.doi, study.publication, study.year) == (
            row["title"], row["abstract"], row["doi"], row["journal"], row["year"])
        assert study.pmid == (None if row["pmid"] is None else str(row["pmid"]))
        assert study.metadata.get("pmcid") == row["pmcid"]
        assert study.metadata.get("keywords") == row["keywords"]
        assert study.metadata.get("body") == row["body"]


def test_export_round_trip_dataset_with_nimare(exported):
    from nimare.dataset import Dataset

    articles, peaks, paths = exported
    with warnings.catch_warnings():  # Dataset is deprecated; no target: coordinates as written
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        dataset = Dataset(paths["dataset"], target=None)
    coords = dataset.coordinates
    assert set(coords["space"]) == {"MNI"}
    reloaded = coords.rename(columns={"study_id": "article_id", "contrast_id": "table_id"})
    pd.testing.assert_frame_equal(_sorted_peaks(reloaded), _sorted_peaks(peaks))
    texts = dataset.texts.drop_duplicates("study_id").set_index("study_id")
    metadata = dataset.metadata.drop_duplicates("study_id").set_index("study_id")
    for row in _as_objects(articles):
        text, meta = texts.loc[row["article_id"]], metadata.loc[row["article_id"]]
        assert (text["title"], text["abstract"]) == (row["title"], row["abstract"])
        assert (None if pd.isna(text["body"]) else text["body"]) == row["body"]
        for key in ("pmid", "pmcid", "doi", "journal", "year"):
            assert (None if pd.isna(meta[key]) else meta[key]) == row[key], key


@pytest.mark.parametrize("kind", ["nimads", "dataset"])
def test_export_reimports_as_the_same_corpus(exported, tmp_path, kind):
    """Exported, then read back by the corpus stage itself: the same tables."""
    articles, peaks, paths = exported
    reread, repeaks, _ = _build(tmp_path, paths[kind])
    expected = articles.sort_values("article_id")  # provenance ("pubget" of one) kept
    assert _as_objects(reread.sort_values("article_id")) == _as_objects(expected)
    pd.testing.assert_frame_equal(_sorted_peaks(repeaks), _sorted_peaks(peaks))


def test_cli_export_of_a_run(exported, tmp_path, capsys):
    articles, peaks, _ = exported
    config = tmp_path / "config.yaml"
    config.write_text(f"results_dir: {tmp_path / 'results'}\n")
    out = tmp_path / "nimare"
    assert main(["export", "--nimare", str(out), "--config", str(config)]) == EXIT_NO_RUN
    assert "articles.parquet: corpus table missing" in capsys.readouterr().err
    (tmp_path / "results/corpus").mkdir(parents=True)
    articles.to_parquet(tmp_path / "results/corpus/articles.parquet", index=False)
    peaks.to_parquet(tmp_path / "results/corpus/peaks.parquet", index=False)
    assert main(["export", "--nimare", str(out), "--config", str(config), "--json"]) == 0
    written = json.loads(capsys.readouterr().out)
    assert {key: path.rsplit("/", 1)[1] for key, path in written.items()} == {
        "nimads": nimare_io.NIMADS_FILE, "dataset": nimare_io.DATASET_FILE}
    assert len(Studyset(written["nimads"]).coordinates) == len(peaks)
