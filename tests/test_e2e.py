"""A tiny end-to-end run of the whole DAG (corpus -> report) and the query tool on it."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from mnm.corpus import bundled_studyset_dir
from workflow_utils import make_project, snakemake

N_STUDIES = 60
MODELS = ["mnm", "mnm_reverse", "mnm_no_hier", "neurocontext", "ridge", "mlp", "tfidf"]


def _subset_studyset(folder, n_studies):
    """Write the first ``n_studies`` studies of NiMARE's bundled studyset to ``folder``."""
    source = bundled_studyset_dir()
    folder.mkdir()
    studies = pd.read_parquet(source / "studies.parquet").sort_values("study_id")
    keep = set(studies["study_id"].head(n_studies))
    for name in ("studies", "coordinates", "metadata"):
        table = pd.read_parquet(source / f"{name}.parquet")
        table[table["study_id"].isin(keep)].to_parquet(folder / f"{name}.parquet")
    return keep


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    _subset_studyset(tmp / "studyset", N_STUDIES)
    overrides = {
        "corpus": {"nimare_studyset": str(tmp / "studyset")},
        "folds": {"n_folds": 2},
        "brain": {"n_qc_maps": 1},
        "text": {"sections": ["abstract"], "n_shards": 2},
        "models": {"names": MODELS, "sections": ["abstract"],
                   "mnm": {"epochs": 40}, "neurocontext": {"epochs": 40},
                   "mlp": {"epochs": 20}},
        "evaluation": {"n_example_maps": 1, "map_articles_per_fold": 3},
    }
    project = make_project(tmp, overrides)
    snakemake(project, "--cores", "2")
    return project


def test_report_and_every_model_fold(tiny_run):
    results = tiny_run / "results"
    retrieval = pd.read_parquet(results / "report/retrieval.parquet")
    assert set(MODELS) <= set(retrieval["model"])
    assert {"text_to_brain", "brain_to_text"} <= set(retrieval["direction"])
    index = (results / "report/index.md").read_text()
    assert "retrieval.md" in index
    for png in (results / "report/figures").glob("*.png"):
        assert png.stat().st_size > 1000
    for model in MODELS:
        for fold in ("0", "1", "all"):
            folder = results / f"models/{model}/minilm/abstract/aicha/fold-{fold}"
            assert (folder / "model.pt").is_file(), folder
    again = snakemake(tiny_run, "-n")
    assert "Nothing to be done" in again.stdout


def test_rerun_one_fold_touches_no_other_fold(tiny_run):
    folder = tiny_run / "results/models/ridge/minilm/abstract/aicha"
    before = {f: (folder / f / "model.pt").stat().st_mtime_ns for f in ("fold-0", "fold-1")}
    result = snakemake(tiny_run, "--cores", "1", "--forcerun",
                       "results/models/ridge/minilm/abstract/aicha/fold-1/model.pt",
                       "--until", "train_model",
                       "results/models/ridge/minilm/abstract/aicha/fold-1/model.pt")
    assert result.stdout.count("rule train_model") == 1 or "train_model" in result.stdout
    assert (folder / "fold-0/model.pt").stat().st_mtime_ns == before["fold-0"]
    assert (folder / "fold-1/model.pt").stat().st_mtime_ns != before["fold-1"]


def _mnm(project, *args):
    return subprocess.run(
        [sys.executable, "-m", "mnm.cli", "query", *args, "--config",
         str(project / "config.yaml")],
        cwd=project, text=True, capture_output=True, timeout=600,
    )


def _articles(project):
    return pd.read_parquet(project / "results/corpus/articles.parquet")


def test_query_text_ranks_its_article_top5(tiny_run, tmp_path):
    articles = _articles(tiny_run)
    article = articles.iloc[7]
    out = tmp_path / "q"
    result = _mnm(tiny_run, article["abstract"], "--top-k", "5", "--json", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(result.stdout)
    assert article["article_id"] in [row["article_id"] for row in payload["articles"]]
    table = pd.read_parquet(out / "articles.parquet")
    assert len(table) == 5 and table["score"].is_monotonic_decreasing
    maps = sorted(out.glob("*.nii.gz"))
    assert any(p.name == "decoder.nii.gz" for p in maps)
    assert any(p.name.startswith("parcels_") for p in maps)
    for path in maps:
        img = nib.load(path)
        assert img.ndim == 3 and np.isfinite(img.get_fdata()).all()
        assert path.with_name(path.name.replace(".nii.gz", ".png")).is_file()


def test_query_map_ranks_its_article_top5(tiny_run, tmp_path):
    from mnm.atlas import read_atlas
    from mnm.brain import BrainProjector

    peaks = pd.read_parquet(tiny_run / "results/corpus/peaks.parquet")
    article_id = peaks["article_id"].iloc[0]
    maps_img, _ = read_atlas(tiny_run / "results/atlas/aicha")
    projector = BrainProjector(maps_img, fwhm_mm=9.0).fit()
    xyz = peaks.loc[peaks.article_id == article_id, ["x", "y", "z"]].to_numpy()
    map_path = tmp_path / "kde.nii.gz"
    nib.save(projector.kde_img(xyz), map_path)
    result = _mnm(tiny_run, "--map", str(map_path), "--top-k", "5", "--out",
                  str(tmp_path / "q"))
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(tmp_path / "q" / "articles.csv")
    assert article_id in table["article_id"].tolist()
    assert article_id in result.stdout  # the plain-text table


def test_query_resamples_a_map_in_another_grid(tiny_run, tmp_path):
    data = np.zeros((40, 48, 40), dtype=np.float32)
    data[10:20, 20:30, 20:30] = 1.0
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    affine[:3, 3] = [-80, -112, -70]
    path = tmp_path / "coarse.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    result = _mnm(tiny_run, "--map", str(path), "--out", str(tmp_path / "q"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resampled" in result.stderr


@pytest.mark.parametrize("case", ["empty_text", "four_d", "both", "missing_run", "no_file"])
def test_query_bad_input_messages(tiny_run, tmp_path, case):
    out = tmp_path / "q"
    if case == "empty_text":
        result, code, message = _mnm(tiny_run, "   ", "--out", str(out)), 2, "empty"
    elif case == "four_d":
        path = tmp_path / "four_d.nii.gz"
        nib.save(nib.Nifti1Image(np.ones((5, 5, 5, 3), np.float32), np.eye(4)), path)
        result, code, message = _mnm(tiny_run, "--map", str(path), "--out", str(out)), 2, "3D"
    elif case == "both":
        result, code, message = _mnm(tiny_run, "text", "--map", "x.nii.gz"), 2, "either"
    elif case == "no_file":
        result = _mnm(tiny_run, "--map", str(tmp_path / "nope.nii.gz"), "--out", str(out))
        code, message = 2, "not found"
    else:
        config = tmp_path / "config.yaml"
        config.write_text(f"results_dir: {tmp_path / 'no_results'}\n")
        result = subprocess.run(
            [sys.executable, "-m", "mnm.cli", "query", "memory", "--config", str(config),
             "--out", str(out)], text=True, capture_output=True, timeout=300)
        code, message = 3, "snakemake"
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert not out.exists()  # nothing written
