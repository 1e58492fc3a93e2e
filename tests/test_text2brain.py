"""Text2Brain baseline: decoder grid, coarse KDE maps against the dense reference, learning."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from mnm.atlas import analysis_mask
from mnm.kde_maps import COARSE_AFFINE, COARSE_SHAPE, coarse_kde, coarse_mask, compute_kde_maps, read_kde_maps
from mnm.models.text2brain import Text2Brain, decoder_output_shape
from test_mnm_model import single_thread  # noqa: F401  (fixture: one torch thread)


@pytest.fixture(scope="module")
def mask_4mm():
    return coarse_mask()


def test_decoder_output_is_text2brains_4mm_grid(mask_4mm):
    """Output volume, mask voxels and affine: the crop of the MNI152 4 mm grid Text2Brain fills."""
    mask = np.asarray(mask_4mm.dataobj) > 0
    # nilearn's 4 mm MNI152 grid starts at (-98, -134, -72) mm: the coarse grid's origin
    # (-78, -114, -72) is its voxel (5, 5, 0), so the coarse mask is that crop, all of it.
    mni = analysis_mask(4)
    np.testing.assert_array_equal(mni.affine[:3, 3] + 4 * np.array([5, 5, 0]), COARSE_AFFINE[:3, 3])
    full = np.asarray(mni.dataobj) > 0
    np.testing.assert_array_equal(mask, full[5:45, 5:53, 0:40])
    assert mask.sum() == full.sum() == 29398
    np.testing.assert_array_equal(mask_4mm.affine, COARSE_AFFINE)

    assert decoder_output_shape() == COARSE_SHAPE
    torch.manual_seed(0)
    module = Text2Brain(12, int(mask.sum()), fc_channels=2, decoder_filters=4, mask=mask).eval()
    x = torch.randn(3, 12)
    with torch.no_grad():
        volume, vector = module.decode(x), module.encode_text(x)
    assert volume.shape == (3, *COARSE_SHAPE) and vector.shape == (3, 29398)
    np.testing.assert_array_equal(vector.numpy(), volume.numpy()[:, mask])  # C order of the mask

    from mnm.trained import Standardizer, VoxelMapModel

    model = VoxelMapModel("text2brain", module, Standardizer(np.zeros(12), np.ones(12)), {},
                          {"text_dim": 12, "brain_dim": int(mask.sum())}, mask_4mm.affine)
    img = model.predict_map(x.numpy()[:1])
    assert img.shape == COARSE_SHAPE and np.allclose(img.affine, COARSE_AFFINE)
    data = np.asarray(img.dataobj)
    np.testing.assert_allclose(data[mask], vector.numpy()[0], rtol=1e-6)
    assert (data[~mask] == 0).all()
    # voxel (i, j, k) is at MNI (-78 + 4i, -114 + 4j, -72 + 4k): (20, 28, 18) is (2, -2, 0)
    np.testing.assert_allclose(nib.affines.apply_affine(img.affine, [20, 28, 18]), [2, -2, 0])
    np.testing.assert_allclose(model.brain_vector(img), vector.numpy()[0], rtol=1e-6)


def test_fewer_up_blocks_paint_the_coarse_decoder_map_onto_the_4mm_grid():
    """up_blocks 2: two transposed convolutions end on the 8 mm grid of the same volume, and
    each 8 mm voxel fills the 2 x 2 x 2 voxels of 4 mm it covers (numpy's repeat as reference)."""
    torch.manual_seed(0)
    module = Text2Brain(12, 0, fc_channels=2, decoder_filters=4, up_blocks=2).eval()
    torch.nn.init.normal_(module.decoder[-2].weight)  # the output convolution starts at zero
    assert sum(isinstance(m, torch.nn.ConvTranspose3d) for m in module.modules()) == 2
    x = torch.randn(2, 12)
    with torch.no_grad():
        volume = module.decode(x).numpy()
        coarse = module.decoder(torch.relu(module.fc(x)).view(2, 2, 4, 5, 4))[:, 0, 1:, 1:, 1:].numpy()
    assert coarse.shape == (2, 20, 24, 20) and volume.shape == (2, *COARSE_SHAPE)
    assert np.ptp(coarse) > 0
    np.testing.assert_array_equal(volume, coarse.repeat(2, axis=1).repeat(2, axis=2).repeat(2, axis=3))
    # the 8 mm voxel (10, 14, 9) is centred at the mean of its 4 mm voxels' centres
    fine = nib.affines.apply_affine(COARSE_AFFINE, [[20, 28, 18], [21, 29, 19]]).mean(axis=0)
    np.testing.assert_allclose(fine, COARSE_AFFINE[:3, 3] + 8 * np.array([10, 14, 9]) + 2)
    with pytest.raises(ValueError, match="up_blocks must be 1, 2 or 3"):
        Text2Brain(12, 0, up_blocks=4)


@pytest.mark.parametrize("up_blocks", [1, 2, 3])
def test_mask_voxels_gathered_from_the_decoder_equal_the_painted_volume_masked(mask_4mm, up_blocks):
    """encode_text gathers the mask voxels from the decoder's coarse output: values and
    gradients equal those of painting the full 4 mm volume and selecting the mask (the
    reference), and a loaded state dict with another mask re-indexes."""
    mask = np.asarray(mask_4mm.dataobj) > 0
    torch.manual_seed(0)
    module = Text2Brain(6, int(mask.sum()), fc_channels=2, decoder_filters=4, up_blocks=up_blocks, mask=mask)
    torch.nn.init.normal_(module.decoder[-2].weight)
    module.double()  # float64: BatchNorm's gradients are sums that cancel to a small value
    x, weights = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, int(mask.sum()), dtype=torch.float64)
    torch.manual_seed(1)
    gathered = module.encode_text(x)
    (gathered * weights).sum().backward()
    grads = [p.grad.clone() for p in module.parameters()]
    module.zero_grad()
    torch.manual_seed(1)  # the same dropout draws
    reference = module.decode(x)[:, module.mask]
    (reference * weights).sum().backward()
    np.testing.assert_array_equal(gathered.detach().numpy(), reference.detach().numpy())
    for grad, parameter in zip(grads, module.parameters()):
        np.testing.assert_allclose(grad.numpy(), parameter.grad.numpy(), rtol=1e-9, atol=1e-9)

    smaller = mask.copy()
    smaller[:20] = False
    other = Text2Brain(6, int(smaller.sum()), fc_channels=2, decoder_filters=4, up_blocks=up_blocks,
                       mask=smaller).double()
    module.brain_dim = int(smaller.sum())
    module.load_state_dict(other.state_dict())
    module.eval()
    with torch.no_grad():
        np.testing.assert_array_equal(module.encode_text(x).numpy(), module.decode(x).numpy()[:, smaller])


