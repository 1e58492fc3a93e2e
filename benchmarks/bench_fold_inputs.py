"""What a training job pays to read its inputs: CPU time and peak memory of ``load_fold_inputs``.

Every training job starts by reading the text embeddings, the brain coefficients, the folds
and ``corpus/articles.parquet`` (:func:`mnm.training.data.load_fold_inputs`). At 20,000
articles the articles table holds the bodies (328 MB on disk), so reading more of it than a
job uses is most of a short job's cost. Each measurement runs in a fresh Python with the
``mnm`` of ``--code`` (the ``workflow`` folder of any checkout, so two versions compare on one
machine, one after the other); CPU time includes the imports the call triggers, peak is the
process's ``VmHWM``.

Run on the outputs of a rehearsal (a kept ``benchmarks/scale.py`` project, or the targets
``results_rehearsal/text/tiny_mistral/abstract/embeddings.parquet``,
``results_rehearsal/brain/difumo512_generated/coefficients.parquet`` and
``results_rehearsal/folds.parquet``, and for Text2Brain
``results_rehearsal/brain/difumo512_generated/kde_4mm/maps.parquet``, built with
``--config rehearsal_articles=20000``)::

    python benchmarks/bench_fold_inputs.py --results PROJECT/results_rehearsal \\
        --code /path/to/old/checkout/workflow workflow

Figures of 2026-12-07 (19,606 articles): ``benchmarks/scale.md``.
"""

from __future__ import annotations

from pathlib import Path

from code_versions import PEAK_MB, run_measurement, version_parser

#: Run in a fresh interpreter: argv = code root, results folder, section ("" for none).
_MEASURE = PEAK_MB + """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from mnm.training.data import load_fold_inputs


results, section = sys.argv[2], sys.argv[3] or None
brain = f"{results}/brain/difumo512_generated"
maps = (f"{brain}/kde_4mm/maps.parquet", f"{brain}/kde_4mm/mask.nii.gz") if section == "maps" else None
start = time.process_time()
data = load_fold_inputs(f"{results}/text/tiny_mistral/abstract/embeddings.parquet", f"{brain}/coefficients.parquet",
                        f"{results}/folds.parquet", f"{results}/corpus/articles.parquet",
                        section=None if maps else section, kde_maps=maps)
print(json.dumps({"articles": len(data.ids), "cpu_s": time.process_time() - start, "peak_mb": peak_mb()}))
"""


def measure(code: Path, results: Path, section: str | None) -> dict:
    """CPU seconds and peak MB of one ``load_fold_inputs`` call with the ``mnm`` under ``code``."""
    return run_measurement(_MEASURE, code, results, section or "")


def main(argv=None) -> None:
    parser = version_parser(__doc__)
    parser.add_argument("--sections", nargs="+", default=["none", "abstract", "body", "maps"],
                        help="none (every model but TF-IDF and Text2Brain), the TF-IDF section read, "
                             "or maps (Text2Brain: the 4 mm KDE maps, rule kde_maps)")
    args = parser.parse_args(argv)
    print("| code | job reads | articles | CPU (s) | peak (MB) |\n|---|---|---|---|---|")
    for section in args.sections:
        for code in args.code:
            row = measure(code, args.results, None if section == "none" else section)
            reads = {"none": "ids only", "maps": "Text2Brain's maps"}.get(section, f"TF-IDF on {section}")
            print(f"| {code} | {reads} | {row['articles']:,} | {row['cpu_s']:.1f} | {row['peak_mb']:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
