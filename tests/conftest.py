import os
import sys
from pathlib import Path

import pandas as pd
import pytest

# No test may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, str(Path(__file__).parent))

#: The tiny end-to-end run shared by the e2e, query and serve tests.
TINY_RUN_STUDIES = 60
TINY_RUN_MODELS = ["mnm", "neurocontext", "ridge"]
TINY_RUN_OVERRIDES = {
    "folds": {"n_folds": 2, "n_repeats": 2},
    "atlas": {"resolution_mm": 4},  # 8 times fewer voxels than the default 2 mm grid
    "brain": {"n_qc_maps": 1},
    "text": {"sections": ["abstract"], "n_shards": 2},
    "models": {
        "names": TINY_RUN_MODELS, "sections": ["abstract"],
        "training": {"max_epochs": 12, "patience": 4, "warmup_epochs": 1},
        "mnm": {"latent_dim": 32}, "neurocontext": {"latent_dim": 32},
        "tradeoff": {"lambda_hier": [0.0, 1.0], "radius_heads": ["free"]},
    },
    "evaluation": {"n_example_maps": 1, "map_articles_per_fold": 3},
}


def subset_studyset(folder: Path, n_studies: int) -> set:
    """Write the first ``n_studies`` studies of NiMARE's bundled studyset to ``folder``."""
    from mnm.corpus import bundled_studyset_dir

    source = bundled_studyset_dir()
    folder.mkdir(parents=True)
    studies = pd.read_parquet(source / "studies.parquet").sort_values("study_id")
    keep = set(studies["study_id"].head(n_studies))
    for name in ("studies", "analyses", "coordinates", "metadata"):  # NiMARE needs analyses
        table = pd.read_parquet(source / f"{name}.parquet")
        table[table["study_id"].isin(keep)].to_parquet(folder / f"{name}.parquet")
    return keep


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A finished run of the whole DAG (corpus -> report) on 60 real studies, 2 folds x 2
    repeats, 3 models and a 2-point trade-off sweep: the project folder."""
    from workflow_utils import make_project, snakemake

    tmp = tmp_path_factory.mktemp("e2e")
    subset_studyset(tmp / "studyset", TINY_RUN_STUDIES)
    overrides = {**TINY_RUN_OVERRIDES, "corpus": {"nimare_studyset": str(tmp / "studyset")}}
    project = make_project(tmp, overrides)
    snakemake(project, "--cores", "2")
    return project
