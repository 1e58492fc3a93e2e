"""Tests of mnm.folds and the per-fold training harness mnm.train (tiny synthetic inputs)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mnm.folds import assign_folds, validation_split
from mnm.io import read_parquet, write_matrix, write_parquet
from mnm.train import (
    exterior_angle_matrix,
    load_trained,
    read_test_embeddings,
    score_matrix,
    split_fold,
    train_fold,
    validation_recalls,
)

REPO = Path(__file__).resolve().parents[1]
TINY_NEUROCONTEXT = {
    "latent_dim": 16, "dropout": 0.0, "logit_scale_init": 10.0,
    "epochs": 6, "batch_size": 32, "lr": 3e-3, "weight_decay": 0.01,
}  # fmt: skip


def make_inputs(root: Path, n: int = 120, text_dim: int = 12, brain_dim: int = 10, n_folds: int = 3, seed: int = 0):
    """Write synthetic folds/brain/text/articles Parquets with a planted text -> brain relation.

    brain = text @ W + small noise, so a model can recover each pair; text ids are shuffled
    and one extra id per input is missing elsewhere (exercises the intersection).
    """
    rng = np.random.default_rng(seed)
    ids = [f"a{i:04d}" for i in range(n)]
    text = rng.normal(size=(n, text_dim)).astype(np.float32) * 3.0 + 5.0  # non-standard scale
    brain = text @ rng.normal(size=(text_dim, brain_dim)) / np.sqrt(text_dim)
    brain = (brain + 0.05 * rng.normal(size=brain.shape)).astype(np.float32)
    n_active = (brain > 1.0).sum(axis=1)
    order = rng.permutation(n)
    paths = {
        "text_path": root / "text.parquet",
        "brain_path": root / "brain.parquet",
        "folds_path": root / "folds.parquet",
        "articles_path": root / "articles.parquet",
    }
    write_matrix(paths["text_path"], [ids[i] for i in order] + ["only_text"], np.vstack([text[order], text[:1]]))
    write_matrix(
        paths["brain_path"], ids + ["only_brain"], np.vstack([brain, brain[:1]]), column="coefficients",
        extra={"n_peaks": np.append(n_active + 1, 1), "n_active": np.append(n_active, 0)},
    )  # fmt: skip
    write_parquet(assign_folds(ids, n_folds, seed), paths["folds_path"])
    words = np.array(["memory", "motor", "visual", "language", "reward", "pain", "face", "auditory"])
    titles = [" ".join(words[np.argsort(-row)[:3]]) for row in text[:, : len(words)]]
    write_parquet(pd.DataFrame({"article_id": ids, "title": titles, "abstract": titles, "body": titles}), paths["articles_path"])
    return paths, {"ids": np.array(ids), "text": text, "brain": brain, "n_active": n_active}


def run_fold(root: Path, paths: dict, model: str, fold, params: dict, seed: int = 0, tag: str = "run"):
    out = root / tag
    outputs = {
        "out_model": out / "model.pt",
        "out_history": out / "history.parquet",
        "out_test_embeddings": out / "test_embeddings.parquet",
    }
    summary = train_fold(
        model, section="title", fold=fold, params=params, seed=seed, device="cpu", threads=1, **paths, **outputs
    )
    return summary, outputs


# ----------------------------------------------------------------------------- folds
def test_assign_folds_balanced_deterministic_and_order_free():
    ids = [f"id{i}" for i in range(103)]
    folds = assign_folds(ids, 5, seed=3)
    sizes = folds["fold"].value_counts().sort_index().to_numpy()
    assert sizes.sum() == 103 and sizes.max() - sizes.min() <= 1 and len(sizes) == 5
    shuffled = assign_folds(list(reversed(ids)), 5, seed=3)
    pd.testing.assert_frame_equal(folds, shuffled)
    assert not assign_folds(ids, 5, seed=4)["fold"].equals(folds["fold"])
    with pytest.raises(ValueError, match="duplicated"):
        assign_folds(["a", "a", "b"], 2)


def test_validation_split_disjoint_deterministic_and_sized():
    ids = [f"id{i}" for i in range(50)]
    fit, val = validation_split(ids, 0.1, seed=1)
    assert len(val) == 5 and len(fit) == 45
    assert set(fit).isdisjoint(val) and set(fit) | set(val) == set(ids)
    fit2, val2 = validation_split(ids[::-1], 0.1, seed=1)
    assert list(val2) == list(val) and list(fit2) == list(fit)


def test_split_fold_validation_never_touches_test_fold():
    ids = np.array([f"id{i}" for i in range(60)])
    folds = assign_folds(ids, 4, seed=0)["fold"].to_numpy()
    for fold in range(4):
        fit, val, test = split_fold(ids, folds, fold, 0.2, seed=0)
        assert set(test) == set(np.flatnonzero(folds == fold))
        assert set(val).isdisjoint(test) and set(fit).isdisjoint(test) and set(fit).isdisjoint(val)
        assert len(fit) + len(val) + len(test) == 60
    fit, val, test = split_fold(ids, folds, "all", 0.2, seed=0)
    assert len(test) == 60 and len(fit) + len(val) == 60
    with pytest.raises(ValueError, match="fold 9"):
        split_fold(ids, folds, 9, 0.2, seed=0)


# ----------------------------------------------------------------------------- scoring
def test_validation_recalls_match_loop_and_ties_are_pessimistic():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(30, 30))
    expected = np.mean([np.sum(scores[i] >= scores[i, i]) <= 10 for i in range(30)])
    assert validation_recalls(scores)["val_recall_at_10_t2b"] == pytest.approx(expected)
    expected_b2t = np.mean([np.sum(scores[:, j] >= scores[j, j]) <= 1 for j in range(30)])
    assert validation_recalls(scores)["val_recall_at_1_b2t"] == pytest.approx(expected_b2t)
    collapsed = validation_recalls(np.zeros((30, 30)))
    assert collapsed["val_mean_recall"] == 0.0


def test_exterior_angle_matches_hand_worked_case():
    # c = 1, apex x = (sinh 1, 0): the origin lies at angle pi "behind" x; a point further
    # out on the same ray is at exterior angle 0, and the origin-side point at angle pi.
    x = np.array([[np.sinh(1.0), 0.0]])
    further = np.array([[np.sinh(2.0), 0.0]])
    closer = np.array([[np.sinh(0.5), 0.0]])
    assert exterior_angle_matrix(x, further, 1.0)[0, 0] == pytest.approx(0.0, abs=1e-3)
    assert exterior_angle_matrix(x, closer, 1.0)[0, 0] == pytest.approx(np.pi, abs=1e-3)
    # Orthogonal direction: angle strictly between 0 and pi, independent of scale of c=1 check
    # against a direct hyperbolic law of cosines computation on the triangle (O, x, y).
    y = np.array([[0.0, np.sinh(1.0)]])
    a, b = 1.0, 1.0  # d(O, x), d(O, y)
    d_xy = np.arccosh(np.cosh(1.0) ** 2)  # perpendicular rays: cosh d = cosh a cosh b
    interior = np.arccos((np.cosh(a) * np.cosh(d_xy) - np.cosh(b)) / (np.sinh(a) * np.sinh(d_xy)))
    assert exterior_angle_matrix(x, y, 1.0)[0, 0] == pytest.approx(np.pi - interior, abs=1e-6)


def test_score_matrix_angle_matches_mnm_model_and_kinds():
    lorentz = pytest.importorskip("mnm.lorentz")
    rng = np.random.default_rng(1)
    text, brain = rng.normal(size=(5, 4)), 0.3 * rng.normal(size=(6, 4))
    c = 0.7
    expected = -lorentz.pairwise_exterior_angle(
        torch.tensor(brain), torch.tensor(text), torch.tensor(c, dtype=torch.float64)
    ).T.numpy()
    np.testing.assert_allclose(score_matrix("angle", text, brain, curvature=c), expected, atol=1e-4)  # eps clamps differ
    np.testing.assert_allclose(score_matrix("cosine", text, brain), text @ brain.T)
    corr = np.corrcoef(np.vstack([text, brain]))[:5, 5:]
    np.testing.assert_allclose(score_matrix("correlation", text, brain), corr, atol=1e-12)
    with pytest.raises(ValueError, match="curvature"):
        score_matrix("angle", text, brain)


# ----------------------------------------------------------------------------- training
def test_scaler_is_fitted_on_fit_split_only(tmp_path):
    paths, data = make_inputs(tmp_path)
    _, outputs = run_fold(tmp_path, paths, "ridge", 1, {"alphas": [1.0, 10.0]})
    trained = load_trained(outputs["out_model"])
    fit_ids = trained.metadata["fit_ids"]
    index = {a: i for i, a in enumerate(data["ids"])}
    fit_rows = [index[a] for a in fit_ids]
    checkpoint = torch.load(outputs["out_model"], weights_only=False)
    np.testing.assert_allclose(checkpoint["scaler_mean"], data["text"][fit_rows].mean(axis=0), rtol=1e-5)
    assert not np.allclose(checkpoint["scaler_mean"], data["text"].mean(axis=0), rtol=1e-5, atol=1e-6)
    test_ids = set(trained.metadata["test_ids"])
    assert test_ids.isdisjoint(fit_ids) and test_ids.isdisjoint(trained.metadata["validation_ids"])
    assert trained.metadata["missing_counts"] == {"text": 1, "brain": 1, "folds": 2, "articles": 2}


def test_training_is_deterministic_and_best_state_is_saved(tmp_path):
    paths, data = make_inputs(tmp_path)
    _, first = run_fold(tmp_path, paths, "neurocontext", 0, TINY_NEUROCONTEXT, tag="first")
    _, second = run_fold(tmp_path, paths, "neurocontext", 0, TINY_NEUROCONTEXT, tag="second")
    history = read_parquet(first["out_history"])
    pd.testing.assert_frame_equal(history, read_parquet(second["out_history"]))
    best = int(history.loc[history["val_mean_recall"].idxmax(), "epoch"])  # idxmax = first maximum
    assert history.loc[history["is_best"], "epoch"].tolist() == [best]
    assert {"train_loss", "train_info_nce", "logit_scale", "val_recall_at_1_t2b", "val_recall_at_10_b2t"} <= set(history.columns)
    trained = load_trained(first["out_model"])
    assert trained.metadata["best_epoch"] == best
    # Recompute the validation recall of the saved state: it must be the best epoch's value.
    index = {a: i for i, a in enumerate(data["ids"])}
    val_rows = [index[a] for a in trained.metadata["validation_ids"]]
    scores = trained.score(trained.embed_text(data["text"][val_rows]), trained.embed_brain(data["brain"][val_rows]))
    recalls = validation_recalls(scores)
    assert recalls["val_mean_recall"] == pytest.approx(history.loc[history["epoch"] == best, "val_mean_recall"].item())


def test_neurocontext_and_ridge_recover_planted_pairs(tmp_path):
    paths, data = make_inputs(tmp_path, n=150)
    params = {**TINY_NEUROCONTEXT, "epochs": 25}
    for model, model_params in (("neurocontext", params), ("ridge", {"alphas": [0.1, 1.0]})):
        _, outputs = run_fold(tmp_path, paths, model, 0, model_params, tag=model)
        ids, text, brain, meta = read_test_embeddings(outputs["out_test_embeddings"])
        scores = score_matrix(meta["kind"], text, brain, **{k: v for k, v in meta.items() if k != "kind"})
        recall_at_1 = np.mean(scores.argmax(axis=1) == np.arange(len(ids)))
        assert recall_at_1 > 10 / len(ids), (model, recall_at_1)  # chance is 1 / n
        trained = load_trained(outputs["out_model"])
        index = {a: i for i, a in enumerate(data["ids"])}
        rows = [index[a] for a in ids]
        np.testing.assert_allclose(trained.embed_text(data["text"][rows]), text, atol=1e-5)
        np.testing.assert_allclose(trained.score(text, brain), scores, atol=1e-6)
        predicted = trained.predict_brain(data["text"][rows])
        assert predicted.shape == brain.shape if model == "ridge" else predicted.shape == data["brain"][rows].shape
        assert np.corrcoef(predicted.ravel(), data["brain"][rows].ravel())[0, 1] > 0.8


def test_fold_all_writes_every_article_and_mnm_apex_is_recorded(tmp_path):
    pytest.importorskip("mnm.models.mnm")
    paths, data = make_inputs(tmp_path, n=60)
    params = {"latent_dim": 8, "dropout": 0.0, "epochs": 2, "batch_size": 32, "lr": 1e-3, "weight_decay": 0.05}
    _, outputs = run_fold(tmp_path, paths, "mnm_reverse", "all", params)
    ids, text, brain, meta = read_test_embeddings(outputs["out_test_embeddings"])
    assert len(ids) == 60 and meta["kind"] == "angle" and meta["angle_apex"] == "text"
    trained = load_trained(outputs["out_model"])
    with torch.no_grad():
        reference = trained.module.score(torch.tensor(text), torch.tensor(brain)).numpy()
    np.testing.assert_allclose(trained.score(text, brain), reference, atol=1e-3)
    assert meta["curvature"] == pytest.approx(read_parquet(outputs["out_history"])["curvature"].iloc[-1], rel=0.2)


# ----------------------------------------------------------------------------- snakemake
def _snakefile_for(tmp_path: Path) -> list[str]:
    """Use the project's Snakefile when present, else a wrapper including only models.smk."""
    if (REPO / "Snakefile").exists():
        return ["--snakefile", str(REPO / "Snakefile"), "--directory", str(REPO)]
    pytest.skip("top-level Snakefile not written yet (the lead's file)")


