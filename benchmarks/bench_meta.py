"""Cost of ``mnm query TEXT --meta-analysis ale|mkda`` on a finished run.

Run from the project folder of a finished run (the default run: ``snakemake --cores all``
first); it only reads the run and writes into a temporary folder:

    python benchmarks/bench_meta.py [--config config.yaml] [--top-k 10] [--text "..."]

Prints

* the wall time of the command line (a fresh process, as a user runs it) without and with
  ``--meta-analysis ale`` and ``--meta-analysis mkda``, and the difference;
* inside one process: the NiMARE import (what the flag adds to the start-up), the first
  estimator fit (numba compiles NiMARE's kernels) and a second fit, per method, with the
  number of articles, peaks and the correlation with the decoder map.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEXT = "working memory load in the dorsolateral prefrontal cortex"


def cli_seconds(args: list[str], out: Path) -> tuple[float, dict]:
    """Wall time of one ``mnm query`` process and its JSON output."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "mnm.cli", "query", *args, "--json",
                             "--out", str(out)], capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"mnm query failed:\n{result.stderr[-3000:]}")
    return seconds, json.loads(result.stdout)


def in_process(config: str, text: str, top_k: int) -> None:
    from mnm.query import open_run, query_text

    run = open_run(config)
    table, maps = query_text(run, text, top_k)
    start = time.perf_counter()
    import nimare.meta.cbma  # noqa: F401
    import nimare.nimads  # noqa: F401

    print(f"NiMARE import (torch already loaded): {time.perf_counter() - start:6.2f} s")
    from mnm.meta import METHODS, meta_analysis

    for method in METHODS:
        for attempt in ("first", "second"):
            start = time.perf_counter()
            result = meta_analysis(run, table, method, predicted=maps.get("decoder"))
            total = time.perf_counter() - start
            print(f"{method:>4} {attempt:>6} call: {total:6.2f} s (estimator {result.seconds:5.2f} s)"
                  f", {len(result.article_ids)} articles, {result.n_peaks} peaks, "
                  f"r(z, decoder) = {result.correlation:.3f} over {result.n_voxels} voxels")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--text", default=TEXT)
    args = parser.parse_args()
    common = [args.text, "--config", args.config, "--top-k", str(args.top_k)]
    with tempfile.TemporaryDirectory() as tmp:
        base, _ = cli_seconds(common, Path(tmp) / "plain")
        print(f"mnm query (no meta-analysis):       {base:6.1f} s")
        for method in ("ale", "mkda"):
            seconds, payload = cli_seconds([*common, "--meta-analysis", method], Path(tmp) / method)
            meta = payload["meta_analysis"]
            print(f"mnm query --meta-analysis {method:<4}:    {seconds:6.1f} s (+{seconds - base:.1f} s; "
                  f"estimator {meta['seconds']:.2f} s, r = {meta['correlation_with_decoder_map']:.3f})")
    in_process(args.config, args.text, args.top_k)


if __name__ == "__main__":
    main()
