"""Paper-scale rehearsal: run ``config/rehearsal.yaml`` at several corpus sizes, per-rule costs.

For each size N (generated articles) the whole DAG runs in a scratch copy of the project::

    snakemake --configfile config/rehearsal.yaml --config rehearsal_articles=N --cores C

then once more (it must do nothing: the no-op rerun time). Per rule, from Snakemake's own
benchmark files (every rule declares ``benchmark:``) and the dry run's job listing: number of
jobs, job time (sum over the rule's jobs, and the longest job), peak RSS (largest job) and
the size of the rule's outputs (temp() outputs are gone after the run: size 0, marked).
Results of every size measured so far are kept in ``benchmarks/scale.json`` (one entry per
size, replaced when that size is measured again), and the tables of ``benchmarks/scale.md``
between the ``<!-- measured -->`` markers are rewritten from all of them, with the growth
exponent of each rule (slope of a least-squares line of log cost against log N). The text
outside the markers (notes, GPU plan) is left alone.

Run (a quiet machine; on 2 cores with the code of d8ce95f, 1,000 articles took 16 minutes, 5,000
28 and 20,000 60 minutes on the night of 2026-12-07, and 20,000 took 79 minutes on a slower 2-core
VM of the same kind that evening, see scale.md)::

    python benchmarks/scale.py --sizes 1000 5000 20000 --cores 2

``--workdir`` (default a temporary folder) keeps the scratch projects with ``--keep``. A run
cut short (a shared machine, a time limit) is recorded from what finished with
``--collect <workdir>/articles-N --sizes N --started ... --wall-s ...`` (marked partial);
``--refresh-costs <workdir>/articles-N --sizes N`` re-reads a kept run's per-rule costs.

Each run's machine column holds a speed probe taken before and after it (:func:`speed_probe`;
``--probe`` prints it alone): the same VM has run the same jobs 1.5-1.9 times slower on one
day than on another.

CPU time and peak memory per job come from the ``job usage`` line every job writes last in its
log (:func:`mnm.io.job_usage`: the kernel's accounting), and only where a log lacks it from
Snakemake's benchmark file, which samples them (every 30 s after a job's first 15 s).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))  # mnm of this checkout
RESULTS_JSON = REPO / "benchmarks" / "scale.json"
REPORT_MD = REPO / "benchmarks" / "scale.md"
CONFIGFILE = "config/rehearsal.yaml"
RESULTS_DIR = "results_rehearsal"
BEGIN, END = "<!-- measured:begin -->", "<!-- measured:end -->"
#: Targets of issue 12 at 20,000 articles on 2 cores.
TARGET_RSS_MB = 8000
TARGET_DAG_MINUTES = 60
TARGET_NOOP_SECONDS = 10


# --------------------------------------------------------------------------------------
# Running Snakemake in a scratch project
# --------------------------------------------------------------------------------------
def make_project(workdir: Path, n_articles: int) -> Path:
    """A scratch project: Snakefile and config.yaml copied, code and configs linked."""
    project = workdir / f"articles-{n_articles}"
    if project.exists():
        shutil.rmtree(project)
    project.mkdir(parents=True)
    for name in ("Snakefile", "config.yaml"):
        shutil.copy(REPO / name, project / name)
    for name in ("workflow", "profiles", "envs", "config"):
        (project / name).symlink_to(REPO / name)
    return project


def workflow_env() -> dict:
    """This environment with the ``mnm`` of this checkout first on ``PYTHONPATH``."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "workflow"),
                                                                        os.environ.get("PYTHONPATH")]))}