def _two_hemisphere_atlas():
    """The 2 mm MNI brain split into left and right: a cheap atlas on the real analysis grid."""
    mask_img = analysis_mask(2)
    brain = np.asarray(mask_img.dataobj) > 0
    x_mm = nib.affines.apply_affine(mask_img.affine, np.argwhere(np.ones(brain.shape, bool)))[:, 0]
    left = (x_mm.reshape(brain.shape) < 0) & brain
    maps = np.stack([left, brain & ~left], axis=-1).astype(np.float32)
    return nib.Nifti1Image(maps, mask_img.affine), mask_img


def test_coarse_kde_maps_equal_the_dense_reference(tmp_path, mask_4mm):
    """The stage's 4 mm maps at the voxels shared with the 2 mm grid == mnm.brain.reference_kde."""
    from mnm.brain import BrainProjector, reference_kde
    from mnm.io import write_parquet

    maps_img, mask_2mm = _two_hemisphere_atlas()
    nib.save(maps_img, tmp_path / "atlas.nii.gz")
    peaks = pd.DataFrame({
        "article_id": ["a", "a", "a", "a", "b", "c"],
        # a: two peaks, one repeated (dropped as a duplicate), one off-grid (ignored);
        # b: one peak off the 4 mm lattice; c: far outside the support (ignored: zero map)
        "x": [40.0, -21.3, -21.3, 400.0, 1.0, 0.0], "y": [-20.0, 33.9, 33.9, 0.0, -61.0, 300.0],
        "z": [50.0, 1.2, 1.2, 0.0, 29.0, 0.0],
    })
    write_parquet(peaks, tmp_path / "peaks.parquet")
    write_parquet(pd.DataFrame({"article_id": ["a", "b", "c", "d"]}), tmp_path / "articles.parquet")
    n = compute_kde_maps(tmp_path / "atlas.nii.gz", tmp_path / "peaks.parquet", tmp_path / "articles.parquet",
                         tmp_path / "maps.parquet", tmp_path / "mask.nii.gz", fwhm_mm=9.0, chunk_size=3)
    ids, maps, mask_img = read_kde_maps(tmp_path / "maps.parquet", tmp_path / "mask.nii.gz")
    assert n == 4 and ids.tolist() == ["a", "b", "c", "d"] and maps.shape == (4, 29398)
    assert pd.read_parquet(tmp_path / "maps.parquet")["n_peaks"].tolist() == [2, 1, 0, 0]
    assert (maps[2:] == 0).all()  # no usable peak / no peak at all

    coarse = np.asarray(mask_img.dataobj) > 0
    fine = np.asarray(mask_2mm.dataobj) > 0
    # coarse voxel (i, j, k) has the centre of 2 mm voxel (2i + 10, 2j + 10, 2k)
    ijk = np.argwhere(coarse)
    fine_ijk = 2 * ijk + np.array([10, 10, 0])
    np.testing.assert_allclose(nib.affines.apply_affine(COARSE_AFFINE, ijk),
                               nib.affines.apply_affine(mask_2mm.affine, fine_ijk))
    shared = fine[tuple(fine_ijk.T)]
    assert shared.mean() > 0.95
    position = np.full(fine.shape, -1)
    position[fine] = np.arange(fine.sum())
    for row, article in enumerate(["a", "b"]):
        xyz = peaks.loc[peaks["article_id"] == article, ["x", "y", "z"]].drop_duplicates().to_numpy()
        dense = reference_kde(xyz, maps_img, mask_2mm, 9.0)  # at the 2 mm brain voxels
        expected = dense[position[tuple(fine_ijk[shared].T)]]
        np.testing.assert_allclose(maps[row][shared], expected, rtol=1e-5, atol=1e-6)
        assert maps[row].max() > 0.5
    projector = BrainProjector(maps_img, fwhm_mm=9.0)
    np.testing.assert_array_equal(coarse_kde(projector, peaks.iloc[[4]][["x", "y", "z"]], coarse), maps[1])


