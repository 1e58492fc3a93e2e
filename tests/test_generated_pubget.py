"""Generated pubget output (mnm.generated_pubget): pubget's layout and bytes, the project's
reader, realistic rates, determinism and a text -> peak-location signal.

References are independent of the generator: pubget's own extractor fields, CSV writer and
coordinate-space heuristic, the csv module, NiMARE's Talairach transform, scikit-learn.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json

import numpy as np
import pandas as pd
import pytest

from mnm import generated_pubget as gp
from mnm.corpus import QCLog, clean_corpus
from mnm.pubget_source import CSV_COLUMNS, find_extracted_dir, load_pubget_extracted

N = 300


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("generated") / "data"
    gp.write_generated_pubget(folder, N, seed=7)
    return folder


@pytest.fixture(scope="module")
def tables(data_dir):
    extracted = find_extracted_dir(data_dir)
    return {name: pd.read_csv(extracted / name, dtype=str, keep_default_na=False)
            for name in gp.CSV_FIELDS}


def test_layout_and_columns_are_pubgets(data_dir):
    from pubget._coordinate_space import CoordinateSpaceExtractor
    from pubget._coordinates import CoordinateExtractor
    from pubget._metadata import MetadataExtractor
    from pubget._text import TextExtractor

    query = gp.generated_query(N, 7)
    extracted = data_dir / f"query_{hashlib.md5(query.encode()).hexdigest()}" / "subset_allArticles_extractedData"
    assert find_extracted_dir(data_dir) == extracted
    assert sorted(p.name for p in extracted.iterdir()) == sorted([*gp.CSV_FIELDS, "info.json"])
    pubget_fields = {f"{e.name}.csv": tuple(e.fields) for e in (
        TextExtractor(), MetadataExtractor(), CoordinateExtractor(), CoordinateSpaceExtractor())}
    for name, fields in pubget_fields.items():
        header = (extracted / name).read_bytes().split(b"\r\n", 1)[0].decode()
        assert tuple(header.split(",")) == fields, name
        assert set(CSV_COLUMNS[name]) <= set(fields)  # what the project's reader requires
    info = json.loads((extracted / "info.json").read_text())
    assert info["is_complete"] is True and info["n_articles"] == N and info["name"] == "extract_data"
    assert "generated" in info["generated"]


def test_bytes_equal_pubgets_csv_writer(data_dir, tmp_path):
    """Rows read back and written again by pubget's own CSVWriter give the same bytes."""
    from pubget._writers import CSVWriter

    extracted = find_extracted_dir(data_dir)
    for name, fields in gp.CSV_FIELDS.items():
        original = (extracted / name).read_bytes()
        with open(extracted / name, newline="", encoding="utf-8") as stream:
            rows = list(csv.DictReader(stream))
        writer = CSVWriter(fields, "table", tmp_path / name)
        with writer:
            for row in rows:
                writer.write({"table": row})
        assert (tmp_path / name).read_bytes() == original, name
    # the hand-written formatter agrees with the csv module on the hard cases too
    awkward = [("a,b", 'say "hi"', "line\nbreak", "", -0.5, 12, None)]
    expected = io.StringIO(newline="")
    csv.writer(expected).writerows(awkward)
    assert gp.csv_lines(awkward) == expected.getvalue()


def test_the_projects_reader_takes_it_and_rates_are_realistic(data_dir, tables):
    qc = QCLog()
    articles, peaks = load_pubget_extracted(data_dir, qc)
    assert len(articles) == N and not qc.rows  # no file-level problem
    assert articles["title"].str.startswith("[Generated] ").all()
    assert (articles["journal"] == "Generated").all() and articles["pmcid"].min() > 9e8
    words = {s: articles[s].str.split().str.len() for s in ("title", "abstract", "body")}
    assert 13 <= words["title"].mean() <= 18
    assert 220 <= words["abstract"].mean() <= 280
    assert 3500 <= words["body"].median() <= 4500 and words["body"].max() > 6000
    space = tables["coordinate_space.csv"]["coordinate_space"].value_counts(normalize=True)
    assert abs(space["MNI"] - 0.65) < 0.08 and abs(space["TAL"] - 0.20) < 0.07
    coords = tables["coordinates.csv"]
    per_article = coords.groupby("pmcid").size().reindex(tables["text.csv"]["pmcid"], fill_value=0)
    assert 25 <= per_article.mean() <= 36 and (per_article == 0).any()
    repeated = coords.duplicated(["pmcid", "x", "y", "z"]).mean()
    assert 0.02 < repeated < 0.09  # 5% planted (plus chance coincidences of rounded peaks)
    assert (coords["table_id"] == "").any()  # tables without an id, named by their label
    kept = clean_corpus(articles, peaks, qc := QCLog(), required_section="body")[1]
    rows = qc.to_frame().query("level == 'peak'").set_index("reason")["count"]
    assert 0.01 < rows["dropped: outside the brain"] / rows["input"] < 0.03
    assert rows["converted: TAL to MNI (Lancaster)"] == (peaks["space"] == "TAL").sum()
    assert len(kept) == rows["kept"]


