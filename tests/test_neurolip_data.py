"""NeuroLIP data stage: generated fixture read by nilearn's real fetchers offline, connectomes,
folds, ROI atlas painting, metrics."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from mnm.neurolip import fetch
from mnm.neurolip.connectivity import connectomes, vector_to_matrix
from mnm.neurolip.data import build_dataset
from mnm.neurolip.fixture import FixtureSpec, read_planted_edges, write_fixture
from mnm.neurolip.folds import stratified_folds
from mnm.neurolip.metrics import edge_pattern, edge_recovery_auc, fairness_metrics
from mnm.neurolip.rois import RoiAtlas

TINY = FixtureSpec(n_subjects=48, n_regions=12, n_timepoints=80, n_sites=2, n_diagnosis_edges=2, n_sex_edges=2,
                   n_site_edges=1, zero_roi_share=0.1, seed=3)


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("generated_fixture")
    write_fixture(root, TINY, with_atlas=False)
    return root


def test_fixture_is_read_by_nilearns_fetcher_offline(fixture_root):
    # Exactly the layout fetch_abide_pcp builds: it finds every file and downloads nothing.
    assert (fixture_root / "ABIDE_pcp" / "Phenotypic_V1_0b_preprocessed1.csv").is_file()
    files = sorted((fixture_root / "ABIDE_pcp" / "cpac" / "nofilt_noglobal").glob("*_rois_cc200.1D"))
    assert len(files) == TINY.n_subjects and all("generated" in f.name for f in files)
    subjects, series = fetch.fetch_abide(fixture_root)
    assert list(subjects.columns) == fetch.SUBJECT_COLUMNS
    assert len(subjects) == TINY.n_subjects and subjects["generated"].all()
    assert subjects["subject_id"].str.contains("generated").all()
    assert set(subjects["sex"]) == {"male", "female"} and set(subjects["diagnosis"]) == {0, 1}
    assert all(s.shape == (TINY.n_timepoints, TINY.n_regions) for s in series)
    # The planted sex confound is there: more males among autism subjects.
    male = subjects["sex"].eq("male")
    assert male[subjects["diagnosis"] == 1].mean() > male[subjects["diagnosis"] == 0].mean() + 0.2


def test_fixture_plants_the_edges_it_says(fixture_root):
    subjects, series = fetch.fetch_abide(fixture_root)
    vectors, valid = connectomes(series)
    matrices = vector_to_matrix(vectors)
    planted = read_planted_edges(fixture_root)
    assert planted["generated"].all()

    def gap(effect, group):
        edges = planted[planted["effect"] == effect][["region_a", "region_b"]].to_numpy()
        values = matrices[:, edges[:, 0], edges[:, 1]].mean(1)
        return values[group].mean() - values[~group].mean()

    autism = subjects["diagnosis"].to_numpy() == 1
    male = subjects["sex"].to_numpy() == "male"
    upper = np.triu_indices(TINY.n_regions, 1)
    planted_edge = np.zeros((TINY.n_regions, TINY.n_regions), bool)
    planted_edge[planted["region_a"], planted["region_b"]] = True
    background = matrices[:, upper[0], upper[1]][:, ~planted_edge[upper]].mean(1)
    background_gap = abs(background[autism].mean() - background[~autism].mean())
    assert gap("diagnosis", autism) > 0.04 and gap("sex", male) > 0.1
    assert gap("diagnosis", autism) > 4 * background_gap
    assert (~valid).any()  # some generated subjects have an empty ROI, as real PCP tables do


def test_connectomes_match_nilearn_and_mask_constant_rois():
    from nilearn.connectome import ConnectivityMeasure

    rng = np.random.default_rng(0)
    series = [rng.standard_normal((50, 6)) for _ in range(4)]
    vectors, valid = connectomes(series)
    reference = ConnectivityMeasure(kind="correlation", standardize="zscore_sample").fit_transform(series)
    np.testing.assert_allclose(vector_to_matrix(vectors), reference - np.eye(6), atol=1e-6)
    assert valid.all()
    series[1][:, 2] = 0.0
    vectors, valid = connectomes(series)
    matrices = vector_to_matrix(vectors)
    assert not valid[1, 2] and valid.sum() == 23
    assert (matrices[1, 2] == 0).all() and (matrices[1, :, 2] == 0).all()
    np.testing.assert_allclose(matrices[0], reference[0] - np.eye(6), atol=1e-6)  # others untouched
    with pytest.raises(ValueError, match="different numbers of ROIs"):
        connectomes([series[0], series[1][:, :5]])


def test_folds_are_subject_level_stratified_and_order_free():
    rng = np.random.default_rng(1)
    subjects = pd.DataFrame({"subject_id": [f"s{i:03d}" for i in range(120)],
                             "diagnosis": rng.integers(0, 2, 120), "site": rng.choice(["A", "B", "C"], 120)})
    folds = stratified_folds(subjects, 4, seed=0)
    assert folds["subject_id"].is_unique and set(folds["subject_id"]) == set(subjects["subject_id"])
    merged = subjects.merge(folds, on="subject_id")
    for _, stratum in merged.groupby(["diagnosis", "site"]):
        counts = stratum["fold"].value_counts().reindex(range(4), fill_value=0)
        assert counts.max() - counts.min() <= 1
    shuffled = stratified_folds(subjects.sample(frac=1, random_state=5), 4, seed=0)
    pd.testing.assert_frame_equal(folds, shuffled)
    with pytest.raises(ValueError, match="duplicated subject ids"):
        stratified_folds(pd.concat([subjects, subjects.head(1)]), 4)


def test_abide_codes_and_offline_error(tmp_path, monkeypatch):
    table = pd.DataFrame({"FILE_ID": ["a"], "DX_GROUP": [3], "SEX": [1], "SITE_ID": ["X"], "AGE_AT_SCAN": [9.0]})
    with pytest.raises(ValueError, match="DX_GROUP"):
        fetch.abide_subjects(table, where="pheno.csv")

    def offline(**kwargs):
        raise OSError("Name or service not known")

    import nilearn.datasets

    monkeypatch.setattr(nilearn.datasets, "fetch_abide_pcp", offline)
    with pytest.raises(FileNotFoundError, match="Phenotypic_V1_0b_preprocessed1.csv") as info:
        fetch.fetch_abide(tmp_path)
    assert "nofilt_noglobal/<FILE_ID>_rois_cc200.1D" in str(info.value)


def _adhd_cache(root, ids, labels):
    """nilearn's fetch_adhd layout: adhd/<csv> and adhd/data/<id>/<id>_{rest...,regressors}."""
    rng = np.random.default_rng(0)
    folder = root / "adhd"
    (folder / "data").mkdir(parents=True)
    pd.DataFrame({"Subject": [int(i) for i in ids], "adhd": [1, 0, 1], "sex": ["M", "F", "F"],
                  "site": ["NYU", "NYU", "OHSU"], "age": [9.5, 12.0, 20.0]}).to_csv(
        folder / "ADHD200_40subs_motion_parameters_and_phenotypics.csv", index=False)
    for i in ids:
        (folder / "data" / i).mkdir()
        data = rng.standard_normal(labels.shape + (30,)).astype(np.float32)
        nib.save(nib.Nifti1Image(data, np.diag([4.0, 4, 4, 1])), folder / "data" / i / f"{i}_rest_tshift_RPI_voreg_mni.nii.gz")
        motion = pd.DataFrame(rng.standard_normal((30, 3)), columns=["motion_x", "motion_y", "motion_z"])
        motion.to_csv(folder / "data" / i / f"{i}_regressors.csv", index=False, sep="\t")


