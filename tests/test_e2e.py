"""The tiny end-to-end run of the whole DAG (corpus -> report) and the query tool on it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from conftest import TINY_RUN_MODELS
from mnm.cli import main
from mnm.query import QueryError, open_run, query_map, query_text, write_outputs
from workflow_utils import snakemake

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def run(tiny_run):
    """The fold-all MNM model of the tiny run, loaded once for the query tests."""
    return open_run(tiny_run / "config.yaml")


def test_report_and_every_model_fold(tiny_run):
    results = tiny_run / "results"
    retrieval = pd.read_parquet(results / "report/retrieval.parquet")
    assert set(TINY_RUN_MODELS) == set(retrieval["model"])
    assert {"text_to_brain", "brain_to_text"} == set(retrieval["direction"])
    assert (retrieval["n_folds"] == 4).all()  # 2 repeats x 2 folds
    index = (results / "report/index.md").read_text()
    for section in ("Retrieval (Table 1)", "trade-off", "Map prediction", "Hierarchy and geometry"):
        assert section in index, section
    figures = sorted((results / "report/figures").glob("*.png"))
    assert {p.name for p in figures} >= {"recall.png", "tradeoff.png", "radii.png", "poincare_disk.png"}
    for png in figures:
        assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 1000, png
    for model in TINY_RUN_MODELS:
        folder = results / f"models/{model}/minilm/abstract/aicha"
        for part in ("repeat-0/fold-0", "repeat-0/fold-1", "repeat-1/fold-0", "repeat-1/fold-1", "fold-all"):
            assert (folder / part / "model.safetensors").is_file(), folder / part
    # outputs get the usual permissions (umask respected), not mkstemp's 0600
    mode = stat.S_IMODE((results / "report/retrieval.parquet").stat().st_mode)
    umask = os.umask(0o022)
    os.umask(umask)
    assert mode == 0o666 & ~umask
    again = snakemake(tiny_run, "-n")
    assert "Nothing to be done" in again.stdout


def test_metrics_recomputed_from_test_embeddings_match(tiny_run):
    """Every per-fold metric can be recomputed from test_embeddings.parquet alone."""
    from mnm import metrics
    from mnm.scoring import read_embeddings, score_matrix

    folder = tiny_run / "results/models/mnm/minilm/abstract/aicha/repeat-1/fold-0"
    ids, text, brain, meta = read_embeddings(folder / "test_embeddings.parquet")
    scores = score_matrix(meta.pop("kind"), text, brain, **meta)
    table = pd.read_parquet(folder / "metrics.parquet").set_index(["metric", "direction", "k"])
    assert table.loc[("recall", "text_to_brain", 5), "value"] == pytest.approx(metrics.recall_at_k(scores, 5))
    assert table.loc[("mix_and_match", "brain_to_text", 0), "value"] == pytest.approx(
        metrics.mix_and_match(scores.T))


def test_rerun_one_fold_touches_no_other_fold(tiny_run):
    folder = tiny_run / "results/models/ridge/minilm/abstract/aicha"
    files = sorted(p for p in folder.rglob("model.safetensors"))
    before = {p: p.stat().st_mtime_ns for p in files}
    target = "results/models/ridge/minilm/abstract/aicha/repeat-0/fold-1/model.safetensors"
    result = snakemake(tiny_run, "--cores", "1", "--forcerun", target, "--until", "train_model", target)
    assert result.stdout.count("rule train_model:") == 1
    changed = {p for p in files if p.stat().st_mtime_ns != before[p]}
    # the job of fold 1 retrains fold 1 of every repeat, and nothing else
    assert changed == {folder / "repeat-0/fold-1/model.safetensors", folder / "repeat-1/fold-1/model.safetensors"}


def test_failing_job_log_holds_its_traceback(tiny_run, tmp_path):
    import shutil

    from workflow_utils import make_project

    project = make_project(tmp_path)
    results = project / "results"
    shutil.copytree(tiny_run / "results/corpus", results / "corpus")
    (results / "corpus/articles.parquet").write_bytes(b"PAR1 not a parquet file")
    result = snakemake(project, "--cores", "1", "results/folds.parquet", "--allowed-rules", "folds",
                       "--rerun-triggers", "mtime", check=False)
    assert result.returncode != 0
    log = (results / "logs/folds.log").read_text()
    assert "Traceback (most recent call last)" in log and "job failed (rule folds)" in log


def _stored_scores(tiny_run, article_id, query_side):
    """Scores of one article against every article, from the fold-all model's stored embeddings
    (written by the training job, independently of the query code): its text against every
    brain map (``query_side="text"``) or its brain map against every text."""
    from mnm.scoring import read_embeddings, score_matrix

    ids, text, brain, meta = read_embeddings(
        tiny_run / "results/models/mnm/minilm/abstract/aicha/fold-all/test_embeddings.parquet")
    row = list(ids).index(article_id)
    scores = score_matrix(text_emb=text, brain_emb=brain, **meta)
    return pd.Series(scores[row] if query_side == "text" else scores[:, row], index=ids)


def _assert_top_k_of(table, stored, k=5):
    """The query's top k are the k best stored scores, with the same values (float tolerance)."""
    assert len(table) == k and table["score"].is_monotonic_decreasing
    np.testing.assert_allclose(table["score"], stored[table["article_id"]], atol=2e-4)
    rest = stored.drop(table["article_id"])
    assert table["score"].iloc[-1] >= rest.max() - 2e-4