def _planted_blobs(n_articles: int, grid: int, seed: int = 0):
    """Texts whose features decide at which of 4 far-apart places a Gaussian blob sits."""
    rng = np.random.default_rng(seed)
    low, high = grid // 4, grid - 1 - grid // 4
    centres = np.array([[low, low, low], [high, high, low], [high, low, high], [low, high, high]])
    position = np.arange(n_articles) % len(centres)
    codes = rng.normal(size=(len(centres), 16))
    text = (codes[position] + 0.5 * rng.normal(size=(n_articles, 16))).astype(np.float32)
    voxels = np.stack(np.meshgrid(*[np.arange(grid)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    templates = np.exp(-((voxels[None] - centres[:, None]) ** 2).sum(-1) / (2 * 2.0**2)).astype(np.float32)
    return text, templates, position


@pytest.mark.parametrize("up_blocks", [3, 2])
def test_text2brain_learns_a_planted_mapping(tmp_path, single_thread, up_blocks):
    """Text features decide a blob's position: held-out maps land on the right blob, and the
    checkpoint round trip reproduces the predictions (and the number of blocks)."""
    from mnm.trained import load_trained
    from mnm.training.data import FoldInputs, Split
    from mnm.training.fit import fit_model
    from mnm.training.loop import Recipe

    latent = (1, 1, 1)
    grid = decoder_output_shape(latent)[0]  # 16
    text, templates, position = _planted_blobs(120, grid)
    mask_img = nib.Nifti1Image(np.ones((grid,) * 3, np.uint8), np.diag([4.0, 4, 4, 1]))
    data = FoldInputs(ids=np.array([f"a{i:03d}" for i in range(120)], dtype=object), text=text,
                      brain=2.0 * templates[position], n_active=np.ones(120, np.float32), folds={},
                      brain_mask=mask_img)
    split = Split(np.arange(60), np.arange(60, 90), np.arange(90, 120))
    recipe = Recipe(batch_size=10, max_epochs=12, lr=3e-3, warmup_epochs=1, schedule="constant",
                    patience=None, metric="val_mix_and_match")
    params = {"fc_channels": 8, "decoder_filters": 8, "dropout": 0.0, "up_blocks": up_blocks,
              "latent_shape": list(latent)}
    model, history, best = fit_model("text2brain", data, split, params, recipe, seed=0)
    # the lowest loss a map painted in f x f x f blocks can reach: the blocks' own means
    f = 2 ** (3 - up_blocks)
    target = templates / templates.max(axis=1, keepdims=True)
    blocks = target.reshape(4, grid // f, f, grid // f, f, grid // f, f).mean(axis=(2, 4, 6))
    painted = blocks.repeat(f, 1).repeat(f, 2).repeat(f, 3).reshape(4, -1)
    floor = ((target - painted) ** 2).mean()
    assert history["train_loss"].iloc[-1] < floor + 0.1 * history["train_loss"].iloc[1]

    predicted = model.embed_text(text[split.test])
    # nearest template by correlation: chance 1/4
    from mnm.scoring import score_matrix

    guessed = score_matrix("correlation", predicted, templates).argmax(axis=1)
    accuracy = (guessed == position[split.test]).mean()
    assert accuracy >= 0.8, accuracy
    # retrieval among held-out articles: the own map ranks above most others (chance 0.5)
    from mnm import metrics

    scores = model.score(predicted, model.embed_brain(data.brain[split.test]))
    assert metrics.mix_and_match(scores) > 0.8

    model.metadata.update({"fold": "0"})
    model.save(tmp_path / "model.safetensors")
    loaded = load_trained(tmp_path / "model.safetensors")
    assert loaded.family == "voxel" and loaded.brain_input == "kde_4mm" and loaded.predict_brain(text) is None
    np.testing.assert_allclose(loaded.embed_text(text[split.test]), predicted, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loaded.affine, mask_img.affine)
    assert loaded.module.upsample_factor == model.module.upsample_factor == 2 ** (3 - up_blocks)


class _ConstantVoxelModel:
    """Stand-in voxel-map model: the same 4 mm map (a linear ramp along x) for every text."""

    brain_input = "kde_4mm"

    def predict_map(self, text_input):
        x_mm = COARSE_AFFINE[0, 0] * np.arange(COARSE_SHAPE[0]) + COARSE_AFFINE[0, 3]
        return nib.Nifti1Image(np.broadcast_to(x_mm[:, None, None], COARSE_SHAPE).astype(np.float32),
                               COARSE_AFFINE)


def test_voxel_route_resamples_the_model_map_to_the_analysis_grid():
    """The report's voxel route puts the model's 4 mm map on the 2 mm analysis grid (linear in
    x: the spline interpolation reproduces it away from the grid's edges)."""
    from mnm.report.maps import predict_voxel_map

    target = analysis_mask(2)
    img = predict_voxel_map(_ConstantVoxelModel(), np.zeros((1, 4)), target)
    assert img.shape == target.shape and np.allclose(img.affine, target.affine)
    x_mm = target.affine[0, 0] * np.arange(target.shape[0]) + target.affine[0, 3]
    inside = np.abs(x_mm) <= 50
    data = np.asarray(img.dataobj)[:, 60, 40]  # y = -14 mm, z = 8 mm: inside the coarse grid
    np.testing.assert_allclose(data[inside], x_mm[inside], atol=1e-2)
    assert predict_voxel_map(object(), None, target) is None  # models without a voxel map


class _KdeVoxelModel(_ConstantVoxelModel):
    """Stand-in voxel-map model that predicts each article's own 4 mm KDE map (by row)."""

    def __init__(self, maps_4mm: np.ndarray, mask_4mm: np.ndarray):
        self.maps, self.mask = maps_4mm, mask_4mm

    def predict_brain(self, text_input):
        return None

    def predict_map(self, text_input):
        volume = np.zeros(self.mask.shape, np.float32)
        volume[self.mask] = self.maps[int(np.asarray(text_input)[0, 0])]
        return nib.Nifti1Image(volume, COARSE_AFFINE)


def test_map_evaluation_scores_the_voxel_route_only(tmp_path, mask_4mm):
    """A voxel-map model gets one voxel route (no parcel route); predicting the article's own
    coarse KDE map scores near-perfect Dice, while the random-map control scores the top fraction."""
    from mnm.brain import BrainProjector
    from mnm.report.map_eval import MapEvaluator, evaluate_fold

    maps_img, _ = _two_hemisphere_atlas()
    projector = BrainProjector(maps_img, fwhm_mm=9.0).fit(lookup_table=False)
    peaks = {"a": np.array([[40.0, -20.0, 50.0], [-22.0, 34.0, 2.0]]), "b": np.array([[2.0, -60.0, 30.0]])}
    mask = np.asarray(mask_4mm.dataobj) > 0
    maps_4mm = np.stack([coarse_kde(projector, peaks[a], mask) for a in "ab"])
    evaluator = MapEvaluator.__new__(MapEvaluator)  # the parts evaluate_fold reads, without a parcel atlas
    evaluator.maps_img, evaluator.projector, evaluator.mask = maps_img, projector, projector.mask_
    evaluator.levels, evaluator.parcel_vectors, evaluator.peaks = ["level_1"], {}, peaks
    evaluator._truth, evaluator._random = {}, {}

    class Rows:  # decoder inputs: the article's row number, read back by the stand-in model
        @staticmethod
        def get(trained, section, article):
            return np.array([["ab".index(article)]])

    fractions = (0.05, 0.1, 0.2)
    keys = {"model": "text2brain", "section": "abstract", "atlas": "hemispheres", "fold": 0}
    rows, examples = evaluate_fold(evaluator, _KdeVoxelModel(maps_4mm, mask), keys, np.array(list("ab")),
                                   np.zeros((2, 2)), Rows(), fractions, None, seed=0)
    table = pd.DataFrame(rows, columns=["model", "section", "atlas", "route", "level", "kind", "fold",
                                        "article_id", "fraction", "dice"])
    assert set(zip(table["route"], table["level"])) == {("voxel", "4mm")}
    assert set(table["kind"]) == {"model", "shuffled articles", "random map"}
    assert all(list(maps) == [("voxel", "4mm")] for maps in examples.values())
    # independent Dice of the top 10 % voxels of article a's prediction and of its truth
    brain = evaluator.mask
    predicted = np.asarray(examples["a"][("voxel", "4mm")].dataobj)[brain]
    truth = np.asarray(projector.kde_img(peaks["a"]).dataobj)[brain]
    n_top = int(round(0.1 * brain.sum()))
    top_p, top_t = np.argsort(-predicted)[:n_top], np.argsort(-truth)[:n_top]
    expected = 2 * len(np.intersect1d(top_p, top_t)) / (2 * n_top)
    got = table.query("article_id == 'a' and kind == 'model' and fraction == 0.1")["dice"].item()
    assert got == pytest.approx(expected, abs=0.01)
    model = table[table["kind"] == "model"].groupby("fraction")["dice"].mean()
    shuffled = table[table["kind"] == "shuffled articles"].groupby("fraction")["dice"].mean()
    random = table[table["kind"] == "random map"].groupby("fraction")["dice"].mean()
    assert (model > 0.5).all() and (model - shuffled > 0.3).all()
    np.testing.assert_allclose(random, fractions, atol=0.05)


def test_fold_inputs_of_a_voxel_model_align_maps_with_coefficients(tmp_path, mask_4mm):
    """With kde_maps, the brain rows are the 4 mm maps of the common articles (in sorted id
    order), n_active still comes from the coefficients table, and a map without coefficients
    is refused with the file named."""
    from mnm.io import save_nifti, write_matrix, write_parquet
    from mnm.training.data import load_fold_inputs

    n_mask = int((np.asarray(mask_4mm.dataobj) > 0).sum())
    rng = np.random.default_rng(0)
    maps = rng.random((3, n_mask), dtype=np.float32)
    write_matrix(tmp_path / "maps.parquet", ["c", "a", "b"], maps, column="kde", extra={"n_peaks": [1, 2, 3]})
    save_nifti(mask_4mm, tmp_path / "mask.nii.gz")
    write_matrix(tmp_path / "text.parquet", ["b", "a", "c"], np.eye(3, 4))
    write_matrix(tmp_path / "coef.parquet", ["a", "b", "c", "d"], np.ones((4, 2)), column="coefficients",
                 extra={"n_active": [5, 6, 7, 8]})
    write_parquet(pd.DataFrame({"article_id": list("abcd"), "fold": [0, 1, 0, 1]}), tmp_path / "folds.parquet")
    kde = (tmp_path / "maps.parquet", tmp_path / "mask.nii.gz")
    data = load_fold_inputs(tmp_path / "text.parquet", tmp_path / "coef.parquet", tmp_path / "folds.parquet",
                            kde_maps=kde)
    assert data.ids.tolist() == ["a", "b", "c"]
    np.testing.assert_array_equal(data.brain, maps[[1, 2, 0]])
    np.testing.assert_array_equal(data.n_active, [5, 6, 7])
    np.testing.assert_array_equal(data.text, np.eye(3, 4)[[1, 0, 2]])
    np.testing.assert_array_equal(data.brain_mask.affine, COARSE_AFFINE)

    write_matrix(tmp_path / "coef.parquet", ["a", "b"], np.ones((2, 2)), column="coefficients",
                 extra={"n_active": [5, 6]})
    with pytest.raises(ValueError, match="maps.parquet: articles absent from .*coef.parquet"):
        load_fold_inputs(tmp_path / "text.parquet", tmp_path / "coef.parquet", tmp_path / "folds.parquet",
                         kde_maps=kde)
