"""The SLURM profile on a real single-node SLURM: a reduced DAG, outputs equal to a local run.

Needs root and Debian's slurm-wlm + munge (``.ci/install-slurm``). Without them the test is
skipped with the reason, except under CI (``CI=true``), where it fails instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from slurm_cluster import missing_commands, start_cluster
from conftest import subset_studyset
from workflow_utils import make_project, snakemake

pytestmark = pytest.mark.cluster

N_STUDIES = 30
MODELS = ["ridge", "tfidf"]
OVERRIDES = {
    "folds": {"n_folds": 2, "n_repeats": 1},
    "brain": {"n_qc_maps": 1},
    # a 4 mm grid makes the atlas and the KDE lookup table 8 times cheaper than 2 mm
    "atlas": {"resolution_mm": 4},
    # device cpu: deciding whether a job wants a GPU then needs no torch import at parse time
    # (every SLURM job parses the workflow twice: the job step and srun's step)
    "text": {"sections": ["abstract"], "n_shards": 1, "device": "cpu"},
    "models": {"names": MODELS, "sections": ["abstract"], "tradeoff": {"lambda_hier": []}},
}
# Table 1 and everything it needs, named by rule so that the output paths may change: corpus,
# atlas, coefficients, embedding shards and training are submitted; folds, the gathering of
# shards and the retrieval table are localrules.
UNTIL = ["--until", "retrieval_table"]
# Folders whose content legitimately differs between two runs (the text cache's file names
# are random; the embeddings built from it are compared).
NOT_COMPARED = ("logs", "benchmarks", "cache")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _cluster_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the single-node SLURM needs root (slurmd runs jobs as any user)"
    missing = missing_commands()
    if missing:
        return f"SLURM/munge not installed ({', '.join(missing)}): run .ci/install-slurm as root"
    return None


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    reason = _cluster_unavailable()
    if reason:
        if _in_ci():
            pytest.fail(f"cluster tests must run in CI: {reason}")
        print(f"skipping cluster tests: {reason}")
        pytest.skip(reason)
    cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    yield cluster
    cluster.stop()


def _parquet_tables(results: Path) -> dict[str, pd.DataFrame]:
    """Every Parquet table under ``results`` except logs and benchmarks, by relative path."""
    tables = {}
    for path in sorted(results.rglob("*.parquet")):
        relative = path.relative_to(results)
        if relative.parts[0] not in NOT_COMPARED:
            tables[str(relative)] = pd.read_parquet(path)
    return tables


def _slurm_command() -> list[str]:
    return [
        sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", "--jobs", "8",
        # the test cluster has no slurmdbd: sacct cannot see jobs (a real cluster keeps sacct)
        "--slurm-status-command", "squeue",
        "--slurm-init-seconds-before-status-checks", "1",
        "--seconds-between-status-checks", "1",
        "--latency-wait", "5", *UNTIL,
    ]


def test_reduced_dag_on_slurm_equals_local_run(slurm_cluster, tmp_path):
    subset_studyset(tmp_path / "studyset", N_STUDIES)
    overrides = {**OVERRIDES, "corpus": {"nimare_studyset": str(tmp_path / "studyset")}}
    (tmp_path / "slurm").mkdir()
    (tmp_path / "local").mkdir()
    on_slurm = make_project(tmp_path / "slurm", overrides)
    local = make_project(tmp_path / "local", overrides)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "MPLBACKEND": "Agg"}
    start = time.monotonic()
    # The SLURM run mostly waits (submission, polling): the local run fills that time.
    with open(tmp_path / "slurm.out", "w") as out:
        cluster_run = subprocess.Popen(_slurm_command(), cwd=on_slurm, env=env,
                                       stdout=out, stderr=subprocess.STDOUT, text=True)
        try:
            snakemake(local, "--cores", "2", *UNTIL)
            returncode = cluster_run.wait(timeout=600)
        except subprocess.TimeoutExpired:
            returncode = "timed out after 600 s"
        finally:
            if cluster_run.poll() is None:
                cluster_run.kill()
                cluster_run.wait()
    output = (tmp_path / "slurm.out").read_text()
    print(f"SLURM + local runs: {time.monotonic() - start:.1f} s")
    assert returncode == 0, output[-6000:] + slurm_cluster.log_tail()

    # every non-local job went through SLURM and left its stdout/stderr in results/logs/slurm
    slurm_logs = on_slurm / "results/logs/slurm"
    submitted = {p.name.removeprefix("rule_") for p in slurm_logs.iterdir() if p.is_dir()}
    assert {"corpus", "atlas", "coefficients", "embed_shard", "train_model"} <= submitted
    assert not {"folds", "gather_embeddings", "retrieval_table"} & submitted  # localrules
    job_logs = list(slurm_logs.rglob("*.log"))
    assert all(p.stat().st_size > 0 for p in job_logs)
    assert output.count("has been submitted with SLURM jobid") == len(job_logs) >= 5

    expected, actual = _parquet_tables(local / "results"), _parquet_tables(on_slurm / "results")
    assert sorted(actual) == sorted(expected)
    assert any(name.startswith("models/") for name in expected) and "report/retrieval.parquet" in expected
    for name, table in expected.items():
        pd.testing.assert_frame_equal(actual[name], table, check_exact=True, obj=name)
