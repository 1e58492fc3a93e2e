"""The cost accounting of the paper-scale rehearsal (benchmarks/scale.py, mnm.io.job_usage)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from mnm.io import USAGE_PATTERN

REPO = Path(__file__).resolve().parents[1]
BENCH_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time"

JOB = """
import sys, time, types
import numpy as np
from mnm.io import logged_job

def resident_kb():  # current resident set (statm, pages), not a high-water mark
    return int(open("/proc/self/statm").read().split()[1]) * 4096 // 1024

with logged_job(types.SimpleNamespace(log=[sys.argv[1]], rule="probe")):
    before_kb = resident_kb()
    block = np.ones(300 * 2**20 // 8)  # 300 MiB, every page touched
    start = time.process_time()
    while time.process_time() - start < 0.3:
        block[:1000] += 1.0
    del block
    own_cpu = time.process_time()
print(own_cpu, before_kb)
"""


def load_benchmark(name: str, script: str):
    """Import ``benchmarks/<script>`` (a script folder, not a package) as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def scale():
    return load_benchmark("scale_bench", "scale.py")


def test_job_log_ends_with_the_kernels_cpu_time_and_peak_memory(tmp_path):
    log = tmp_path / "job.log"
    result = subprocess.run([sys.executable, "-c", JOB, str(log)], capture_output=True, text=True, check=True)
    own_cpu, before_kb = map(float, result.stdout.split())
    usage = re.search(USAGE_PATTERN, log.read_text().splitlines()[-1])
    # The peak outlives the freed block: what was resident before it plus its 300 MiB, not the
    # memory of the (larger) pytest process this job was forked from.
    assert float(usage["max_rss_mb"]) == pytest.approx(before_kb / 1024 + 300, abs=30)
    # CPU time since the process started, read after the body: at least what the body saw
    # (getrusage ticks at 10 ms on Linux, clock_gettime finer).
    assert own_cpu - 0.02 <= float(usage["cpu_s"]) < own_cpu + 1.0


def _job(project: Path, name: str, bench: tuple[float, float, float], usage=None) -> dict:
    bench_file, log_file = f"benchmarks/{name}.tsv", f"logs/{name}.log"
    (project / "benchmarks").mkdir(exist_ok=True)
    (project / "logs").mkdir(exist_ok=True)
    seconds, max_rss, cpu = bench
    (project / bench_file).write_text(f"{BENCH_HEADER}\n{seconds}\t0:00:40\t{max_rss}\t0\t0\t0\t0\t0\t0\t{cpu}\n")
    (project / log_file).write_text("2026 INFO mnm: hello\n" + (
        f"2026 INFO mnm: job usage: cpu_s={usage[0]:.2f} max_rss_mb={usage[1]:.1f}\n" if usage else ""))
    return {"rule": "train", "output": [], "benchmark": bench_file, "log": log_file}


def test_rule_costs_take_the_logs_usage_over_snakemakes_samples(scale, tmp_path):
    jobs = [_job(tmp_path, "exact", (40.0, 2000.0, 15.0), usage=(38.5, 5000.0)),
            _job(tmp_path, "sampled", (10.0, 800.0, 9.0))]
    costs = scale.rule_costs(tmp_path, jobs)["train"]
    assert costs["seconds"] == pytest.approx(50.0)  # wall time: the benchmark's
    assert costs["cpu_s"] == pytest.approx(38.5 + 9.0)
    assert costs["max_rss_mb"] == pytest.approx(5000.0)
    assert (costs["measured_jobs"], costs["sampled_jobs"]) == (2, 1)


def test_dry_run_listing_gives_each_jobs_log(scale):
    listing = """
rule train_model:
    input: a.parquet
    output: results/m/fold-0/model.safetensors, results/m/fold-0/history.parquet
    log: results/logs/m/fold-0.log
    jobid: 3
    benchmark: results/benchmarks/m/fold-0.tsv

localrule folds:
    output: results/folds.parquet
    log: results/logs/folds.log
    jobid: 1
"""
    jobs = scale.planned_jobs(listing)
    assert [(j["rule"], j["log"], j["benchmark"]) for j in jobs] == [
        ("train_model", "results/logs/m/fold-0.log", "results/benchmarks/m/fold-0.tsv"),
        ("folds", "results/logs/folds.log", None)]
    assert jobs[0]["output"] == ["results/m/fold-0/model.safetensors", "results/m/fold-0/history.parquet"]


def test_embeddings_written_in_blocks_read_back_as_one_table(tmp_path):
    from mnm.scoring import read_embeddings, write_embedding_blocks, write_embeddings

    rng = np.random.default_rng(0)
    ids = np.array([f"PMC{i}" for i in range(10)], dtype=object)
    text, brain = rng.normal(size=(10, 3)).astype(np.float32), rng.normal(size=(10, 5)).astype(np.float32)
    n_active = rng.integers(1, 9, size=10).astype(np.float32)
    write_embeddings(tmp_path / "one.parquet", ids, text, brain, n_active, "angle", 0.5, "brain")
    blocks = [(ids[s], text[s], brain[s], n_active[s]) for s in (slice(0, 4), slice(4, 8), slice(8, 10))]
    write_embedding_blocks(tmp_path / "blocks.parquet", iter(blocks), "angle", 0.5, "brain")
    assert pq.ParquetFile(tmp_path / "blocks.parquet").metadata.num_row_groups == 3
    one, many = read_embeddings(tmp_path / "one.parquet"), read_embeddings(tmp_path / "blocks.parquet")
    for a, b in zip(one[:3], many[:3]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(many[2], brain)  # and equal to the arrays written
    assert many[3]["curvature"] == 0.5 and many[3]["kind"] == "angle"
    np.testing.assert_array_equal(many[3]["n_active"], n_active)


def test_training_on_fit_rows_equals_training_on_their_copies():
    import torch

    from mnm.trained import build_torch_module
    from mnm.training.loop import Recipe, train_torch_model

    rng = np.random.default_rng(1)
    X = rng.normal(size=(90, 6)).astype(np.float32)
    Y = (X @ rng.normal(size=(6, 8))).astype(np.float32)
    n_active = rng.integers(1, 8, size=90).astype(np.float32)
    fit, val = rng.permutation(90)[:70], np.arange(70, 90)
    recipe = Recipe.from_config({"batch_size": 16, "max_epochs": 3, "lr": 1e-3, "patience": None})
    runs = []
    for kwargs in ({"X_fit": X[fit], "Y_fit": Y[fit], "n_active_fit": n_active[fit]},
                   {"X_fit": X, "Y_fit": Y, "n_active_fit": n_active, "fit_rows": fit}):
        torch.manual_seed(0)
        module = build_torch_module("mnm", 6, 8, latent_dim=4)
        history, _ = train_torch_model(module, X_val=X[val], Y_val=Y[val], recipe=recipe, seed=3,
                                       progress=False, **kwargs)
        runs.append((history, module.state_dict()))
    (h1, s1), (h2, s2) = runs
    assert h1["train_loss"].iloc[1:].notna().all()
    np.testing.assert_array_equal(h1["train_loss"].to_numpy(), h2["train_loss"].to_numpy())
    for name in s1:
        torch.testing.assert_close(s1[name], s2[name], rtol=0, atol=0)


def test_report_table_exponents_and_a_stable_rule_order(scale):
    """Exponents against the hand-worked slope (CPU x 20 over 20 x the articles: 1; output
    x 400: 2), partially measured sizes left out, rules of equal cost ordered by name."""
    def run(n, cost, jobs_done):
        rules = {name: {"jobs": 2, "measured_jobs": jobs_done, "sampled_jobs": 0, "seconds": cost,
                        "cpu_s": cost, "max_rss_mb": 100.0, "output_mb": cost * cost / 100}
                 for name in ("zeta", "alpha")}
        return {"articles_generated": n, "articles_kept": n, "started": "2026-12-05T08:00", "cores": 2,
                "n_jobs": 4, "wall_s": 60.0, "noop_rerun_s": 1.0, "machine": "m", "command": "c",
                "rules": rules}

    table = scale.render({"1000": run(1000, 10.0, 2), "5000": run(5000, 999.0, 1), "20000": run(20000, 200.0, 2)})
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith(("| alpha", "| zeta"))]
    assert [row[0] for row in rows] == ["| alpha", "| zeta"]
    for row in rows:
        assert row[-3:] == ["1.00", "0.00", "2.00 |"]
        assert "(1/2 jobs)" in row[9]


def test_speed_probe_times_its_workload_in_a_fresh_python(scale, monkeypatch):
    """The probe is the best of its runs of the workload in a new interpreter: a workload that
    sleeps 0.3 s takes at least that (plus the interpreter's start); a failing one raises."""
    monkeypatch.setattr(scale, "SPEED_PROBE", "import time; time.sleep(0.3)")
    assert 0.3 <= scale.speed_probe(repeats=2) < 10
    monkeypatch.setattr(scale, "SPEED_PROBE", "raise SystemExit(3)")
    with pytest.raises(subprocess.CalledProcessError):
        scale.speed_probe(repeats=1)


TIMELINE_LOG = """\
[Mon Dec  7 10:00:00 2026]
localrule corpus:
    jobid: 1
[Mon Dec  7 10:00:10 2026]
rule embed_shard:
    jobid: 2
[Mon Dec  7 10:00:30 2026]
Finished jobid: 1 (Rule: corpus)
[Mon Dec  7 10:00:30 2026]
rule train_model:
    jobid: 3
[Mon Dec  7 10:01:00 2026]
Finished jobid: 2 (Rule: embed_shard)
[Mon Dec  7 10:01:40 2026]
Finished jobid: 3 (Rule: train_model)
"""


def test_dag_timeline_counts_the_seconds_each_number_of_jobs_ran():
    timeline = load_benchmark("dag_timeline", "dag_timeline.py")
    spans = timeline.job_spans(TIMELINE_LOG.splitlines())
    assert [name for name, _, _ in spans] == ["corpus", "embed_shard", "train_model"]
    levels, alone = timeline.concurrency(spans)
    # worked by hand: corpus alone 0-10 s, two jobs 10-60 s, train_model alone 60-100 s
    assert (levels[0], levels[1], levels[2]) == (0, 50, 50)
    assert alone == {"corpus": 10, "train_model": 40}