def test_query_text_ranks_like_the_stored_embeddings(run, tiny_run, tmp_path):
    articles = pd.read_parquet(tiny_run / "results/corpus/articles.parquet")
    article = articles.iloc[7]
    table, maps = query_text(run, article["abstract"], top_k=5)
    _assert_top_k_of(table, _stored_scores(tiny_run, article["article_id"], "text"))
    assert "decoder" in maps and any(name.startswith("parcels_") for name in maps)
    outputs = write_outputs(tmp_path / "q", table, maps, title="text")
    for name, path in outputs.items():
        if path.endswith(".nii.gz"):
            img = nib.load(path)
            assert img.ndim == 3 and np.isfinite(img.get_fdata()).all()
            assert os.path.isfile(path.replace(".nii.gz", ".png"))


def test_query_map_ranks_like_the_stored_embeddings(run, tiny_run, tmp_path):
    peaks = pd.read_parquet(tiny_run / "results/corpus/peaks.parquet")
    article_id = peaks["article_id"].iloc[0]
    xyz = peaks.loc[peaks.article_id == article_id, ["x", "y", "z"]].to_numpy()
    map_path = tmp_path / "kde.nii.gz"
    nib.save(run.projector.kde_img(xyz), map_path)
    table = query_map(run, map_path, top_k=5)
    _assert_top_k_of(table, _stored_scores(tiny_run, article_id, "brain"))


def test_query_resamples_a_map_in_another_grid(run, tmp_path, caplog):
    data = np.zeros((40, 48, 40), dtype=np.float32)
    data[10:20, 20:30, 20:30] = 1.0
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    affine[:3, 3] = [-80, -112, -70]
    path = tmp_path / "coarse.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    table = query_map(run, path, top_k=3)
    assert len(table) == 3 and "resampled" in caplog.text


def test_query_map_without_brain_overlap_is_refused(run, tmp_path):
    data = np.ones((10, 10, 10), dtype=np.float32)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [500, 500, 500]  # far outside the MNI brain
    path = tmp_path / "outside.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    with pytest.raises(QueryError, match="no signal inside the brain"):
        query_map(run, path)


def test_cli_text_query_json(tiny_run, tmp_path):
    """One real command line, as a user runs it (cold start included)."""
    out = tmp_path / "q"
    result = subprocess.run(
        [sys.executable, "-m", "mnm.cli", "query", "working memory", "--top-k", "3", "--json", "--out", str(out),
         "--config", str(tiny_run / "config.yaml")],
        cwd=tiny_run, text=True, capture_output=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(result.stdout)
    assert len(payload["articles"]) == 3 and set(payload["outputs"]) >= {"articles", "decoder"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == sorted([*manifest["files"], "manifest.json"])


def test_query_into_a_previous_folder_replaces_its_files(run, tmp_path):
    out = tmp_path / "q"
    table, maps = query_text(run, "visual cortex", top_k=2)
    write_outputs(out, table, maps, title="text")
    assert (out / "decoder.nii.gz").exists()
    (tmp_path / ".mnm-query-q.killed").mkdir()  # scratch folder of a killed earlier query
    write_outputs(out, table.head(1), {}, title="map")  # a map query: a table, no maps
    assert sorted(p.name for p in out.iterdir()) == ["articles.csv", "articles.parquet", "manifest.json"]
    assert not (tmp_path / ".mnm-query-q.killed").exists()


@pytest.mark.parametrize("case", ["empty_text", "four_d", "both", "missing_run", "no_file", "out_is_file",
                                  "out_under_file", "out_unwritable"])
def test_query_bad_input_messages(tiny_run, tmp_path, capsys, case):
    out = tmp_path / "q"
    config = ["--config", str(tiny_run / "config.yaml")]
    if case == "empty_text":
        args, code, message = ["   ", "--out", str(out), *config], 2, "empty"
    elif case == "four_d":
        path = tmp_path / "four_d.nii.gz"
        nib.save(nib.Nifti1Image(np.ones((5, 5, 5, 3), np.float32), np.eye(4)), path)
        args, code, message = ["--map", str(path), "--out", str(out), *config], 2, "3D"
    elif case == "both":
        args, code, message = ["text", "--map", "x.nii.gz", *config], 2, "either"
    elif case == "no_file":
        args, code, message = ["--map", str(tmp_path / "nope.nii.gz"), "--out", str(out), *config], 2, "not found"
    elif case == "out_is_file":
        out.write_text("a file")
        args, code, message = ["memory", "--out", str(out), *config], 2, "not a folder"
    elif case == "out_under_file":
        (tmp_path / "a_file").write_text("x")
        out = tmp_path / "a_file" / "q"
        args, code, message = ["memory", "--out", str(out), *config], 2, "is not a folder"
    elif case == "out_unwritable":
        out = Path("/proc/mnm-query-test/q")  # not writable, even for root
        args, code, message = ["memory", "--out", str(out), *config], 2, "not writable"
    else:
        missing = tmp_path / "config.yaml"
        missing.write_text(f"results_dir: {tmp_path / 'no_results'}\n")
        args, code, message = ["memory", "--config", str(missing), "--out", str(out)], 3, "snakemake"
    assert main(["query", *args]) == code
    assert message in capsys.readouterr().err
    assert case == "out_is_file" or not out.exists()  # nothing written