def test_adhd_time_series_through_nilearns_fetcher_offline(tmp_path):
    labels = np.zeros((6, 6, 6), dtype=np.int16)
    labels[:3, :3, :3], labels[3:, 3:, 3:], labels[:2, 4:, :2] = 2, 5, 9
    atlas = nib.Nifti1Image(labels, np.diag([4.0, 4, 4, 1]))
    ids = ["0010042", "0010064", "0010128"]  # nilearn's first three, zero-led as in its file names
    _adhd_cache(tmp_path, ids, labels)
    subjects, series = fetch.fetch_adhd_time_series(tmp_path, atlas, n_subjects=3)
    assert subjects["subject_id"].tolist() == ids
    assert subjects["diagnosis"].tolist() == [1, 0, 1] and subjects["sex"].tolist() == ["male", "female", "female"]
    assert all(s.shape == (30, 3) for s in series)
    np.testing.assert_allclose(series[0].std(0), 1.0, rtol=0.05)  # z-scored by the masker


def test_build_dataset_writes_parquet_outputs(fixture_root, tmp_path):
    out = tmp_path / "data"
    build_dataset("generated", fixture_root, out, abide={}, adhd={}, n_folds=3)
    subjects = pd.read_parquet(out / "subjects.parquet")
    connectivity = pd.read_parquet(out / "connectivity.parquet")
    folds = pd.read_parquet(out / "folds.parquet")
    assert subjects["generated"].all() and len(connectivity) == len(subjects) == len(folds)
    assert len(connectivity["connectivity"].iloc[0]) == TINY.n_regions * (TINY.n_regions - 1) // 2
    assert pd.read_parquet(out / "planted.parquet")["generated"].all()
    assert pd.read_parquet(out / "regions.parquet")["name"].iloc[0] == "ROI 1"