@pytest.mark.e2e
def test_one_fold_job_through_snakemake_touches_no_other_fold(tmp_path):
    if shutil.which("snakemake") is None:
        pytest.skip("snakemake not installed")
    results = tmp_path / "results"
    paths, _ = make_inputs(tmp_path, n=60)
    layout = {
        "text_path": results / "text/minilm/title/embeddings.parquet",
        "brain_path": results / "brain/aicha/coefficients.parquet",
        "folds_path": results / "folds.parquet",
        "articles_path": results / "corpus/articles.parquet",
    }
    # Upstream files are created oldest-first so that Snakemake sees them as up to date.
    for key in ("articles_path", "folds_path", "brain_path", "text_path"):
        layout[key].parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(paths[key], layout[key])
    target = results / "models/ridge/minilm/title/aicha/fold-1/model.pt"
    command = [
        sys.executable, "-m", "snakemake", *_snakefile_for(tmp_path), str(target), "--cores", "1",
        "--config", f"results_dir={results}", "--allowed-rules", "train_model", "--rerun-triggers", "mtime",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    fold_dirs = sorted(p.name for p in (results / "models/ridge/minilm/title/aicha").iterdir())
    assert fold_dirs == ["fold-1"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["history.parquet", "model.pt", "test_embeddings.parquet"]
    assert not (results / "models").joinpath("mnm").exists()
