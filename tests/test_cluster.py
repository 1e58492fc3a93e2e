"""The SLURM profile on a real single-node SLURM: a reduced DAG, outputs equal to a local run.

The local run is the tiny end-to-end run of tests/conftest.py (``tiny_run``, built once per
session): the SLURM run uses its very config and builds one training fold of the ridge model
and everything it needs (corpus, atlas, coefficients, embedding shard on SLURM; folds and the
gathering of shards as localrules), and every table it writes must equal the local run's.

Needs root and Debian's slurm-wlm + munge (``.ci/install-slurm``). Without them the test is
skipped with the reason, except under CI (``CI=true``), where it fails instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from slurm_cluster import missing_commands, start_cluster
from workflow_utils import make_project

pytestmark = pytest.mark.cluster

# One training job and its inputs: corpus, atlas, coefficients and the embedding shard are
# submitted; folds and the gathering of shards are localrules.
TARGET = "results/models/ridge/minilm/abstract/aicha/repeat-0/fold-0/test_embeddings.parquet"
SUBMITTED = {"corpus", "atlas", "coefficients", "embed_shard", "train_model"}
LOCAL = {"folds", "gather_embeddings"}
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
        "--latency-wait", "5", TARGET,
    ]


def test_reduced_dag_on_slurm_equals_local_run(slurm_cluster, tiny_project, request, tmp_path):
    on_slurm = make_project(tmp_path)
    shutil.copy(tiny_project / "config.yaml", on_slurm / "config.yaml")  # the local run's config
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "MPLBACKEND": "Agg"}
    start = time.monotonic()
    # The SLURM run mostly waits (submission, polling): the local run (the tiny run, built
    # now unless an earlier test built it) fills that time.
    with open(tmp_path / "slurm.out", "w") as out:
        cluster_run = subprocess.Popen(_slurm_command(), cwd=on_slurm, env=env,
                                       stdout=out, stderr=subprocess.STDOUT, text=True)
        try:
            tiny_run = request.getfixturevalue("tiny_run")
            returncode = cluster_run.wait(timeout=600)
        except subprocess.TimeoutExpired:
            returncode = "timed out after 600 s"
        finally:
            if cluster_run.poll() is None:
                cluster_run.kill()
                cluster_run.wait()
    output = (tmp_path / "slurm.out").read_text()
    print(f"SLURM run (beside the local run): {time.monotonic() - start:.1f} s")
    assert returncode == 0, output[-6000:] + slurm_cluster.log_tail()

    # every non-local job went through SLURM and left its stdout/stderr in results/logs/slurm
    slurm_logs = on_slurm / "results/logs/slurm"
    submitted = {p.name.removeprefix("rule_") for p in slurm_logs.iterdir() if p.is_dir()}
    assert submitted == SUBMITTED
    assert all(f"localrule {rule}:" in output for rule in LOCAL)
    job_logs = list(slurm_logs.rglob("*.log"))
    assert all(p.stat().st_size > 0 for p in job_logs)
    assert output.count("has been submitted with SLURM jobid") == len(job_logs) == len(SUBMITTED)

    actual = _parquet_tables(on_slurm / "results")
    # every table of the submitted and local rules (the target's fold trains both repeats)
    fold = TARGET.removeprefix("results/").removesuffix("/test_embeddings.parquet")
    produced = {"corpus/articles.parquet", "corpus/peaks.parquet", "corpus/qc.parquet", "folds.parquet",
                "brain/aicha/coefficients.parquet", "text/minilm/abstract/embeddings.parquet",
                "text/minilm/abstract/qc.parquet",
                *(f"{fold.replace('repeat-0', f'repeat-{r}')}/{name}.parquet"
                  for r in (0, 1) for name in ("test_embeddings", "validation_embeddings", "history"))}
    assert produced <= set(actual), produced - set(actual)
    for name, table in actual.items():
        expected = pd.read_parquet(tiny_run / "results" / name)
        pd.testing.assert_frame_equal(table, expected, check_exact=True, obj=name)