def test_roi_atlas_paint_and_region_means_round_trip():
    codes = np.zeros((5, 5, 5), dtype=np.int16)
    codes[:2], codes[3:, :2], codes[3:, 3:] = 7, 3, 11  # labels 3, 7, 11 -> ROI columns 0, 1, 2
    atlas = RoiAtlas(nib.Nifti1Image(codes, np.eye(4)), pd.DataFrame({"index": [7], "name": ["seven"]}))
    assert atlas.names == ["ROI 3", "seven", "ROI 11"]
    painted = atlas.paint([0.5, 2.0, -1.0]).get_fdata()
    assert painted[0, 0, 0] == 2.0 and painted[4, 0, 0] == 0.5 and painted[4, 4, 4] == -1.0 and painted[2, 2, 2] == 0
    np.testing.assert_allclose(atlas.region_means(atlas.paint([0.5, 2.0, -1.0])), [0.5, 2.0, -1.0], atol=1e-6)
    with pytest.raises(ValueError, match="2 values for 3 ROIs"):
        atlas.paint([1.0, 2.0])


def test_fairness_metrics_against_hand_formula():
    y = np.array([1, 1, 0, 0, 1, 0, 0, 1])
    pred = np.array([1, 0, 0, 1, 1, 0, 1, 1])
    sex = np.array(["f", "f", "f", "f", "m", "m", "m", "m"])
    # selection rate f 2/4, m 3/4 -> DP 0.25. TPR f 1/2, m 2/2 -> 0.5; FPR f 1/2, m 1/2 -> 0. EO 0.5
    got = fairness_metrics(y, pred, {"sex": sex})
    assert got == pytest.approx({"dp_sex": 0.25, "eo_sex": 0.5})


def test_edge_pattern_recovers_edges_driving_a_score():
    rng = np.random.default_rng(0)
    connectivity = rng.standard_normal((200, 5, 5))
    connectivity = (connectivity + connectivity.transpose(0, 2, 1)) / 2
    logit = 2.0 * connectivity[:, 1, 3] + 0.3 * rng.standard_normal(200)
    pattern = edge_pattern(connectivity, 1 / (1 + np.exp(-logit)))
    assert pattern[1, 3] == pytest.approx(np.corrcoef(connectivity[:, 1, 3], logit)[0, 1], abs=1e-4)
    planted = pd.DataFrame({"effect": ["diagnosis"], "region_a": [1], "region_b": [3]})
    assert edge_recovery_auc(pattern, planted) == 1.0


def test_neurolip_target_dag(tmp_path):
    from workflow_utils import make_project, snakemake

    project = make_project(tmp_path, {"neurolip": {"n_folds": 2, "variants": ["full", "no_fairness"]}})
    plan = snakemake(project, "-n", "neurolip", "--quiet", "rules").stdout
    counts = dict(line.split()[:2] for line in plan.splitlines() if line.startswith("neurolip"))
    assert counts == {"neurolip_fixture": "1", "neurolip_data": "1", "neurolip_texts": "1", "neurolip_train": "4",
                      "neurolip_baseline": "2", "neurolip_report": "1", "neurolip": "1"}, plan
