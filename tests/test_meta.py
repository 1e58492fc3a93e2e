"""Meta-analysis of a query's articles (NiMARE ALE / MKDA) and its comparison with the model.

References: hand-made studies whose peaks cluster in one region (the meta-analysis must peak
there), numpy's correlation of the voxel values, and the files the query writes.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from mnm.atlas import analysis_mask
from mnm.cli import EXIT_BAD_INPUT, main
from mnm.meta import METHODS, cbma_maps, map_correlation

CLUSTER_MM = np.array([-40.0, 20.0, 30.0])  # left dorsolateral prefrontal cortex


@pytest.fixture(scope="module")
def mask_4mm():
    return analysis_mask(4)


def _clustered_studies(mask_img, n_studies=8, seed=0):
    """Each study: three peaks within 4 mm of CLUSTER_MM and one anywhere in the brain."""
    rng = np.random.default_rng(seed)
    brain = np.argwhere(np.asarray(mask_img.dataobj) > 0)
    rows = []
    for i in range(n_studies):
        near = CLUSTER_MM + rng.uniform(-4, 4, size=(3, 3))
        voxel = brain[rng.integers(len(brain))]
        anywhere = nib.affines.apply_affine(mask_img.affine, voxel)
        for xyz in [*near, anywhere]:
            rows.append({"article_id": f"s{i}", "table_id": "t", "x": xyz[0], "y": xyz[1], "z": xyz[2]})
    peaks = pd.DataFrame(rows)
    articles = pd.DataFrame({
        "article_id": [f"s{i}" for i in range(n_studies)], "title": "t", "abstract": "a",
        "body": None, "keywords": None, "pmid": pd.NA, "pmcid": pd.NA, "doi": None,
        "journal": None, "year": pd.NA, "source": "test"})
    return articles, peaks


@pytest.mark.parametrize("method", METHODS)
def test_meta_analysis_peaks_where_the_studies_cluster(mask_4mm, method):
    articles, peaks = _clustered_studies(mask_4mm)
    images, settings, _ = cbma_maps(articles, peaks, mask_4mm, method, fwhm_mm=9.0)
    z = images["z"].get_fdata()
    assert images["z"].shape == mask_4mm.shape and np.allclose(images["z"].affine, mask_4mm.affine)
    assert z.max() > 3.0
    # the top of the map (MKDA's overlapping spheres make a plateau) is centred on the cluster
    top = nib.affines.apply_affine(mask_4mm.affine, np.argwhere(z >= 0.9 * z.max()))
    assert np.linalg.norm(top.mean(axis=0) - CLUSTER_MM) <= 8.0  # two 4 mm voxels
    to_voxel = np.linalg.inv(mask_4mm.affine)
    centre = tuple(np.rint(nib.affines.apply_affine(to_voxel, CLUSTER_MM)).astype(int))
    assert z[centre] > 3.0
    # far from the cluster (right cerebellum) the map is near its null
    far = tuple(np.rint(nib.affines.apply_affine(to_voxel, [20, -70, -30])).astype(int))
    assert z[far] < 1.0
    p, logp = images["p"].get_fdata(), images["logp"].get_fdata()
    inside = np.asarray(mask_4mm.dataobj) > 0
    np.testing.assert_allclose(logp[inside], -np.log10(p[inside]), rtol=1e-4, atol=1e-5)
    assert settings["corrected"] is False


def test_meta_analysis_needs_two_studies(mask_4mm):
    from mnm.meta import MetaAnalysisError

    articles, peaks = _clustered_studies(mask_4mm, n_studies=1)
    with pytest.raises(MetaAnalysisError, match="at least 2 articles"):
        cbma_maps(articles, peaks, mask_4mm, "ale")


def test_map_correlation_is_pearson_over_the_mask_voxels():
    rng = np.random.default_rng(3)
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    a, b = rng.normal(size=(2, 9, 10, 11))
    b = b + 0.5 * a
    voxels = rng.random((9, 10, 11)) > 0.4
    r, n = map_correlation(nib.Nifti1Image(a, affine), nib.Nifti1Image(b, affine), voxels)
    assert n == voxels.sum()
    assert r == pytest.approx(np.corrcoef(a[voxels], b[voxels])[0, 1], abs=1e-12)
    # voxels outside the mask do not count
    a_out = a.copy()
    a_out[~voxels] = 1e6
    assert map_correlation(nib.Nifti1Image(a_out, affine), nib.Nifti1Image(b, affine), voxels)[0] == pytest.approx(r)
    assert map_correlation(nib.Nifti1Image(np.ones_like(a), affine), nib.Nifti1Image(b, affine), voxels)[0] == 0.0
    with pytest.raises(ValueError, match="not on the grid"):
        map_correlation(nib.Nifti1Image(a, np.diag([2.0, 2, 2, 1])), nib.Nifti1Image(b, affine), voxels)


@pytest.mark.e2e
def test_query_meta_analysis_writes_maps_beside_the_prediction(tiny_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tiny_run)
    out = tmp_path / "q"
    code = main(["query", "working memory load", "--top-k", "8", "--meta-analysis", "ale",
                 "--out", str(out), "--json", "--config", str(tiny_run / "config.yaml")])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    summary = payload["meta_analysis"]
    assert summary == json.loads((out / "meta_analysis.json").read_text())
    table = pd.read_csv(out / "articles.csv")
    assert summary["articles"] == table["article_id"].tolist()  # every article has peaks
    peaks = pd.read_parquet(tiny_run / "results/corpus/peaks.parquet")
    assert summary["n_peaks"] == peaks["article_id"].isin(table["article_id"]).sum()
    for name in ("meta_ale_z", "meta_ale_logp"):
        assert (out / f"{name}.nii.gz").is_file() and (out / f"{name}.png").stat().st_size > 1000
    z, decoder = nib.load(out / "meta_ale_z.nii.gz"), nib.load(out / "decoder.nii.gz")
    assert z.shape == decoder.shape and np.allclose(z.affine, decoder.affine)
    # the stored correlation, recomputed with numpy from the written maps: brain-mask voxels
    # of the run's grid that the atlas covers
    atlas = nib.load(tiny_run / "results/atlas/aicha/atlas.nii.gz")
    voxels = (np.asarray(atlas.dataobj) != 0).any(axis=-1)
    voxels &= np.asarray(analysis_mask(4).dataobj) > 0
    expected = np.corrcoef(z.get_fdata()[voxels], decoder.get_fdata()[voxels])[0, 1]
    assert summary["correlation_with_decoder_map"] == pytest.approx(expected, abs=1e-5)
    assert summary["correlation_voxels"] == voxels.sum()
    # the z map's maximum lies within the ALE kernel's reach of a retrieved article's peak
    data = z.get_fdata()
    top = nib.affines.apply_affine(z.affine, np.unravel_index(np.argmax(data), data.shape))
    retrieved = peaks[peaks["article_id"].isin(table["article_id"])][["x", "y", "z"]].to_numpy()
    assert np.linalg.norm(retrieved - top, axis=1).min() <= 8.0
    assert main(["query", "--map", str(out / "decoder.nii.gz"), "--meta-analysis", "ale",
                 "--out", str(tmp_path / "m"), "--config", str(tiny_run / "config.yaml")]) == EXIT_BAD_INPUT
    assert "needs a TEXT query" in capsys.readouterr().err