def snakemake(project: Path, n_articles: int, *args: str, log: Path, niceness: int = 0) -> tuple[float, str]:
    """Run Snakemake on the rehearsal config in ``project``; return (seconds, output)."""
    command = [sys.executable, "-m", "snakemake", "--configfile", CONFIGFILE,
               "--config", f"rehearsal_articles={n_articles}", *args]
    env = {**workflow_env(), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg"}
    start = time.perf_counter()
    result = subprocess.run(command, cwd=project, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, preexec_fn=(lambda: os.nice(niceness)) if niceness else None)
    seconds = time.perf_counter() - start
    with open(log, "a") as stream:
        stream.write(f"$ {' '.join(command)}\n{result.stdout}\n")
    if result.returncode != 0:
        raise RuntimeError(f"snakemake {' '.join(args)} failed in {project} (see {log}):\n{result.stdout[-4000:]}")
    return seconds, result.stdout


def planned_jobs(dry_run: str) -> list[dict]:
    """Every job of a dry run's listing: rule, outputs, log and benchmark file."""
    jobs, job = [], None
    for line in dry_run.splitlines():
        match = re.match(r"^(?:local)?rule (\w+):$", line)
        if match:
            job = {"rule": match.group(1), "output": [], "benchmark": None, "log": None}
            jobs.append(job)
        elif job is not None and line.startswith("    output: "):
            job["output"] = [p.strip() for p in line.split(":", 1)[1].split(",")]
        elif job is not None and line.startswith("    log: "):
            job["log"] = line.split(":", 1)[1].split(",")[0].strip()
        elif job is not None and line.startswith("    benchmark: "):
            job["benchmark"] = line.split(":", 1)[1].strip()
        elif line and not line.startswith(" "):
            job = None
    return jobs


def read_benchmark(path: Path) -> dict:
    """The last row of a Snakemake benchmark file: s, max_rss (MB), cpu_time."""
    header, *rows = path.read_text().strip().splitlines()
    row = dict(zip(header.split("\t"), rows[-1].split("\t")))

    def number(key):
        try:
            return float(row.get(key, "nan"))
        except ValueError:
            return math.nan

    return {"s": number("s"), "max_rss": number("max_rss"), "cpu_time": number("cpu_time")}


def logged_usage(path: Path) -> dict | None:
    """CPU seconds and peak RSS (MB) of a job as its log's last ``job usage`` line states
    them (:func:`mnm.io.job_usage`, exact), or None (no log, or a job of older code)."""
    if not path.is_file():
        return None
    from mnm.io import USAGE_PATTERN

    found = list(re.finditer(USAGE_PATTERN, path.read_text(errors="replace")))
    if not found:
        return None
    return {"cpu_time": float(found[-1]["cpu_s"]), "max_rss": float(found[-1]["max_rss_mb"])}


def path_size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def rule_costs(project: Path, jobs: list[dict]) -> dict[str, dict]:
    """Per rule: jobs, total and longest job time, CPU time, peak RSS, output size."""
    rules: dict[str, dict] = {}
    for job in jobs:
        if job["rule"] == "all":
            continue
        entry = rules.setdefault(job["rule"], {"jobs": 0, "seconds": 0.0, "longest_s": 0.0, "cpu_s": 0.0,
                                               "max_rss_mb": 0.0, "output_mb": 0.0, "missing_outputs": 0,
                                               "measured_jobs": 0})
        entry["jobs"] += 1
        if job["benchmark"] and (project / job["benchmark"]).is_file():
            entry["measured_jobs"] += 1
            bench = read_benchmark(project / job["benchmark"])
            exact = logged_usage(project / job["log"]) if job["log"] else None
            entry["sampled_jobs"] = entry.get("sampled_jobs", 0) + (exact is None)
            bench |= exact or {}
            entry["seconds"] += bench["s"]
            entry["longest_s"] = max(entry["longest_s"], bench["s"])
            entry["cpu_s"] += 0.0 if math.isnan(bench["cpu_time"]) else bench["cpu_time"]
            entry["max_rss_mb"] = max(entry["max_rss_mb"], 0.0 if math.isnan(bench["max_rss"]) else bench["max_rss"])
        for output in job["output"]:
            path = project / output
            entry["output_mb"] += path_size(path) / 1e6
            entry["missing_outputs"] += not path.exists()
    return rules


#: A fixed one-core workload like a small job's: import the training code, then torch matmuls.
SPEED_PROBE = ("import mnm.train, torch; torch.set_num_threads(1); "
               "a = torch.randn(1024, 1024, generator=torch.Generator().manual_seed(0)); "
               "[a @ a for _ in range(100)]")


def speed_probe(repeats: int = 3) -> float:
    """Seconds :data:`SPEED_PROBE` takes in a fresh Python (best of ``repeats``).

    The same VM ran the same jobs 1.5-1.9 times slower on one day than on another (CPU
    seconds, benchmarks/scale.md): runs measured on different days compare only beside
    this figure, taken before and after each run.
    """
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", SPEED_PROBE], env=workflow_env(), check=True)
        times.append(time.perf_counter() - start)
    return min(times)


def measure(n_articles: int, workdir: Path, cores: int, niceness: int, keep: bool) -> dict:
    """Run the rehearsal at ``n_articles`` and return its measurements."""
    project = make_project(workdir, n_articles)
    log = project / "scale_run.log"
    _, dry = snakemake(project, n_articles, "-n", log=log, niceness=niceness)
    jobs = planned_jobs(dry)
    probe_before = speed_probe()
    load_before = os.getloadavg()
    started = dt.datetime.now().astimezone()
    wall, _ = snakemake(project, n_articles, "--cores", str(cores), log=log, niceness=niceness)
    load_after = os.getloadavg()
    probe_after = speed_probe()
    noop, output = snakemake(project, n_articles, "--cores", str(cores), log=log, niceness=niceness)
    if "Nothing to be done" not in output:
        raise RuntimeError(f"the rerun in {project} was not a no-op (see {log})")
    corpus = project / RESULTS_DIR / "corpus" / "articles.parquet"
    import pyarrow.parquet as pq

    result = {
        "articles_generated": n_articles,
        "articles_kept": pq.ParquetFile(corpus).metadata.num_rows,
        "started": started.isoformat(timespec="seconds"),
        "cores": cores,
        "machine": f"{platform.node()}, {os.cpu_count()} CPUs visible, load average "
                   f"{load_before[0]:.1f} before / {load_after[0]:.1f} after; speed probe "
                   f"{probe_before:.1f} s before / {probe_after:.1f} s after",
        "command": f"snakemake --configfile {CONFIGFILE} --config rehearsal_articles={n_articles} --cores {cores}",
        "wall_s": wall,
        "noop_rerun_s": noop,
        "n_jobs": sum(1 for j in jobs if j["rule"] != "all"),
        "rules": rule_costs(project, jobs),
    }
    if not keep:
        shutil.rmtree(project)
    return result


def kept_run_jobs(project: Path, n_articles: int) -> list[dict]:
    """Every job of the rehearsal in ``project`` (a forced dry run: finished jobs included)."""
    _, dry = snakemake(project, n_articles, "-n", "--forceall", "--nolock", log=project / "scale_collect.log")
    return planned_jobs(dry)


def collect(project: Path, n_articles: int, cores: int, started: str, wall_s: float | None,
            command: str | None = None) -> dict:
    """Measurements of a rehearsal run already made (or interrupted) in ``project``: the
    per-rule costs of the jobs that finished; no no-op rerun."""
    jobs = kept_run_jobs(project, n_articles)
    rules = rule_costs(project, jobs)
    done = sum(1 for j in jobs if j["benchmark"] and (project / j["benchmark"]).is_file())
    corpus = project / RESULTS_DIR / "corpus" / "articles.parquet"
    import pyarrow.parquet as pq

    return {
        "articles_generated": n_articles,
        "articles_kept": pq.ParquetFile(corpus).metadata.num_rows if corpus.is_file() else 0,
        "started": started, "cores": cores,
        "machine": f"{platform.node()}, {os.cpu_count()} CPUs visible, load average {os.getloadavg()[0]:.1f} at collection",
        "command": command or f"snakemake --configfile {CONFIGFILE} --config rehearsal_articles={n_articles} --cores {cores}",
        "wall_s": wall_s, "noop_rerun_s": None,
        "n_jobs": sum(1 for j in jobs if j["rule"] != "all"), "jobs_done": done, "partial": True,
        "rules": rules,
    }


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------
def growth_exponent(sizes, values) -> float | None:
    """Slope of the least-squares line of log(value) on log(size); None below 2 sizes."""
    points = [(math.log(s), math.log(v)) for s, v in zip(sizes, values) if v and v > 0]
    if len({x for x, _ in points}) < 2:
        return None
    x, y = np.array(points).T
    return float(np.polyfit(x, y, 1)[0])


def _fmt(value, digits=0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    # + 0.0: a flat cost's slope rounds to -0.0 (polyfit gives -1e-17 on some BLAS); show 0.00
    return f"{round(value, digits) + 0.0:,.{digits}f}"


def render(results: dict) -> str:
    """Markdown tables of every measured size (keys: article counts as strings)."""
    sizes = sorted(results, key=int)
    runs = [results[s] for s in sizes]
    lines = ["| articles generated (kept) | date | cores | jobs | DAG wall time | no-op rerun | largest peak RSS (rule) | machine |",
             "|---|---|---|---|---|---|---|---|"]
    for run in runs:
        peak_rule, peak = max(run["rules"].items(), key=lambda item: item[1]["max_rss_mb"])
        lines.append(
            f"| {run['articles_generated']:,} ({run['articles_kept']:,}) | {run['started'][:16]} | {run['cores']} | "
            f"{run['n_jobs']} ({run.get('jobs_done', run['n_jobs'])} done) | "
            f"{_fmt(run['wall_s'] and run['wall_s'] / 60, 1)} min | {_fmt(run['noop_rerun_s'], 1)} s | "
            f"{peak['max_rss_mb'] / 1000:.2f} GB ({peak_rule}) | {run['machine']} |")
    lines += ["", "Commands: " + "; ".join(f"`{run['command']}`" for run in runs), ""]
    # Most CPU first; rules of equal cost by name, so that a re-render gives the same table.
    rules = sorted({r for run in runs for r in run["rules"]},
                   key=lambda r: (-max(run["rules"].get(r, {}).get("cpu_s") or 0 for run in runs), r))
    n = [run["articles_generated"] for run in runs]
    header = ["rule", "jobs"]
    for s in sizes:
        header += [f"time {int(s):,} (s)", f"CPU {int(s):,} (s)", f"peak RSS {int(s):,} (MB)",
                   f"output {int(s):,} (MB)"]
    header += ["exponent CPU", "exponent RSS", "exponent output"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rule in rules:
        entries = [run["rules"].get(rule, {}) for run in runs]
        jobs = "/".join(sorted({str(e.get("jobs", 0)) for e in entries}))
        row = [rule, jobs]
        for e in entries:
            if not e.get("measured_jobs", e.get("jobs", 0)):  # not run (an interrupted run)
                row += ["-"] * 4
                continue
            temp = " (temp)" if e.get("missing_outputs") else ""
            if e.get("measured_jobs", e.get("jobs")) < e.get("jobs", 0):
                temp += f" ({e['measured_jobs']}/{e['jobs']} jobs)"
            sampled = " *" if e.get("sampled_jobs", 1) else ""  # older entries: all sampled
            row += [_fmt(e.get("seconds"), 1), _fmt(e.get("cpu_s"), 1) + sampled,
                    _fmt(e.get("max_rss_mb")) + sampled, _fmt(e.get("output_mb"), 1) + temp]
        complete = [e.get("measured_jobs", e.get("jobs")) == e.get("jobs") for e in entries]
        exact = [c and not e.get("sampled_jobs", 1) for c, e in zip(complete, entries)]
        for key, usable in (("cpu_s", exact), ("max_rss_mb", exact), ("output_mb", complete)):
            row.append(_fmt(growth_exponent([s for s, c in zip(n, usable) if c],
                                            [e.get(key) for e, c in zip(entries, usable) if c]), 2))
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "time: wall seconds summed over the rule's jobs (Snakemake benchmark `s`; inflated on a "
              "loaded machine); CPU: CPU seconds summed over the jobs, what a quiet machine would need; "
              "peak RSS: the largest job's; both as the kernel counted them (the `job usage` line each job "
              "writes last in its log, `mnm.io.job_usage`), or, marked *, for some jobs only Snakemake's "
              "benchmark sampling (every 30 s after a job's first 15 s: it under-counts longer jobs and can "
              "miss their peaks); output: size of the rule's outputs after "
              "the run; jobs without a benchmark row yet (an interrupted run) count 0; exponent: slope of "
              "log(cost) against log(articles) over the sizes where every job of the rule ran (CPU and "
              "RSS: and was counted exactly) (1 = linear)."]
    return "\n".join(lines)


def write_report(results: dict, path: Path = REPORT_MD) -> None:
    """Replace the measured part of ``scale.md`` (between the markers) with fresh tables."""
    text = path.read_text() if path.exists() else f"# Paper-scale rehearsal\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text += f"\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{render(results)}\n{END}{tail}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the scratch projects")
    parser.add_argument("--nice", type=int, default=0, help="niceness of the Snakemake runs")
    parser.add_argument("--render-only", action="store_true", help="rewrite scale.md from scale.json")
    parser.add_argument("--probe", action="store_true", help="print the machine's speed probe (seconds) and exit")
    parser.add_argument("--collect", type=Path, default=None, metavar="PROJECT",
                        help="record the jobs finished so far in the scratch project of an interrupted "
                             "run (one --sizes value, --started and --wall-s describe it)")
    parser.add_argument("--started", default="", help="with --collect: when the run started")
    parser.add_argument("--wall-s", type=float, default=None, help="with --collect: how long it ran")
    parser.add_argument("--command", default=None, help="with --collect: the command of that run")
    parser.add_argument("--refresh-costs", type=Path, default=None, metavar="PROJECT",
                        help="re-read the per-rule costs of a measured size (one --sizes value) from "
                             "its kept scratch project, keeping its wall and no-op times")
    args = parser.parse_args(argv)
    if args.probe:
        print(f"speed probe: {speed_probe():.2f} s")
        return
    results = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {}
    if args.refresh_costs:
        entry = results[str(args.sizes[0])]
        entry["rules"] = rule_costs(args.refresh_costs, kept_run_jobs(args.refresh_costs, args.sizes[0]))
        RESULTS_JSON.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    elif args.collect:
        size = args.sizes[0]
        results[str(size)] = collect(args.collect, size, args.cores, args.started, args.wall_s, args.command)
        RESULTS_JSON.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    elif not args.render_only:
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mnm-scale-"))
        for size in args.sizes:
            print(f"rehearsal at {size} articles in {workdir} ...", flush=True)
            results[str(size)] = measure(size, workdir, args.cores, args.nice, args.keep)
            RESULTS_JSON.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
            print(f"  {results[str(size)]['wall_s'] / 60:.1f} min, no-op rerun "
                  f"{results[str(size)]['noop_rerun_s']:.1f} s", flush=True)
    write_report(results)
    print(f"wrote {REPORT_MD}")


if __name__ == "__main__":
    main()
