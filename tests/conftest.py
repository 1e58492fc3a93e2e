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
# (NeuroConText trains through the same code path as MNM and is covered by tests/test_train.py;
# leaving it out saves four jobs of start-up.)
TINY_RUN_MODELS = ["mnm", "ridge"]
TINY_RUN_OVERRIDES = {
    "folds": {"n_folds": 2, "n_repeats": 2},
    "atlas": {"resolution_mm": 4},  # 8 times fewer voxels than the default 2 mm grid
    "brain": {"n_qc_maps": 1},
    "text": {"sections": ["abstract"], "n_shards": 1},
    "models": {
        "names": TINY_RUN_MODELS, "sections": ["abstract"],
        "training": {"max_epochs": 12, "patience": 4, "warmup_epochs": 1},
        "mnm": {"latent_dim": 32},
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


#: xdist group of every test that needs the tiny run: one worker builds it, once.
TINY_RUN_GROUP = "tiny_run"
TINY_RUN_FIXTURES = {"tiny_project", "tiny_run"}


@pytest.hookimpl(tryfirst=True)  # before xdist's hook reads the group markers
def pytest_collection_modifyitems(config, items):
    """Send every test that uses the tiny run (directly or through another fixture) to one
    xdist worker (``--dist loadgroup``, set in pyproject.toml), so that the session fixture is
    built once rather than once per worker; cluster tests go first, so that the SLURM run can
    overlap the tiny run's build (tests/test_cluster.py)."""
    for item in items:
        if TINY_RUN_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group(TINY_RUN_GROUP))
    items.sort(key=lambda item: item.get_closest_marker("cluster") is None)  # stable sort


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory):
    """The tiny run's project folder (Snakefile, config.yaml, the studyset it reads), not run."""
    from workflow_utils import make_project

    tmp = tmp_path_factory.mktemp("e2e")
    subset_studyset(tmp / "studyset", TINY_RUN_STUDIES)
    overrides = {**TINY_RUN_OVERRIDES, "corpus": {"nimare_studyset": str(tmp / "studyset")}}
    return make_project(tmp, overrides)


@pytest.fixture(scope="session")
def tiny_run(tiny_project):
    """A finished run of the whole DAG (corpus -> report) on 60 real studies, 2 folds x 2
    repeats, MNM and ridge, and a 2-point trade-off sweep: the project folder."""
    from workflow_utils import snakemake

    snakemake(tiny_project, "--cores", "2")
    return tiny_project
