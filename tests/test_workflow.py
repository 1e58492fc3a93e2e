"""The Snakemake workflow: config validation, lint, profiles, corpus stage end to end."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from mnm.config import ConfigError, load_schema, resolve, validate_config
from workflow_utils import ROOT, make_project, snakemake


def _default_config():
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def _schema_leaves(schema, node=None, prefix=""):
    """Every key of the schema (``$ref`` to ``$defs`` followed), with its sub-schema."""
    node = schema if node is None else node
    for key, sub in node.get("properties", {}).items():
        sub = resolve(sub, schema)
        yield f"{prefix}{key}", sub
        if "object" in ([sub.get("type")] if isinstance(sub.get("type"), str) else sub.get("type", [])):
            yield from _schema_leaves(schema, sub, f"{prefix}{key}.")


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
        (("brain", "fwhm_mm"), float("nan"), "brain.fwhm_mm: NaN"),
        (("brain", "delta"), float("inf"), "brain.delta: NaN or infinite"),
        (("folds", "n_folds"), 1000, "folds.n_folds: 1000 folds for a corpus of at most 320"),
        (("evaluation", "dice_top_fractions"), [0.3, 0.1], "evaluation.dice_top_fractions"),
    ],
)
def test_bad_config_names_the_key(path, value, key):
    config = copy.deepcopy(_default_config())
    config[path[0]][path[1]] = value
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_config(config)


def test_numeric_strings_are_coerced_where_the_schema_wants_numbers():
    config = validate_config({"folds": {"n_folds": "3"}, "brain": {"fwhm_mm": "6.5"},
                              "models": {"training": {"lr": "1e-3", "patience": "5"}},
                              "evaluation": {"recall_k": ["1", "10"]}})
    assert config["folds"]["n_folds"] == 3 and isinstance(config["folds"]["n_folds"], int)
    assert config["brain"]["fwhm_mm"] == 6.5 and config["models"]["training"]["lr"] == 1e-3
    assert config["models"]["training"]["patience"] == 5 and config["evaluation"]["recall_k"] == [1, 10]
    with pytest.raises(ConfigError, match="folds.n_folds"):
        validate_config({"folds": {"n_folds": "3.5"}})  # not an integer: refused, not rounded
    with pytest.raises(ConfigError, match="text.encoder"):
        validate_config({"text": {"encoder": "123"}})  # a string key stays a string


def test_fold_count_bound_comes_from_the_corpus_table_or_the_studyset(tmp_path):
    """An existing articles table gives the exact corpus size; an unreadable one is left to the
    job that reads it (which fails with the file named in its log), not to DAG parsing."""
    from mnm.config import corpus_size_bound
    from mnm.io import write_parquet

    config = validate_config({"results_dir": str(tmp_path)})
    assert corpus_size_bound(config)[0] == 320  # NiMARE's bundled studyset
    articles = tmp_path / "corpus" / "articles.parquet"
    articles.parent.mkdir()
    write_parquet(pd.DataFrame({"article_id": ["a", "b", "c"]}), articles)
    assert corpus_size_bound(config) == (3, str(articles))
    articles.write_bytes(b"PAR1 not a parquet file")
    assert corpus_size_bound(config)[0] == 320


def test_unknown_key_is_rejected():
    with pytest.raises(ConfigError, match=r"folds \(unknown key\)"):
        validate_config({"folds": {"n_fold": 3}})


def test_snakemake_stops_at_start_on_bad_config(tmp_path):
    project = make_project(tmp_path, {"folds": {"n_folds": -1}})
    result = snakemake(project, "-n", check=False)
    assert result.returncode != 0
    assert "folds.n_folds" in result.stdout
    assert not (project / "results").exists()


def test_lint_is_clean(tmp_path):
    project = make_project(tmp_path)  # not in the repository: lint writes .snakemake/
    result = snakemake(project, "--lint", check=False)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "Lints for" not in result.stdout, result.stdout[-4000:]


def job_counts(stdout: str) -> dict:
    """Jobs per rule from the "Job stats" table of a Snakemake dry run."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("job ") and "count" in line)
    counts = {}
    for line in lines[start + 2:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


def _job_resources(dry_run_output: str) -> dict[str, list[dict]]:
    """rule name -> the ``resources:`` of each of its jobs, from a dry run's listing."""
    jobs: dict[str, list[dict]] = {}
    rule, wildcards = None, ""
    for line in dry_run_output.splitlines():
        match = re.match(r"^(?:local)?rule (\w+):$", line)
        if match:
            rule = match.group(1)
        elif rule and line.strip().startswith("wildcards:"):
            wildcards = line.split(":", 1)[1]
        elif rule and line.strip().startswith("resources:"):
            pairs = (item.split("=", 1) for item in line.split(":", 1)[1].split(", "))
            jobs.setdefault(rule, []).append({**{k.strip(): v for k, v in pairs}, "_wildcards": wildcards})
            rule, wildcards = None, ""
    return jobs


#: Loads the workflow with the config file argv[1] as Snakemake itself does; the scripts that
#: append to it print what they read from it as their last line.
_LOAD_WORKFLOW = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings, StorageSettings
with SnakemakeApi(OutputSettings()) as api:
    workflow = api.workflow(snakefile=Path("Snakefile"), workdir=Path("."), resource_settings=ResourceSettings(),
                            config_settings=ConfigSettings(configfiles=[Path(sys.argv[1])]),
                            storage_settings=StorageSettings())._workflow
"""
_SUBMITTED_RULES = _LOAD_WORKFLOW + """
    # Workflow.is_local without the executor: grouped rules, or neither localrules nor norun
    print(json.dumps(sorted(rule.name for rule in workflow.rules if rule.group is not None
                            or not (rule.name in workflow._localrules or rule.norun))))
"""


def _read_workflow(project, script: str, configfile: str):
    """The JSON that ``script`` (:data:`_LOAD_WORKFLOW` and what it reads) prints last."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script, configfile], cwd=project, env=env,
                            text=True, capture_output=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _submitted_rules(project, configfile: str) -> set[str]:
    """Rules whose jobs a cluster executor submits (not localrules), as Snakemake itself
    decides for the workflow loaded with ``configfile`` (a dry run's listing does not say);
    every rule defined, scheduled or not."""
    return set(_read_workflow(project, _SUBMITTED_RULES, configfile))


#: Rules whose jobs go to the cluster; everything else (folds, gathers, metrics, tables,
#: figures, the tiny model of the rehearsal) is bookkeeping that runs where Snakemake runs.
HEAVY_RULES = {"atlas", "coefficients", "brain_qc", "embed_shard", "train_model", "train_model_all",
               "train_tradeoff", "map_dice", "poincare", "map_examples", "kde_maps", "term_counts"}


_RULE_PRIORITIES = _LOAD_WORKFLOW + """
    print(json.dumps({rule.name: rule.priority for rule in workflow.rules}))
"""


def test_fold_jobs_and_retrieval_table_are_scheduled_first(tmp_path):
    """The critical path of a large run: the fold jobs, then retrieval_table (one job over every
    fold, minutes at 20,000 articles), outrank every other rule, so the fold-all, trade-off and
    map jobs run beside retrieval_table rather than before it (benchmarks/scale.md)."""
    project = make_project(tmp_path)
    (project / "config").symlink_to(ROOT / "config")
    priorities = _read_workflow(project, _RULE_PRIORITIES, "config/rehearsal.yaml")
    first = {"train_model", "retrieval_table"}
    assert min(priorities[rule] for rule in first) > max(p for rule, p in priorities.items() if rule not in first)


_RULE_THREADS = _LOAD_WORKFLOW + """
    print(json.dumps({rule.name: rule.resources["_cores"].value for rule in workflow.rules
                      if not rule.resources["_cores"].is_evaluable()}))
"""


def test_embedding_shards_take_their_cores_from_the_config(tmp_path):
    """text.threads sets an embedding shard job's cores (torch threads, SLURM cpus-per-task):
    1 by default, so that on 2 cores two shards run side by side (a 2-thread shard used 1.06
    cores, benchmarks/scale.md)."""
    project = make_project(tmp_path)
    (project / "config").symlink_to(ROOT / "config")
    (project / "three.yaml").write_text("text:\n  threads: 3\n")
    assert _read_workflow(project, _RULE_THREADS, "config/rehearsal.yaml")["embed_shard"] == 1
    assert _read_workflow(project, _RULE_THREADS, "three.yaml")["embed_shard"] == 3


def test_paper_config_dry_run_schedules_its_own_jobs_on_the_right_partitions(tmp_path, monkeypatch):
    """config/paper.yaml under the SLURM profile: only its own encoder, the expected number of
    jobs per rule; partition and account from the environment, a GPU only for jobs that use one
    (config keys take precedence: tests/test_cluster_resources.py; localrules: tests/test_cluster.py)."""
    monkeypatch.setenv("SBATCH_ACCOUNT", "proj42")
    monkeypatch.setenv("SBATCH_PARTITION", "cpuq")
    monkeypatch.setenv("MNM_SLURM_GPU_PARTITION", "gpuq")
    project = make_project(tmp_path)
    (project / "config").symlink_to(ROOT / "config")
    result = snakemake(project, "-n", "--configfile", "config/paper.yaml", "--profile", "profiles/slurm")
    counts = job_counts(result.stdout)
    paper = yaml.safe_load((ROOT / "config/paper.yaml").read_text())
    n_shards, sections = paper["text"]["n_shards"], paper["text"]["sections"]
    n_models = len(paper["models"].get("names") or validate_config({})["models"]["names"])
    n_folds = paper["folds"]["n_folds"]
    # only the paper's encoder: one shard job per (shard, section), one gather per section
    assert counts["embed_shard"] == n_shards * len(sections)
    assert counts["gather_embeddings"] == len(sections)
    assert "minilm" not in result.stdout
    # bookkeeping (metrics, tables, figures, gathers) runs locally; with source pubget the
    # corpus job too (it needs the network)
    assert _submitted_rules(project, "config/paper.yaml") & set(counts) == HEAVY_RULES & set(counts)
    assert counts["train_model"] == n_models * len(paper["models"]["sections"]) * n_folds
    assert counts["train_model_all"] == n_models * len(paper["models"]["sections"])
    jobs = _job_resources(result.stdout)
    for resources in jobs["embed_shard"]:  # paper config: text.device cuda
        assert (resources["gpu"], resources["slurm_partition"]) == ("1", "gpuq")
    for rule in ("atlas", "coefficients", "brain_qc"):
        for resources in jobs[rule]:
            assert resources["slurm_partition"] == "cpuq", rule
            assert resources.get("gpu", "0") == "0", rule
    for resources in jobs["train_model"]:
        torch_model = not any(f"model={m}," in resources["_wildcards"] for m in ("ridge", "tfidf"))
        assert (resources["gpu"], resources["slurm_partition"]) == (("1", "gpuq") if torch_model else ("0", "cpuq"))
    assert all(r["slurm_account"] == "proj42"
               for rule in ("embed_shard", "atlas", "coefficients", "train_model") for r in jobs[rule])


def test_several_atlases_train_and_report_each(tmp_path):
    """brain.atlases with two atlases: brain features, every training job and the map
    evaluation per atlas; the sweep, the Poincare figure and the examples on the first."""
    atlases = ["aicha", "harvard_oxford"]
    project = make_project(tmp_path, {"brain": {"atlases": atlases}, "folds": {"n_repeats": 1}})
    counts = job_counts(snakemake(project, "-n").stdout)
    config = validate_config({"brain": {"atlases": atlases}})
    n_models, n_sections = len(config["models"]["names"]), len(config["models"]["sections"])
    assert counts["atlas"] == counts["coefficients"] == counts["brain_qc"] == 2
    assert counts["train_model"] == 2 * n_models * n_sections * config["folds"]["n_folds"]
    assert counts["train_model_all"] == 2 * n_models * n_sections
    assert counts["map_dice"] == 2 * n_models
    assert counts["train_tradeoff"] == 12 and counts["poincare"] == counts["map_examples"] == 1
    assert counts["retrieval_table"] == counts["hierarchy"] == 1  # one table per atlas inside


def test_rehearsal_recipe_is_every_models_recipe():
    """config/rehearsal.yaml over config.yaml, merged as Snakemake merges them: every model
    trains with the rehearsal's epochs (a model's own override in config.yaml, Text2Brain's 20
    epochs, once leaked into the rehearsal and made its jobs 10 times longer)."""
    from snakemake.utils import update_config

    from mnm.train import recipe_of

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    update_config(config, yaml.safe_load((ROOT / "config/rehearsal.yaml").read_text()))
    config = validate_config(config)
    shared = config["models"]["training"]
    for name in config["models"]["names"]:
        recipe = recipe_of(config["models"], name)
        assert (recipe.max_epochs, recipe.patience) == (shared["max_epochs"], shared["patience"]), name


def test_rehearsal_dry_run_schedules_the_papers_jobs_whatever_the_articles(tmp_path):
    """config/rehearsal.yaml under the SLURM profile at 20,000 generated articles: exactly the
    paper's job structure (its own encoder only, 8 shards x 2 sections, every model x 2
    sections x 10 folds, fold all, the sweep), counted from the config alone (no term depends
    on the number of articles), light rules local, resources from the config."""
    project = make_project(tmp_path)
    (project / "config").symlink_to(ROOT / "config")
    rehearsal = validate_config(yaml.safe_load((ROOT / "config/rehearsal.yaml").read_text()))
    text, models = rehearsal["text"], rehearsal["models"]
    n_sections, n_models, n_folds = len(models["sections"]), len(models["names"]), rehearsal["folds"]["n_folds"]
    expected = {
        "generate_pubget": 1, "tiny_mistral": 1, "corpus": 1, "folds": 1, "atlas": 1, "coefficients": 1,
        "brain_qc": 1, "embed_shard": text["n_shards"] * len(text["sections"]),
        "gather_embeddings": len(text["sections"]), "train_model": n_models * n_sections * n_folds,
        "train_model_all": n_models * n_sections,
        "train_tradeoff": len(models["tradeoff"]["lambda_hier"]) * len(models["tradeoff"]["radius_heads"]),
        "map_dice": n_models, "retrieval_table": 1, "recall_figure": 1, "hierarchy": 1, "tradeoff": 1,
        "poincare": 1, "map_prediction": 1, "map_examples": 1, "report_index": 1, "all": 1,
        **({"kde_maps": 1} if "text2brain" in models["names"] else {}),  # voxel-map targets
        **({"term_counts": n_sections} if "tfidf" in models["names"] else {}),  # TF-IDF's counted texts
    }
    result = snakemake(project, "-n", "--configfile", "config/rehearsal.yaml", "--config",
                       "rehearsal_articles=20000", "--profile", "profiles/slurm")
    counts = job_counts(result.stdout)
    assert {rule: count for rule, count in counts.items() if rule != "total"} == expected
    assert "minilm" not in result.stdout and "articles-20000_seed-0" in result.stdout
    assert _submitted_rules(project, "config/rehearsal.yaml") & set(counts) == HEAVY_RULES & set(counts) | {
        "corpus", "generate_pubget"}
    jobs = _job_resources(result.stdout)
    for rule in ("corpus", "atlas", "coefficients", "embed_shard", "train_model", "map_dice"):
        spec = rehearsal["resources"][rule]
        assert all((r["mem_mb"], r["runtime"]) == (str(spec["mem_mb"]), str(spec["runtime"]))
                   for r in jobs[rule]), rule
        assert all(r.get("gpu", "0") == "0" for r in jobs[rule]), rule  # devices are cpu


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
    for _, repeat in folds.groupby("repeat"):
        assert set(repeat.article_id) == set(articles.article_id)
        assert repeat.fold.value_counts().tolist() == [64] * 5
    assert folds["repeat"].nunique() == 3
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
        assert not re.search(r"\bgres\b", rules.read_text()), rules.name
    # SLURM logs of every job are kept under results/logs/slurm
    assert profile["slurm-logdir"] == "results/logs/slurm"
    assert profile["slurm-keep-successful-logs"] is True


def test_a_training_job_sees_only_its_models_settings():
    """Rules pass config_of_model, so that editing one model's settings changes the params (and
    so reruns the jobs) of that model only; training reads the same values as from the whole
    section."""
    from mnm.registry import MODEL_NAMES, config_of_model
    from mnm.train import model_params, recipe_of

    models = _default_config()["models"]
    models = validate_config({"models": models})["models"]
    for name in MODEL_NAMES:
        own = config_of_model(models, name)
        assert set(own) == {"mnm" if name.startswith("mnm") else name, "training"}
        assert model_params(own, name) == model_params(models, name)
        assert recipe_of(own, name) == recipe_of(models, name)
    edited = copy.deepcopy(models)
    edited["ridge"]["alphas"] = [1.0]
    for name in MODEL_NAMES:
        changed = config_of_model(edited, name) != config_of_model(models, name)
        assert changed == (name == "ridge"), name
