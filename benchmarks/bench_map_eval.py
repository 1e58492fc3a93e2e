"""What one ``map_dice`` job costs: CPU time and peak memory of ``evaluate_model_maps``, per code version.

The map evaluation (rule ``map_dice``, one job per model) scores the predicted maps of 10
held-out articles per fold against their KDE maps by the Dice of their top voxels. Its cost
hardly depends on the corpus size (8 jobs of 45-85 CPU s at 1,000 articles and at 20,000,
``benchmarks/scale.md``): reading the 512-map atlas, fitting the projector and ranking
228,483 brain voxels for every map. Each measurement runs in a fresh Python with the ``mnm`` of
``--code`` (the ``workflow`` folder of any checkout, so two versions compare on one machine,
one after the other), and writes its Dice table, so the versions' tables are compared too.

Run on the outputs of a rehearsal (a kept ``benchmarks/scale.py`` project)::

    python benchmarks/bench_map_eval.py --results PROJECT/results_rehearsal \\
        --code /path/to/old/checkout/workflow workflow --models ridge text2brain

The settings default to ``config/rehearsal.yaml``'s (z-scored coefficients, FWHM 9 mm, 10
articles per fold, fractions 5-30 %).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pandas as pd
from code_versions import PEAK_MB, run_measurement, version_parser

#: Run in a fresh interpreter: argv = code root, results folder, model, output table, settings (JSON).
_MEASURE = PEAK_MB + """
import glob, json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from mnm.report.map_eval import evaluate_model_maps


results, model, out, settings = Path(sys.argv[2]), sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
models = sorted(glob.glob(f"{results}/models/{model}/*/*/*/repeat-0/fold-[0-9]*/model.safetensors"))
tests = [str(Path(m).parent / "test_embeddings.parquet") for m in models]
text = {p.parent.name: p for p in (results / "text").glob("*/*/embeddings.parquet")}
atlas = next((results / "atlas").iterdir())
start = time.process_time()
evaluate_model_maps(models, tests, atlas, results / "corpus" / "peaks.parquet", text,
                    results / "corpus" / "articles.parquet", out, **settings)
print(json.dumps({"folds": len(models), "cpu_s": time.process_time() - start, "peak_mb": peak_mb()}))
"""


def measure(code: Path, results: Path, model: str, out: Path, settings: dict) -> dict:
    """CPU seconds and peak MB of one model's map evaluation with the ``mnm`` under ``code``."""
    return run_measurement(_MEASURE, code, results, model, out, json.dumps(settings))


def compare_tables(first: Path, other: Path) -> str:
    """How far two Dice tables are apart: differing values and the largest difference."""
    a, b = pd.read_parquet(first), pd.read_parquet(other)
    if len(a) != len(b):
        return f"{len(a)} vs {len(b)} rows"
    differ = (a["dice"] - b["dice"]).abs()
    return f"{int((differ > 0).sum())} of {len(a):,} Dice values differ, by at most {differ.max():.1e}"


def main(argv=None) -> None:
    parser = version_parser(__doc__)
    parser.add_argument("--models", nargs="+", default=["ridge"], help="models whose folds are evaluated")
    parser.add_argument("--no-zscore", action="store_true", help="coefficients not z-scored (config.yaml)")
    args = parser.parse_args(argv)
    settings = {"fractions": [0.05, 0.10, 0.15, 0.20, 0.25, 0.30], "fwhm_mm": 9.0, "zscore": not args.no_zscore,
                "articles_per_fold": 10, "seed": 0}
    print("| code | model | folds | CPU (s) | peak (MB) |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        for model in args.models:
            tables = []
            for index, code in enumerate(args.code):
                tables.append(Path(scratch) / f"{model}-{index}.parquet")
                row = measure(code, args.results, model, tables[-1], settings)
                print(f"| {code} | {model} | {row['folds']} | {row['cpu_s']:.1f} | {row['peak_mb']:,.0f} |",
                      flush=True)
            for other in tables[1:]:
                print(f"{model}: {compare_tables(tables[0], other)}", flush=True)


if __name__ == "__main__":
    main()