def test_pubgets_space_heuristic_agrees_with_coordinate_space(tables):
    from pubget._coordinate_space import _neurosynth_guess_space

    text = tables["text.csv"]
    guessed = [_neurosynth_guess_space(" ".join(row)) for row in
               text[["title", "keywords", "abstract", "body"]].itertuples(index=False)]
    assert guessed == tables["coordinate_space.csv"]["coordinate_space"].tolist()


def test_talairach_articles_are_talairach_coordinates(data_dir, tables):
    """Peaks of TAL articles, mapped back with NiMARE's tal2mni, fall in the brain as often as
    those of MNI articles; read as MNI they would be shifted."""
    from nimare.utils import tal2mni

    from mnm.corpus import distance_to_brain_mm

    coords = tables["coordinates.csv"].merge(tables["coordinate_space.csv"], on="pmcid")
    xyz = coords[["x", "y", "z"]].astype(float).to_numpy()
    keep = xyz[:, 2] < 90  # the planted far-away peaks aside
    inside = {}
    for space in ("MNI", "TAL"):
        rows = keep & (coords["coordinate_space"] == space).to_numpy()
        points = np.asarray(tal2mni(xyz[rows])) if space == "TAL" else xyz[rows]
        inside[space] = np.mean(distance_to_brain_mm(points) == 0)
    assert abs(inside["TAL"] - inside["MNI"]) < 0.05


def test_same_seed_same_files_other_seed_other_files(data_dir, tmp_path):
    again = find_extracted_dir(gp.write_generated_pubget(tmp_path / "again", N, seed=7).parents[1])
    other = find_extracted_dir(gp.write_generated_pubget(tmp_path / "other", N, seed=8).parents[1])
    first = find_extracted_dir(data_dir)
    for name in gp.CSV_FIELDS:
        assert (again / name).read_bytes() == (first / name).read_bytes(), name
    assert (other / "text.csv").read_bytes() != (first / "text.csv").read_bytes()
    info = [json.loads((folder / "info.json").read_text()) for folder in (first, again)]
    assert {k: v for k, v in info[0].items() if k != "date"} == {k: v for k, v in info[1].items() if k != "date"}


def test_text_predicts_where_the_peaks_are(data_dir):
    """TF-IDF of the abstract -> ridge -> share of peaks in each octant of MNI space, scored on
    held-out articles (5-fold): far above the same pipeline on shuffled targets."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import cross_val_predict

    qc = QCLog()
    articles, peaks = clean_corpus(*load_pubget_extracted(data_dir, qc), qc, required_section="body")
    octant = (peaks[["x", "y", "z"]].to_numpy() > 0) @ np.array([1, 2, 4])
    share = pd.crosstab(peaks["article_id"], octant, normalize="index").reindex(articles["article_id"])
    X = TfidfVectorizer(sublinear_tf=True).fit_transform(articles["abstract"])
    Y = share.to_numpy()

    def held_out_correlation(targets):
        predicted = cross_val_predict(RidgeCV(alphas=[0.1, 1, 10]), X, targets, cv=5)
        a, b = predicted - predicted.mean(1, keepdims=True), targets - targets.mean(1, keepdims=True)
        return np.mean((a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1) + 1e-12))

    real = held_out_correlation(Y)
    shuffled = held_out_correlation(np.random.default_rng(0).permutation(Y))
    assert real > 0.5 and real - shuffled > 0.3, (real, shuffled)


def test_bad_size_is_refused(tmp_path):
    with pytest.raises(ValueError, match="rehearsal_articles"):
        gp.write_generated_pubget(tmp_path, 0)
