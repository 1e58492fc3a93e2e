"""Meta-analysis of a query's articles (NiMARE ALE / MKDA) and its comparison with the model.

References: hand-made studies whose peaks cluster in one region (the meta-analysis must peak
there) and numpy's correlation of the voxel values. The same on a finished run (``mnm query
--meta-analysis``, the web page's ``meta=``): tests/test_serve.py, which has the run loaded.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from mnm.atlas import analysis_mask
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
    return _articles(n_studies), pd.DataFrame(rows)


def _articles(n_studies):
    """Corpus-table rows of studies ``s0``, ``s1``, ..."""
    return pd.DataFrame({
        "article_id": [f"s{i}" for i in range(n_studies)], "title": "t", "abstract": "a",
        "body": None, "keywords": None, "pmid": pd.NA, "pmcid": pd.NA, "doi": None,
        "journal": None, "year": pd.NA, "source": "test"})


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


@pytest.mark.parametrize("method", METHODS)
def test_kernel_sizes(mask_4mm, method):
    """Every study reports one peak at the same voxel centre, so the ALE value is
    1 - (1 - MA)^n with MA the Gaussian kernel of FWHM ``fwhm_mm`` (Turkeltaub et al. 2002),
    and the MKDA density counts the studies whose 10 mm sphere holds the voxel (Wager et al.
    2007; unweighted: the corpus has no sample sizes)."""
    n_studies, fwhm = 5, 9.0
    to_voxel = np.linalg.inv(mask_4mm.affine)
    centre = np.rint(nib.affines.apply_affine(to_voxel, CLUSTER_MM)).astype(int)
    peak = nib.affines.apply_affine(mask_4mm.affine, centre)
    peaks = pd.DataFrame({"article_id": [f"s{i}" for i in range(n_studies)], "table_id": "t",
                          "x": peak[0], "y": peak[1], "z": peak[2]})
    images, _, _ = cbma_maps(_articles(n_studies), peaks, mask_4mm, method, fwhm_mm=fwhm)
    stat = images["stat"].get_fdata()
    grid = np.indices(stat.shape).reshape(3, -1).T
    distance = np.linalg.norm(nib.affines.apply_affine(mask_4mm.affine, grid) - peak, axis=1)
    distance = distance.reshape(stat.shape)
    inside = np.asarray(mask_4mm.dataobj) > 0
    if method == "mkda":
        np.testing.assert_array_equal(stat[inside], n_studies * (distance[inside] <= 10.0))
        return
    modelled = 1 - (1 - stat) ** (1 / n_studies)  # each study's MA value
    sigma = fwhm / np.sqrt(8 * np.log(2))
    near = inside & (distance <= 8.0)  # within two voxels: where the kernel is not truncated
    ratio = modelled[near] / modelled[tuple(centre)]
    np.testing.assert_allclose(ratio, np.exp(-distance[near] ** 2 / (2 * sigma**2)), rtol=1e-3)


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
