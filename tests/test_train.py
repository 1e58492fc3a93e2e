"""Folds, the per-fold training harness and the shared torch recipe (tiny synthetic inputs)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mnm.checkpoint import load_checkpoint
from mnm.folds import assign_folds, assign_repeated_folds, validation_split
from mnm.io import read_parquet, write_matrix, write_parquet
from mnm.scoring import read_embeddings, score_matrix
from mnm.train import OUTPUT_FILES, recipe_of, train_fold
from mnm.trained import Standardizer, load_trained
from mnm.training.data import load_fold_inputs, split_fold
from mnm.text.term_counts import count_terms
from mnm.training.loop import Recipe, validation_metrics

REPO = Path(__file__).resolve().parents[1]
TINY = {"latent_dim": 16, "dropout": 0.0}
TINY_RECIPE = Recipe(batch_size=32, max_epochs=6, lr=3e-3, weight_decay=0.01, warmup_epochs=1, patience=None)


def make_inputs(root: Path, n: int = 120, text_dim: int = 12, brain_dim: int = 10, n_folds: int = 3,
                n_repeats: int = 2, seed: int = 0):
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
    write_parquet(assign_repeated_folds(ids, n_folds, n_repeats, seed), paths["folds_path"])
    words = np.array(["memory", "motor", "visual", "language", "reward", "pain", "face", "auditory"])
    titles = [" ".join(words[np.argsort(-row)[:3]]) for row in text[:, : len(words)]]
    write_parquet(pd.DataFrame({"article_id": ids, "title": titles, "abstract": titles, "body": titles}),
                  paths["articles_path"])
    return paths, {"ids": np.array(ids), "text": text, "brain": brain, "n_active": n_active}


def run_fold(root: Path, paths: dict, model: str, fold, params: dict, recipe: Recipe = TINY_RECIPE,
             repeats=(0,), seed: int = 0, tag: str = "run", **options):
    """Train through :func:`mnm.train.train_fold`; return its summaries and output paths."""
    outputs = {r: {key: root / tag / f"repeat-{r}" / name for key, name in OUTPUT_FILES.items()}
               for r in repeats}
    summary = train_fold(model, section="title", fold=fold, params=params, recipe=recipe, outputs=outputs,
                         seed=seed, device="cpu", threads=1, **paths, **options)
    return summary, outputs


def rows_of(ids, data) -> list[int]:
    index = {a: i for i, a in enumerate(data["ids"])}
    return [index[a] for a in ids]


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


def test_repeated_folds_repartition_each_repeat():
    ids = [f"id{i}" for i in range(60)]
    table = assign_repeated_folds(ids, 4, n_repeats=3, seed=7)
    assert list(table.columns) == ["article_id", "repeat", "fold"] and len(table) == 180
    by_repeat = {r: part.set_index("article_id")["fold"] for r, part in table.groupby("repeat")}
    # repeat r is the plain assignment of seed + r: repeat 0 equals assign_folds(seed)
    for r in range(3):
        expected = assign_folds(ids, 4, seed=7 + r).set_index("article_id")["fold"]
        pd.testing.assert_series_equal(by_repeat[r], expected, check_names=False)
    assert not by_repeat[0].equals(by_repeat[1])


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
        split = split_fold(ids, folds, fold, 0.2, seed=0)
        assert set(split.test) == set(np.flatnonzero(folds == fold))
        assert set(split.validation).isdisjoint(split.test) and set(split.fit).isdisjoint(split.test)
        assert set(split.fit).isdisjoint(split.validation)
        assert len(split.fit) + len(split.validation) + len(split.test) == 60
    split = split_fold(ids, folds, "all", 0.2, seed=0)
    assert len(split.test) == 60 and len(split.fit) + len(split.validation) == 60
    with pytest.raises(ValueError, match="fold 9"):
        split_fold(ids, folds, 9, 0.2, seed=0)


def test_fold_inputs_read_only_the_article_columns_they_use(tmp_path, monkeypatch):
    """A training job reads article_id of articles.parquet, plus the section's columns for
    TF-IDF, never the bodies (328 MB at 20,000 articles) for a section that does not use them;
    a section column the table lacks is refused with the file and column named."""
    import pyarrow.parquet as pq

    paths, data = make_inputs(tmp_path, n=30)
    titles = pd.read_parquet(paths["articles_path"]).set_index("article_id")["title"]
    read = []
    real_read_table = pq.read_table
    monkeypatch.setattr(pq, "read_table", lambda path, columns=None, **kwargs: read.append(
        (Path(path).name, columns)) or real_read_table(path, columns=columns, **kwargs))
    plain = load_fold_inputs(**paths)
    texts = load_fold_inputs(**paths, section="title_abstract")
    assert [columns for name, columns in read if name == "articles.parquet"] == [
        ["article_id"], ["article_id", "title", "abstract"]]
    assert plain.ids.tolist() == texts.ids.tolist() == sorted(data["ids"])
    hand_joined = count_terms(texts.ids, [f"{titles[i]}. {titles[i]}" for i in texts.ids])
    assert texts.term_counts.terms.tolist() == hand_joined.terms.tolist()
    assert (texts.term_counts.counts != hand_joined.counts).nnz == 0
    pd.DataFrame({"article_id": data["ids"], "title": "x"}).to_parquet(paths["articles_path"])
    with pytest.raises(KeyError, match=r"articles.parquet: column\(s\) \['body'\] missing"):
        load_fold_inputs(**paths, section="body")


# ----------------------------------------------------------------------------- scoring
def test_validation_metrics_match_loop_and_ties_are_pessimistic():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(30, 30))
    expected = np.mean([np.sum(scores[i] >= scores[i, i]) <= 10 for i in range(30)])
    assert validation_metrics(scores)["val_recall_at_10_t2b"] == pytest.approx(expected)
    expected_b2t = np.mean([np.sum(scores[:, j] >= scores[j, j]) <= 1 for j in range(30)])
    assert validation_metrics(scores)["val_recall_at_1_b2t"] == pytest.approx(expected_b2t)
    mix = np.mean([np.mean(np.delete(scores[i] < scores[i, i], i)) for i in range(30)])
    mix_b2t = np.mean([np.mean(np.delete(scores[:, j] < scores[j, j], j)) for j in range(30)])
    assert validation_metrics(scores)["val_mix_and_match"] == pytest.approx((mix + mix_b2t) / 2)
    collapsed = validation_metrics(np.zeros((30, 30)))
    assert collapsed["val_mean_recall"] == 0.0 and collapsed["val_mix_and_match"] == 0.5


def test_angle_score_matches_hand_worked_case():
    # c = 1, apex x = (sinh 1, 0): a point further out on the same ray is at exterior angle 0,
    # the origin-side point at angle pi; score = -angle, brain point = apex.
    x = np.array([[np.sinh(1.0), 0.0]])
    further = np.array([[np.sinh(2.0), 0.0]])
    closer = np.array([[np.sinh(0.5), 0.0]])
    assert score_matrix("angle", further, x, 1.0)[0, 0] == pytest.approx(0.0, abs=1e-3)
    assert score_matrix("angle", closer, x, 1.0)[0, 0] == pytest.approx(-np.pi, abs=1e-3)
    # Perpendicular rays: by the hyperbolic law of cosines on the triangle (O, x, y).
    y = np.array([[0.0, np.sinh(1.0)]])
    d_xy = np.arccosh(np.cosh(1.0) ** 2)  # cosh d = cosh a cosh b for perpendicular legs
    interior = np.arccos((np.cosh(1.0) * np.cosh(d_xy) - np.cosh(1.0)) / (np.sinh(1.0) * np.sinh(d_xy)))
    assert score_matrix("angle", y, x, 1.0)[0, 0] == pytest.approx(-(np.pi - interior), abs=1e-6)
    # apex "text" measures the angle at the text point instead
    assert score_matrix("angle", x, further, 1.0, angle_apex="text")[0, 0] == pytest.approx(0.0, abs=1e-3)


def test_cosine_and_correlation_scores():
    rng = np.random.default_rng(1)
    text, brain = rng.normal(size=(5, 4)), rng.normal(size=(6, 4))
    np.testing.assert_allclose(score_matrix("cosine", text, brain), text @ brain.T)
    corr = np.corrcoef(np.vstack([text, brain]))[:5, 5:]
    np.testing.assert_allclose(score_matrix("correlation", text, brain), corr, atol=1e-12)
    with pytest.raises(ValueError, match="curvature"):
        score_matrix("angle", text, brain)


def test_standardizer_matches_scikit_learn():
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(2)
    X = rng.normal(size=(40, 5)) * [1, 10, 0.1, 3, 1] + 7
    X[:, 4] = 2.0  # a constant feature is left unscaled, as scikit-learn does
    ours = Standardizer.fit(X)
    reference = StandardScaler().fit(X)
    np.testing.assert_allclose(ours.mean, reference.mean_)
    np.testing.assert_allclose(ours.scale, reference.scale_)
    np.testing.assert_allclose(ours.transform(X), reference.transform(X), atol=1e-5)


# ----------------------------------------------------------------------------- recipe
def test_recipe_overrides_and_unknown_keys():
    models = {"training": {"batch_size": 16, "lr": 1e-3}, "mlp": {"training": {"lr": 1e-2, "batch_size": None}}}
    assert recipe_of(models, "mlp") == Recipe(batch_size=16, lr=1e-2)
    assert recipe_of({"training": {}, "mnm": {}}, "mnm_reverse") == Recipe()
    with pytest.raises(KeyError, match="epochs"):
        Recipe.from_config({"epochs": 3})
    with pytest.raises(ValueError, match="schedule"):
        Recipe.from_config({"schedule": "step"})


def test_learning_rate_follows_warmup_then_cosine(tmp_path):
    paths, _ = make_inputs(tmp_path, n=90)
    recipe = Recipe(batch_size=20, max_epochs=8, lr=1e-2, warmup_epochs=2, patience=None)
    _, outputs = run_fold(tmp_path, paths, "mlp", 0, {"hidden_dim": 8}, recipe)
    history = read_parquet(outputs[0]["history"]).set_index("epoch")
    # 60 training articles - 6 validation = 54 fit pairs: batches of 20, 20, 14 = 3 steps an epoch
    steps_per_epoch, total = 3, 24
    warmup = 2 * steps_per_epoch
    assert history.loc[8, "step"] == total
    for epoch in range(1, 9):
        step = epoch * steps_per_epoch  # the learning rate after this many scheduler steps
        if step < warmup:  # linear ramp from lr / (warmup + 1) to lr
            expected = 1e-2 * ((1 / (warmup + 1)) + step * (1 - 1 / (warmup + 1)) / warmup)
        else:
            expected = 1e-2 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))
        assert history.loc[epoch, "lr"] == pytest.approx(expected, rel=1e-6, abs=1e-12), epoch


def test_early_stopping_after_patience_and_best_state_restored(tmp_path):
    paths, data = make_inputs(tmp_path)
    recipe = Recipe(batch_size=32, max_epochs=200, lr=3e-3, weight_decay=0.01, patience=3)
    _, first = run_fold(tmp_path, paths, "neurocontext", 0, TINY, recipe, tag="first")
    _, second = run_fold(tmp_path, paths, "neurocontext", 0, TINY, recipe, tag="second")
    history = read_parquet(first[0]["history"])
    pd.testing.assert_frame_equal(history, read_parquet(second[0]["history"]))  # deterministic
    # the first epoch with the best recall, ties broken by the best Mix&Match
    ranked = history.sort_values(["val_mean_recall", "val_mix_and_match", "epoch"],
                                 ascending=[False, False, True])
    best = int(ranked["epoch"].iloc[0])
    assert history.loc[history["is_best"], "epoch"].tolist() == [best]
    assert history["epoch"].max() == best + 3 < 200  # stopped 3 epochs after the best one
    assert {"step", "lr", "train_loss", "train_info_nce", "logit_scale", "val_recall_at_1_t2b",
            "val_mix_and_match"} <= set(history.columns)
    trained = load_trained(first[0]["model"])
    assert trained.metadata["best_epoch"] == best
    # The saved state is the best epoch's: its validation recall is that epoch's value.
    rows = rows_of(trained.metadata["validation_ids"], data)
    scores = trained.score(trained.embed_text(data["text"][rows]), trained.embed_brain(data["brain"][rows]))
    assert validation_metrics(scores)["val_mean_recall"] == pytest.approx(
        history.loc[history["epoch"] == best, "val_mean_recall"].item())


def test_stored_scalars_stay_in_bounds_during_training(tmp_path):
    paths, _ = make_inputs(tmp_path, n=90)
    recipe = Recipe(batch_size=32, max_epochs=10, lr=0.5, warmup_epochs=0, schedule="constant", patience=None)
    _, outputs = run_fold(tmp_path, paths, "mnm", 0, {**TINY, "curvature_init": 1.0}, recipe)
    history = read_parquet(outputs[0]["history"])
    assert history["curvature"].between(0.1 - 1e-6, 10 + 1e-6).all()
    assert (history["alpha_text"] <= 1 + 1e-6).all() and (history["temperature"] >= 0.01 - 1e-8).all()


# ----------------------------------------------------------------------------- harness
def test_standardisation_is_fitted_on_fit_split_only(tmp_path):
    paths, data = make_inputs(tmp_path)
    _, outputs = run_fold(tmp_path, paths, "ridge", 1, {"alphas": [1.0, 10.0]})
    trained = load_trained(outputs[0]["model"])
    fit_rows = rows_of(trained.metadata["fit_ids"], data)
    tensors, _ = load_checkpoint(outputs[0]["model"])
    np.testing.assert_allclose(tensors["standardizer.mean"].numpy(), data["text"][fit_rows].mean(axis=0), rtol=1e-5)
    assert not np.allclose(tensors["standardizer.mean"].numpy(), data["text"].mean(axis=0), rtol=1e-5, atol=1e-6)
    test_ids = set(trained.metadata["test_ids"])
    assert test_ids.isdisjoint(trained.metadata["fit_ids"]) and test_ids.isdisjoint(trained.metadata["validation_ids"])
    assert trained.metadata["missing_counts"] == {"text": 1, "brain": 1, "folds": 2, "articles": 2}


def test_each_repeat_uses_its_own_partition(tmp_path):
    paths, data = make_inputs(tmp_path, n=60, n_repeats=2)
    _, outputs = run_fold(tmp_path, paths, "ridge", 2, {"alphas": [1.0]}, repeats=(0, 1))
    folds = read_parquet(paths["folds_path"])
    for repeat in (0, 1):
        ids, _, _, _ = read_embeddings(outputs[repeat]["test_embeddings"])
        expected = folds[(folds["repeat"] == repeat) & (folds["fold"] == 2)]["article_id"]
        assert sorted(ids) == sorted(expected)
        validation, _, _, _ = read_embeddings(outputs[repeat]["validation_embeddings"])
        trained = load_trained(outputs[repeat]["model"])
        assert sorted(validation) == sorted(trained.metadata["validation_ids"])
        assert trained.metadata["repeat"] == repeat and trained.metadata["seed"] == repeat
    first, _, _, _ = read_embeddings(outputs[0]["test_embeddings"])
    second, _, _, _ = read_embeddings(outputs[1]["test_embeddings"])
    assert set(first) != set(second)


def test_neurocontext_and_ridge_recover_planted_pairs(tmp_path):
    paths, data = make_inputs(tmp_path, n=150)
    recipe = Recipe(batch_size=32, max_epochs=25, lr=3e-3, weight_decay=0.01, patience=None)
    for model, params in (("neurocontext", TINY), ("ridge", {"alphas": [0.1, 1.0]})):
        _, outputs = run_fold(tmp_path, paths, model, 0, params, recipe, tag=model)
        ids, text, brain, meta = read_embeddings(outputs[0]["test_embeddings"])
        scores = score_matrix(meta["kind"], text, brain, **{k: v for k, v in meta.items() if k != "kind"})
        recall_at_1 = np.mean(scores.argmax(axis=1) == np.arange(len(ids)))
        assert recall_at_1 > 10 / len(ids), (model, recall_at_1)  # chance is 1 / n
        trained = load_trained(outputs[0]["model"])
        rows = rows_of(ids, data)
        np.testing.assert_allclose(trained.embed_text(data["text"][rows]), text, atol=1e-5)
        np.testing.assert_allclose(trained.score(text, brain), scores, atol=1e-6)
        predicted = trained.predict_brain(data["text"][rows])
        assert predicted.shape == data["brain"][rows].shape
        assert np.corrcoef(predicted.ravel(), data["brain"][rows].ravel())[0, 1] > 0.8


def test_fold_all_writes_every_article_and_mnm_apex_is_recorded(tmp_path):
    paths, _ = make_inputs(tmp_path, n=60)
    recipe = Recipe(batch_size=32, max_epochs=2, lr=1e-3, patience=None)
    _, outputs = run_fold(tmp_path, paths, "mnm_reverse", "all", {"latent_dim": 8, "dropout": 0.0}, recipe)
    ids, text, brain, meta = read_embeddings(outputs[0]["test_embeddings"])
    assert len(ids) == 60 and meta["kind"] == "angle" and meta["angle_apex"] == "text"
    trained = load_trained(outputs[0]["model"])
    with torch.no_grad():
        reference = trained.module.score(torch.tensor(text), torch.tensor(brain)).numpy()
    np.testing.assert_allclose(trained.score(text, brain), reference, atol=1e-3)
    history = read_parquet(outputs[0]["history"])
    best = history.loc[history["is_best"]].iloc[0]
    assert meta["curvature"] == pytest.approx(best["curvature"], rel=1e-5)


# ----------------------------------------------------------------------------- snakemake
def test_one_fold_job_through_snakemake_touches_no_other_fold(tmp_path):
    from workflow_utils import make_project, snakemake

    project = make_project(tmp_path, {"folds": {"n_folds": 3, "n_repeats": 2}, "text": {"sections": ["title"]},
                                      "models": {"sections": ["title"], "tradeoff": {"lambda_hier": []}}})
    results = project / "results"
    paths, _ = make_inputs(tmp_path, n=60, n_repeats=2)
    layout = {
        "articles_path": results / "corpus/articles.parquet",
        "folds_path": results / "folds.parquet",
        "brain_path": results / "brain/aicha/coefficients.parquet",
        "text_path": results / "text/minilm/title/embeddings.parquet",
    }
    for key, target in layout.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(paths[key], target)
    run_dir = results / "models/ridge/minilm/title/aicha"
    target = run_dir / "repeat-1/fold-1/model.safetensors"
    snakemake(project, str(target.relative_to(project)), "--cores", "1", "--allowed-rules", "train_model",
              "--rerun-triggers", "mtime")
    # the job trained fold 1 of both repeats, and nothing else
    written = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
    assert written == sorted(f"repeat-{r}/fold-1/{name}" for r in (0, 1) for name in OUTPUT_FILES.values())
    assert sorted(p.name for p in (results / "models").iterdir()) == ["ridge"]
