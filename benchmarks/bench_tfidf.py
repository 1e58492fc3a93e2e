"""What one TF-IDF training job costs, per code version: tokenising in every job, or counting once.

Code that knows the ``term_counts`` rule (``mnm.text.term_counts``) counts the section's terms
once (timed separately: that job runs once per section) and each fold job reads the counts;
older code tokenises every article's text in every job. Each measurement runs
``mnm.train.train_fold`` for one TF-IDF fold in a fresh Python with the ``mnm`` of ``--code``
(the ``workflow`` folder of any checkout, so two versions compare on one machine, one after
the other), with ``config/rehearsal.yaml``'s TF-IDF settings; the versions' test embeddings
are compared (the same vocabulary and idf; the predictions equal to float rounding, 1.5e-8 at
20,000 articles).

Run on the outputs of a rehearsal (a kept ``benchmarks/scale.py`` project)::

    python benchmarks/bench_tfidf.py --results PROJECT/results_rehearsal \\
        --code /path/to/old/checkout/workflow workflow --section body
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from code_versions import PEAK_MB, run_measurement, version_parser

#: Run in a fresh interpreter: argv = code root, results folder, section, fold, scratch folder.
_MEASURE = PEAK_MB + """
import inspect, json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from mnm.train import OUTPUT_FILES, train_fold
from mnm.training.loop import Recipe


results, section, fold, scratch = Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), Path(sys.argv[5])
report = {}
options = {}
if "term_counts" in inspect.signature(train_fold).parameters:
    from mnm.text.term_counts import count_section_terms
    start = time.process_time()
    count_section_terms(results / "corpus" / "articles.parquet", section, scratch / "term_counts.npz")
    report["counting_cpu_s"] = time.process_time() - start
    options["term_counts"] = scratch / "term_counts.npz"
outputs = {0: {key: scratch / name for key, name in OUTPUT_FILES.items()}}
encoder = next((results / "text").glob(f"*/{section}/embeddings.parquet"))
atlas = next((results / "brain").glob("*/coefficients.parquet"))
start = time.process_time()
train_fold("tfidf", encoder, atlas, results / "folds.parquet", results / "corpus" / "articles.parquet", section,
           fold, {"alphas": [0.1, 1.0, 10.0, 100.0, 1000.0], "max_features": 2000}, Recipe(), outputs,
           validation_fraction=0.1, device="cpu", threads=1, **options)
report |= {"job_cpu_s": time.process_time() - start, "peak_mb": peak_mb()}
print(json.dumps(report))
"""


def measure(code: Path, results: Path, section: str, fold: int, scratch: Path) -> dict:
    """CPU seconds (counting, job) and peak MB of one TF-IDF fold with the ``mnm`` under ``code``."""
    scratch.mkdir(parents=True, exist_ok=True)
    return run_measurement(_MEASURE, code, results, section, fold, scratch)


def compare_predictions(first: Path, other: Path) -> str:
    """How far two versions' predictions for the test articles are apart."""
    a, b = (pd.read_parquet(folder / "test_embeddings.parquet") for folder in (first, other))
    if not a["article_id"].equals(b["article_id"]):
        return "test articles differ"
    x, y = np.stack(a["text"]), np.stack(b["text"])
    return f"test predictions differ by at most {np.abs(x - y).max():.1e} (values up to {np.abs(x).max():.1f})"


def main(argv=None) -> None:
    parser = version_parser(__doc__)
    parser.add_argument("--section", default="body")
    parser.add_argument("--fold", type=int, default=0)
    args = parser.parse_args(argv)
    print("| code | counting once (CPU s) | fold job (CPU s) | peak (MB) |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        folders = [Path(scratch) / str(index) for index in range(len(args.code))]
        for code, folder in zip(args.code, folders):
            row = measure(code, args.results, args.section, args.fold, folder)
            counting = f"{row['counting_cpu_s']:.1f}" if "counting_cpu_s" in row else "-"
            print(f"| {code} | {counting} | {row['job_cpu_s']:.1f} | {row['peak_mb']:,.0f} |", flush=True)
        for code, folder in zip(args.code[1:], folders[1:]):
            print(f"{code}: {compare_predictions(folders[0], folder)}")


if __name__ == "__main__":
    main()
