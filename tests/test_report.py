"""mnm.report: Table-1 aggregation, hierarchy analysis, map painting and a full report build
on synthetic per-fold outputs."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mnm.io import write_parquet
from mnm.report import figures, hierarchy, index, map_eval, maps, poincare, retrieval

MODELS = ["mnm", "mnm_no_hier", "neurocontext"]
SECTIONS = ["title", "abstract"]
N_FOLDS = 5


N_REPEATS = 2


def fold_dir(root, model, section, fold, repeat=0, atlas="aicha"):
    base = Path(root) / "models" / model / "minilm" / section / atlas
    return base / f"fold-{fold}" if fold == "all" else base / f"repeat-{repeat}" / f"fold-{fold}"


def synthetic_per_fold(seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for model in MODELS:
        for section in SECTIONS:
            for repeat in range(N_REPEATS):
                for fold in range(N_FOLDS):
                    for direction in ("text_to_brain", "brain_to_text"):
                        for metric, k in (("recall", 1), ("recall", 10), ("mix_and_match", 0)):
                            chance = 0.5 if metric == "mix_and_match" else k / 64
                            rows.append((model, section, "aicha", repeat, fold, direction, metric, k,
                                         rng.uniform(), chance, chance + 0.01))
    return pd.DataFrame(rows, columns=["model", "section", "atlas", "repeat", "fold", "direction", "metric", "k",
                                       "value", "chance", "control"])


def test_summarise_folds_matches_numpy():
    per_fold = synthetic_per_fold()
    summary = retrieval.summarise_folds(per_fold)
    assert len(summary) == len(MODELS) * len(SECTIONS) * 2 * 3
    for row in summary.sample(10, random_state=0).itertuples():
        values = per_fold[(per_fold.model == row.model) & (per_fold.section == row.section)
                          & (per_fold.direction == row.direction) & (per_fold.metric == row.metric)
                          & (per_fold.k == row.k)]["value"].to_numpy()
        assert row.mean == pytest.approx(np.mean(values))
        assert row.std == pytest.approx(np.std(values, ddof=1))
        assert row.n_folds == N_FOLDS * N_REPEATS


def test_table1_markdown_bolds_column_best():
    per_fold = synthetic_per_fold()
    summary = retrieval.summarise_folds(per_fold)
    text = retrieval.table1_markdown(summary, models_order=MODELS)
    header = next(line for line in text.splitlines() if line.startswith("| model"))
    assert "title text→brain R@1" in header and "abstract brain→text Mix&Match" in header
    lines = [line for line in text.splitlines() if line.startswith("| mnm |")]
    assert len(lines) == 1
    # for one column, the bold model is the argmax of the fold means
    col = summary[(summary.section == "title") & (summary.direction == "text_to_brain")
                  & (summary.metric == "recall") & (summary.k == 1)]
    best = col.loc[col["mean"].idxmax(), "model"]
    best_line = next(line for line in text.splitlines() if line.startswith(f"| {best} |"))
    assert best_line.split("|")[2].strip().startswith("**")
    assert f"{100 * col['mean'].max():.1f}" in best_line


def test_paired_comparison_corrected_interval_and_wilcoxon():
    per_fold = synthetic_per_fold(seed=1)
    comparison = retrieval.paired_comparison(per_fold, "mnm", "neurocontext")
    row = comparison.query("section == 'abstract' and direction == 'brain_to_text' "
                           "and metric == 'recall' and k == 10").iloc[0]
    select = ((per_fold.section == "abstract") & (per_fold.direction == "brain_to_text")
              & (per_fold.metric == "recall") & (per_fold.k == 10))
    a = per_fold[select & (per_fold.model == "mnm")].sort_values(["repeat", "fold"])["value"].to_numpy()
    b = per_fold[select & (per_fold.model == "neurocontext")].sort_values(["repeat", "fold"])["value"].to_numpy()
    d = a - b
    assert row.n_pairs == N_FOLDS * N_REPEATS
    assert row.mean_difference == pytest.approx(np.mean(d))
    assert row.wilcoxon_p == pytest.approx(stats.wilcoxon(a, b).pvalue)
    # Nadeau & Bengio: var = (1/J + n_test/n_train) s^2, n_test/n_train = 1/(k-1) for k folds
    J = len(d)
    se = np.sqrt((1 / J + 1 / (N_FOLDS - 1)) * np.var(d, ddof=1))
    half = stats.t.ppf(0.975, J - 1) * se
    assert (row.ci_low, row.ci_high) == pytest.approx((d.mean() - half, d.mean() + half))
    assert row.t_p == pytest.approx(2 * stats.t.sf(abs(d.mean()) / se, J - 1))
    # the corrected interval is wider than the naive t interval
    naive = stats.t.ppf(0.975, J - 1) * np.std(d, ddof=1) / np.sqrt(J)
    assert row.ci_high - row.ci_low > 2 * naive


def test_fold_metrics_control_is_at_chance_and_model_above():
    rng = np.random.default_rng(3)
    n = 60
    scores = rng.normal(size=(n, n)) + 3 * np.eye(n)  # a model that knows its pairs
    frame = retrieval.fold_metrics(scores, [1, 10], n_permutations=50)
    recall10 = frame.query("metric == 'recall' and k == 10 and direction == 'text_to_brain'").iloc[0]
    assert recall10.value > 0.8 and recall10.chance == pytest.approx(10 / n)
    assert recall10.control == pytest.approx(10 / n, abs=0.05)  # the shuffled pairing is at chance
    mix = frame.query("metric == 'mix_and_match' and direction == 'brain_to_text'").iloc[0]
    assert mix.control == pytest.approx(0.5, abs=0.03)


def test_parse_fold_path():
    keys = retrieval.parse_fold_path("results/models/mnm/minilm/title/aicha/repeat-2/fold-3/metrics.parquet")
    assert keys == {"model": "mnm", "encoder": "minilm", "section": "title", "atlas": "aicha",
                    "repeat": "2", "fold": "3"}
    keys = retrieval.parse_fold_path("results/models/mnm/minilm/title/aicha/fold-all/model.safetensors")
    assert keys["fold"] == "all" and keys["repeat"] is None
    with pytest.raises(ValueError, match="per-fold path"):
        retrieval.parse_fold_path("results/metrics.parquet")


def test_hierarchy_tau_and_top_k_differs_against_hand_values():
    rng = np.random.default_rng(0)
    radius = rng.uniform(0.1, 2, 40)
    points = pd.DataFrame({"model": "mnm", "section": "title", "atlas": "aicha", "repeat": 0,
                           "fold": np.repeat([0, 1], 20),
                           "brain_radius": radius, "n_active": rng.integers(0, 5, 40)})
    table = hierarchy.hierarchy_table(points)
    pooled = table.query("fold == 'pooled'").iloc[0]
    assert pooled.tau == pytest.approx(stats.kendalltau(radius, points.n_active).statistic)
    fold0 = table.query("fold == 'r0f0'").iloc[0]
    assert fold0.tau == pytest.approx(stats.kendalltau(radius[:20], points.n_active[:20]).statistic)
    # top-10 differs: scores equal to cosine never differ; reversed scores always do (n > 20)
    text, brain = rng.normal(size=(25, 4)), rng.normal(size=(25, 4))
    cosine = (text / np.linalg.norm(text, axis=1, keepdims=True)) @ (
        brain / np.linalg.norm(brain, axis=1, keepdims=True)).T
    assert not hierarchy.top_k_differs(cosine, text, brain, 10).any()
    assert hierarchy.top_k_differs(-cosine, text, brain, 10).all()


def test_poincare_disk_keeps_distance_to_origin():
    rng = np.random.default_rng(1)
    space = rng.normal(size=(30, 8)) * 0.5
    c = 1.7
    disk = hierarchy.poincare_disk_coordinates(space, c)
    assert disk.shape == (30, 2)
    radius = np.linalg.norm(disk, axis=1)
    assert np.all(radius < 1)
    # unit-disk radius r <-> distance (2 / sqrt(c)) artanh(r); Lorentz: asinh(sqrt(c)|x|) / sqrt(c)
    expected = np.arcsinh(np.sqrt(c) * np.linalg.norm(space, axis=1)) / np.sqrt(c)
    np.testing.assert_allclose(2 / np.sqrt(c) * np.arctanh(radius), expected, rtol=1e-6)


def tiny_atlas():
    """A 4D atlas of 4 disjoint boxes on a 2 mm grid; two levels (2 halves, 4 boxes)."""
    shape = (8, 6, 4)
    maps = np.zeros(shape + (4,), dtype=np.float32)
    for i in range(4):
        maps[2 * i:2 * i + 2, :, :, i] = 1.0
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    components = pd.DataFrame({"index": range(4), "label": list("abcd"),
                               "level_1": ["L", "L", "R", "R"], "level_2": list("abcd")})
    return nib.Nifti1Image(maps, affine), components


class CosineModel:
    """Stand-in trained model: identity brain encoder, cosine scores."""

    def embed_brain(self, coefficients):
        return np.asarray(coefficients, dtype=np.float32)

    def score(self, text, brain):
        text = text / np.linalg.norm(text, axis=1, keepdims=True)
        brain = brain / np.linalg.norm(brain, axis=1, keepdims=True)
        return text @ brain.T


def test_parcel_route_paints_softmax_weights():
    maps_img, components = tiny_atlas()
    names, parcel_of = maps.parcel_assignment(components, "level_1")
    assert names == ["L", "R"] and parcel_of.tolist() == [0, 0, 1, 1]
    labels = maps.parcel_label_volume(maps_img, parcel_of)
    assert (labels[:4] == 0).all() and (labels[4:] == 1).all()
    _, coefs = maps.parcel_coefficients(maps_img, components, "level_1")
    np.testing.assert_array_equal(coefs, [[1, 1, 0, 0], [0, 0, 1, 1]])
    model = CosineModel()
    text = np.array([1.0, 0.0, 0.0, 0.0])
    img = maps.predict_parcel_map(model, text, maps.parcel_embeddings(model, coefs), labels,
                                  maps_img.affine)
    # cosine scores: L = 1/sqrt(2), R = 0 -> softmax by hand
    w_left = np.exp(1 / np.sqrt(2)) / (np.exp(1 / np.sqrt(2)) + 1)
    data = img.get_fdata()
    np.testing.assert_allclose(data[0, 0, 0], w_left, rtol=1e-6)
    np.testing.assert_allclose(data[7, 5, 3], 1 - w_left, rtol=1e-6)
    assert maps.informative_levels(components) == ["level_2"]


def write_test_embeddings(path, ids, text, brain, n_active, kind, curvature):
    from mnm.scoring import write_embeddings

    write_embeddings(path, ids, text, brain, n_active, kind, None if np.isnan(curvature) else curvature,
                     "brain" if kind == "angle" else "")


def test_report_build_on_synthetic_folds(tmp_path):
    rng = np.random.default_rng(0)
    n_articles, dim = 60, 8
    ids = np.array([f"a{i:03d}" for i in range(n_articles)])
    n_active = rng.integers(1, 20, n_articles)
    write_parquet(pd.DataFrame({"article_id": ids, "n_active": n_active}), tmp_path / "coefficients.parquet")
    fold_of = np.arange(n_articles) % N_FOLDS
    metric_paths, test_paths = [], []
    # one section (two are covered above) and 15 test sets, the default run's count: with
    # fewer than 14 pairs (and ties) scipy's Wilcoxon test enumerates every sign flip
    n_repeats = 3
    for model, section, atlas in [(m, s, a) for m in MODELS for s in ["abstract"] for a in ("aicha", "yeo7")]:
        kind = "cosine" if model == "neurocontext" else "angle"
        for repeat in range(n_repeats):
                for fold in range(N_FOLDS):
                    rows = fold_of == fold
                    brain = rng.normal(size=(rows.sum(), dim)) / (1 + n_active[rows, None] / 5)
                    text = brain + rng.normal(scale=0.3, size=brain.shape)
                    if kind == "cosine":
                        text /= np.linalg.norm(text, axis=1, keepdims=True)
                        brain /= np.linalg.norm(brain, axis=1, keepdims=True)
                    folder = fold_dir(tmp_path, model, section, fold, repeat, atlas)
                    write_test_embeddings(folder / "test_embeddings.parquet", ids[rows], text, brain,
                                          n_active[rows], kind, 1.0 if kind == "angle" else np.nan)
                    metric_paths.append(folder / "metrics.parquet")
                    test_paths.append(folder / "test_embeddings.parquet")
    report = tmp_path / "report"
    summary = retrieval.evaluate_retrieval(
        test_paths, metric_paths, report / "retrieval.parquet", report / "retrieval.md",
        report / "retrieval_comparison.parquet", [1, 5, 100], models_order=MODELS)
    assert set(pd.read_parquet(metric_paths[0])["k"]) == {0, 1, 5}  # K=100 > 12 candidates dropped
    assert (summary.query("metric == 'recall' and k == 1")["mean"] > 1 / 12).all()
    comparison = pd.read_parquet(report / "retrieval_comparison.parquet")
    assert set(zip(comparison["model"], comparison["baseline"])) == {("mnm", "neurocontext"), ("mnm", "mnm_no_hier")}
    figures.recall_bars(summary, report / "figures" / "recall.png", MODELS)
    table = hierarchy.write_hierarchy_report(
        test_paths, report / "hierarchy.parquet", report / "geometry.parquet", report / "hierarchy_points.parquet",
        report / "figures" / "hierarchy.png", report / "figures" / "radii.png")
    assert set(table["model"]) == {"mnm", "mnm_no_hier"}  # the Euclidean model is skipped
    assert set(table["atlas"]) == {"aicha", "yeo7"}
    assert (table.query("fold == 'pooled'")["tau"] < 0).all()  # built in: more active -> nearer
    geometry = pd.read_parquet(report / "geometry.parquet")
    assert set(geometry["modality"]) == {"brain", "text"} and (geometry["radius_cv"] > 0).all()
    (report / "map_prediction.md").write_text("# Map prediction\n\nnone\n")
    figure_paths = [report / "figures" / name for name in ("recall.png", "hierarchy.png", "radii.png")]
    index.write_index(report / "index.md", report / "retrieval.md",
                      [report / "retrieval.parquet", report / "retrieval_comparison.parquet"],
                      report / "hierarchy.parquet", report / "geometry.parquet", report / "map_prediction.md",
                      figure_paths)
    page = (report / "index.md").read_text()
    for path in figure_paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"figures/{path.name}" in page
    assert "](retrieval.parquet)" in page and "Nadeau" in page and "mnm_no_hier" in page
    assert page.count("| shuffled pairs (control) |") == 2  # one Table 1 per atlas
    assert "## Atlas aicha" in page and "## Atlas yeo7" in page


def write_tiny_pipeline_outputs(root: Path, n_articles: int = 40, seed: int = 0):
    """Atlas, peaks, coefficients, text features, folds and articles of a tiny synthetic corpus.

    The atlas has 6 boxes (2 mm grid, inside the MNI brain) with two levels: 3 pairs and 6
    boxes. Each article has peaks in one or two boxes and a text vector that is a noisy linear
    function of its coefficients, so text predicts where its peaks are.
    """
    from mnm.atlas import write_atlas
    from mnm.brain import BrainProjector
    from mnm.folds import assign_repeated_folds
    from mnm.io import write_matrix

    rng = np.random.default_rng(seed)
    shape, n_boxes = (18, 8, 6), 6
    maps = np.zeros(shape + (n_boxes,), dtype=np.float32)
    for i in range(n_boxes):
        maps[3 * i:3 * i + 3, :, :, i] = 1.0
    affine = np.array([[2, 0, 0, -18], [0, 2, 0, -30], [0, 0, 2, 0], [0, 0, 0, 1]], dtype=float)
    maps_img = nib.Nifti1Image(maps, affine)
    components = pd.DataFrame({"index": range(n_boxes), "label": [f"box{i}" for i in range(n_boxes)],
                               "level_1": [f"pair{i // 2}" for i in range(n_boxes)],
                               "level_2": [f"box{i}" for i in range(n_boxes)]})
    atlas_dir = root / "atlas" / "tiny"
    write_atlas(maps_img, components, atlas_dir / "atlas.nii.gz", atlas_dir / "components.parquet")
    ids = [f"a{i:03d}" for i in range(n_articles)]
    rows = []
    for article in ids:
        for box in rng.choice(n_boxes, size=rng.integers(1, 3), replace=False):
            centre = affine @ np.array([3 * box + 1, 4, 3, 1])
            rows.append((article, "t1", *(centre[:3] + rng.normal(scale=1.0, size=3))))
    peaks = pd.DataFrame(rows, columns=["article_id", "table_id", "x", "y", "z"])
    write_parquet(peaks, root / "peaks.parquet")
    _, coefs = BrainProjector(maps_img, fwhm_mm=6.0).fit().transform_peaks(peaks, ids)
    n_active = (coefs > 0.2 * coefs.max()).sum(axis=1)
    write_matrix(root / "coefficients.parquet", ids, coefs, column="coefficients",
                 extra={"n_peaks": peaks.groupby("article_id").size().loc[ids].to_numpy(),
                        "n_active": n_active})
    text = coefs @ rng.normal(size=(n_boxes, 10)) + 0.01 * rng.normal(size=(n_articles, 10))
    write_matrix(root / "text.parquet", ids, text)
    write_parquet(assign_repeated_folds(ids, 2, 1, seed), root / "folds.parquet")
    write_parquet(pd.DataFrame({"article_id": ids, "title": ids, "abstract": ids}),
                  root / "articles.parquet")
    return atlas_dir


def test_map_prediction_and_poincare_with_trained_models(tmp_path):
    from mnm.train import OUTPUT_FILES, train_fold
    from mnm.training.loop import Recipe

    atlas_dir = write_tiny_pipeline_outputs(tmp_path)
    tiny = {"mnm": {"latent_dim": 8, "dropout": 0.0, "lambda_hier": 30.0}, "ridge": {"alphas": [1.0, 10.0]}}
    recipe = Recipe(batch_size=32, max_epochs=3, lr=1e-3, patience=None)
    model_paths, test_paths = [], []
    for model, params in tiny.items():
        for fold in (["0", "all"] if model == "mnm" else ["0", "1"]):
            folder = fold_dir(tmp_path, model, "title", fold)
            outputs = {0: {key: folder / name for key, name in OUTPUT_FILES.items()}}
            train_fold(model, tmp_path / "text.parquet", tmp_path / "coefficients.parquet",
                       tmp_path / "folds.parquet", tmp_path / "articles.parquet", "title", fold,
                       dict(params), recipe, outputs, device="cpu", encoder="minilm", atlas="aicha")
            if fold != "all":
                model_paths.append(outputs[0]["model"])
                test_paths.append(outputs[0]["test_embeddings"])
    report = tmp_path / "report"
    examples = [report / "figures" / "map_example_0.png"]
    summary = map_eval.evaluate_map_prediction(
        model_paths, test_paths, atlas_dir, tmp_path / "peaks.parquet",
        {"title": tmp_path / "text.parquet"}, tmp_path / "articles.parquet",
        report / "map_dice.parquet", report / "map_prediction.parquet",
        report / "map_prediction.md", example_figures=examples, example_dir=report / "maps",
        fractions=[0.1, 0.2, 0.3], fwhm_mm=6.0, articles_per_fold=5)
    dice = pd.read_parquet(report / "map_dice.parquet")
    assert set(dice["route"]) == {"parcel", "decoder"}
    assert set(dice["level"]) == {"level_1", "level_2", "atlas"}
    assert set(dice["kind"]) == {"model", "shuffled articles", "random map"}
    assert dice["dice"].between(0, 1).all()
    # model-folds x articles x (2 levels + decoder) x fractions, for the model and each control
    assert (dice["kind"] == "model").sum() == 3 * 5 * 3 * 3 and len(dice) == 3 * len(dice[dice.kind == "model"])
    # the summary's AUC equals the trapezoid of each article's curve, averaged
    one = dice[(dice.model == "ridge") & (dice.route == "decoder") & (dice.kind == "model")]
    areas = one.groupby(["fold", "article_id"]).apply(
        lambda g: np.trapezoid(g.sort_values("fraction")["dice"], np.sort(g["fraction"])),
        include_groups=False)
    row = summary[(summary.model == "ridge") & (summary.route == "decoder") & (summary.kind == "model")].iloc[0]
    assert row.dice_auc_mean == pytest.approx(areas.mean())
    # the decoder reproduces the planted text -> peaks relation: it beats both chance controls
    for kind in ("shuffled articles", "random map"):
        control = summary[(summary.model == "ridge") & (summary.route == "decoder") & (summary.kind == kind)]
        assert row.dice_auc_mean > control["dice_auc_mean"].iloc[0] + 0.01, kind
    # a random map's expected Dice is the top fraction itself: AUC = integral of f over [0.1, 0.3]
    random = summary[(summary.kind == "random map")]["dice_auc_mean"]
    assert random.mean() == pytest.approx(0.5 * (0.3**2 - 0.1**2), rel=0.25)
    for path in examples:
        assert path.read_bytes()[:4] == b"\x89PNG"
    assert any((report / "maps").glob("*.nii.gz"))
    assert "shuffled articles" in (report / "map_prediction.md").read_text()
    figure = report / "figures" / "poincare_disk.png"
    poincare.write_poincare_figure({"mnm": fold_dir(tmp_path, "mnm", "title", "all") / "model.safetensors"},
                               atlas_dir, tmp_path / "coefficients.parquet", figure, fwhm_mm=6.0)
    assert figure.read_bytes()[:4] == b"\x89PNG"


def test_tradeoff_selection_uses_validation_only():
    from mnm.report.tradeoff import select_point, tradeoff_markdown

    rows = []
    for head in ("free", "pinned"):
        for lam, val_recall, val_tau, test_recall in ((0.0, 0.40, 0.1, 0.40), (1.0, 0.35, -0.6, 0.20),
                                                      (3.0, 0.30, -0.8, 0.50), (10.0, 0.35, -0.9, 0.10)):
            for fold in range(2):
                rows.append({"head": head, "lambda_hier": lam, "fold": fold, "test_recall_at_10": test_recall,
                             "test_tau": val_tau, "test_brain_radius_cv": 0.1, "test_top10_differs": 0.5,
                             "val_mean_recall": val_recall + (0.2 if head == "pinned" else 0), "val_tau": val_tau})
    points = pd.DataFrame(rows)
    # qualifying free points: 1 (0.35), 3 (0.30), 10 (0.35): best validation recall, tie -> smaller lambda;
    # the test column (which would prefer 3) is never looked at
    assert select_point(points, -0.5, "val_mean_recall") == {"lambda_hier": 1.0, "val_metric": pytest.approx(0.35),
                                                            "val_tau": pytest.approx(-0.6)}
    assert select_point(points, -0.95, "val_mean_recall") is None
    summary = points.groupby(["head", "lambda_hier"]).agg(
        recall_mean=("test_recall_at_10", "mean"), recall_std=("test_recall_at_10", "std"),
        tau_mean=("test_tau", "mean"), tau_std=("test_tau", "std"), cv_mean=("test_brain_radius_cv", "mean"),
        differs_mean=("test_top10_differs", "mean"), val_tau_mean=("val_tau", "mean")).reset_index()
    selection = pd.DataFrame([{"fold": "all folds (mean)", "lambda_hier": 1.0, "val_metric": 0.35, "val_tau": -0.6},
                              {"fold": "0", "lambda_hier": 1.0, "val_metric": 0.35, "val_tau": -0.6}])
    text = tradeoff_markdown(summary, selection, {"mean": 0.3, "std": 0.05}, 30.0, -0.5, "val_mean_recall")
    assert "picks lambda_hier = 1" in text and "the rule would pick 1" in text


def test_parcel_vectors_through_the_projector_match_hand_values():
    """Disjoint boxes: the least-squares projection of a parcel mask is its indicator."""
    from mnm.brain import BrainProjector

    maps_img, components = tiny_atlas()
    full_mask = nib.Nifti1Image(np.ones(maps_img.shape[:3], np.uint8), maps_img.affine)
    projector = BrainProjector(maps_img, fwhm_mm=4.0, mask_img=full_mask).fit()
    labels = maps.component_label_volume(maps_img, projector)
    np.testing.assert_array_equal(labels, maps.component_label_volume(maps_img))
    _, coefs = maps.parcel_coefficients(maps_img, components, "level_1", projector)
    np.testing.assert_allclose(coefs, [[1, 1, 0, 0], [0, 0, 1, 1]], atol=1e-6)
