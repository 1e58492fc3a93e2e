"""The Snakemake workflow: config validation, lint, profiles, corpus stage end to end."""

from __future__ import annotations

import copy
import re

import pandas as pd
import pytest
import yaml

from mnm.config import ConfigError, load_schema, validate_config
from workflow_utils import ROOT, make_project, snakemake


def _default_config():
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def _schema_leaves(schema, prefix=""):
    for key, sub in schema.get("properties", {}).items():
        yield f"{prefix}{key}", sub
        if sub.get("type") == "object":
            yield from _schema_leaves(sub, f"{prefix}{key}.")


def _config_leaves(config, prefix=""):
    for key, value in config.items():
        yield f"{prefix}{key}"
        if isinstance(value, dict) and key != "encoders":
            yield from _config_leaves(value, f"{prefix}{key}.")


def test_every_schema_key_has_description_and_default():
    for key, sub in _schema_leaves(load_schema()):
        assert sub.get("description"), f"{key} has no description"
        assert "default" in sub, f"{key} has no default"


def test_config_yaml_keys_are_in_schema_and_defaults_match():
    schema_keys = dict(_schema_leaves(load_schema()))
    config = _default_config()
    for key in _config_leaves(config):
        assert key in schema_keys, f"config.yaml key {key} missing from the schema"
    # An empty config validates to the same values as config.yaml: the schema's defaults
    # are the embedded default run.
    assert validate_config({}) == validate_config(config)


@pytest.mark.parametrize(
    "path, value, key",
    [
        (("folds", "n_folds"), -1, "folds.n_folds"),
        (("corpus", "source"), "pubmed", "corpus.source"),
        (("brain", "fwhm_mm"), "nine", "brain.fwhm_mm"),
        (("models", "names"), ["mnm", "bert"], "models.names.1"),
        (("corpus", "source"), "pubget", "corpus.pubget.query"),
        (("corpus", "source"), "pubget_dir", "corpus.pubget_dir"),
        (("text", "encoder"), "mistral", "text.encoder"),
        (("models", "sections"), ["body"], "models.sections"),
    ],
)
def test_bad_config_names_the_key(path, value, key):
    config = copy.deepcopy(_default_config())
    config[path[0]][path[1]] = value
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_config(config)


def test_unknown_key_is_rejected():
    with pytest.raises(ConfigError, match=r"folds \(unknown key\)"):
        validate_config({"folds": {"n_fold": 3}})


def test_snakemake_stops_at_start_on_bad_config(tmp_path):
    project = make_project(tmp_path, {"folds": {"n_folds": -1}})
    result = snakemake(project, "-n", check=False)
    assert result.returncode != 0
    assert "folds.n_folds" in result.stdout
    assert not (project / "results").exists()


def test_lint_is_clean():
    result = snakemake(ROOT, "--lint", check=False)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "Lints for" not in result.stdout, result.stdout[-4000:]


def _job_resources(dry_run_output: str) -> dict[str, list[dict]]:
    """rule name -> the ``resources:`` of each of its jobs, from a dry run's listing."""
    jobs: dict[str, list[dict]] = {}
    rule = None
    for line in dry_run_output.splitlines():
        match = re.match(r"^(?:local)?rule (\w+):$", line)
        if match:
            rule = match.group(1)
        elif rule and line.strip().startswith("resources:"):
            pairs = (item.split("=", 1) for item in line.split(":", 1)[1].split(", "))
            jobs.setdefault(rule, []).append({k.strip(): v for k, v in pairs})
            rule = None
    return jobs


def test_slurm_profile_and_paper_config_parse(tmp_path, monkeypatch):
    """Partition and account reach every submitted job from the environment; GPU jobs get
    the GPU partition (config keys take precedence: tests/test_cluster_resources.py)."""
    monkeypatch.setenv("SBATCH_ACCOUNT", "proj42")
    monkeypatch.setenv("SBATCH_PARTITION", "cpuq")
    monkeypatch.setenv("MNM_SLURM_GPU_PARTITION", "gpuq")
    project = make_project(tmp_path)
    (project / "config").symlink_to(ROOT / "config")
    result = snakemake(project, "-n", "--configfile", "config/paper.yaml",
                       "--profile", "profiles/slurm")
    jobs = _job_resources(result.stdout)
    assert {"embed_shard", "train_model", "atlas", "coefficients"} <= set(jobs)
    for resources in jobs["embed_shard"]:  # paper config: text.device cuda
        assert (resources["gpu"], resources["slurm_partition"]) == ("1", "gpuq")
    for rule in ("atlas", "coefficients", "brain_qc"):
        for resources in jobs[rule]:
            assert resources["slurm_partition"] == "cpuq", rule
            assert resources.get("gpu", "0") == "0", rule
    assert all(r["slurm_account"] == "proj42"
               for rule in ("embed_shard", "atlas", "coefficients") for r in jobs[rule])


def test_corpus_stage_end_to_end_and_rerun_does_nothing(tmp_path):
    project = make_project(tmp_path)
    targets = ["results/corpus/qc.parquet", "results/folds.parquet"]
    snakemake(project, "--cores", "2", *targets)
    articles = pd.read_parquet(project / "results/corpus/articles.parquet")
    peaks = pd.read_parquet(project / "results/corpus/peaks.parquet")
    qc = pd.read_parquet(project / "results/corpus/qc.parquet")
    assert len(articles) == 320 and articles["article_id"].is_unique
    dropped = qc[(qc.level == "peak") & qc.reason.str.startswith("dropped")]["count"].sum()
    assert len(peaks) + dropped == 9492
    folds = pd.read_parquet(project / "results/folds.parquet")
    assert set(folds.article_id) == set(articles.article_id)
    assert folds.fold.value_counts().tolist() == [64] * 5
    assert (project / "results/logs/corpus.log").stat().st_size > 0
    again = snakemake(project, "-n", *targets)
    assert "Nothing to be done" in again.stdout


def test_slurm_profile_leaves_gpus_partitions_and_accounts_to_the_rules():
    """A rule-wide `gpu` in the profile would give ridge and TF-IDF a GPU, and the plugin
    rejects a job with both `gpu` and `gres`; partitions and accounts come from the config
    or the environment, and cpus-per-task from each rule's threads."""
    profile = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
    decided_by_rules = {"gpu", "gres", "slurm_partition", "slurm_account", "cpus_per_task"}
    assert not decided_by_rules & set(profile.get("default-resources", {}))
    for name, resources in profile.get("set-resources", {}).items():
        assert not decided_by_rules & set(resources), name
    assert "set-threads" not in profile
    for rules in (ROOT / "workflow/rules").glob("*.smk"):
        assert "gres" not in rules.read_text(), rules.name
    # SLURM logs of every job are kept under results/logs/slurm
    assert profile["slurm-logdir"] == "results/logs/slurm"
    assert profile["slurm-keep-successful-logs"] is True
