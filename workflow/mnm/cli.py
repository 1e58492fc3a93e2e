"""Command-line interface: ``mnm query``, ``mnm serve`` and ``mnm export``.

Examples
--------
Text -> predicted brain maps and the best-matching articles::

    mnm query "working memory load in the dorsolateral prefrontal cortex"

The same, with an ALE meta-analysis of the retrieved articles' peaks beside the prediction::

    mnm query "working memory load" --top-k 20 --meta-analysis ale

Brain map -> the best-matching articles::

    mnm query --map my_contrast_zmap.nii.gz --top-k 20 --json

A local web page and JSON API over the run (http://127.0.0.1:8000/)::

    mnm serve

A run's corpus as a NIMADS studyset and a NiMARE Dataset (for NiMARE, Neurostore)::

    mnm export --nimare nimare_corpus/
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

# Exit codes: 0 success, 2 bad input (argparse uses 2 too), 3 missing or unfinished run.
EXIT_BAD_INPUT = 2
EXIT_NO_RUN = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mnm",
        description="MNM pipeline tools. Run the pipeline itself with `snakemake --cores all`.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    query = commands.add_parser(
        "query",
        help="query a trained model: text -> brain maps and articles; map -> articles",
        description=(
            "Query the model trained on every article (fold=all) of a finished run. Give a "
            "TEXT to get predicted brain maps (NIfTI + glass-brain PNG, decoder route and one "
            "parcel-route map per atlas hierarchy level) and the articles whose brain maps "
            "match it best; or give --map FILE.nii.gz to get the articles whose texts match "
            "that map best."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    query.add_argument("text", nargs="?", help="free text to map to the brain (quote it)")
    query.add_argument("--map", dest="map_path", metavar="FILE.nii.gz",
                       help="a 3D statistical map in MNI space (resampled to the atlas grid "
                            "with a warning if needed) instead of a text")
    query.add_argument("--config", default="config.yaml",
                       help="the run's config file; its results_dir locates the outputs")
    query.add_argument("--model", default="mnm",
                       help="model to query (one of the run's models.names)")
    query.add_argument("--section", default=None,
                       help="text section the model was trained on; unset: abstract if "
                            "trained, else the first of models.sections")
    query.add_argument("--atlas", default=None,
                       help="atlas the model was trained on (one of the run's brain.atlases; "
                            "unset: the first)")
    query.add_argument("--model-path", default=None,
                       help="explicit model.safetensors (overrides --model/--section lookup)")
    query.add_argument("--top-k", type=int, default=10, help="number of articles returned")
    query.add_argument("--out", default="query_results",
                       help="output folder (articles.parquet/.csv, maps .nii.gz and .png)")
    query.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                       help="device for the text encoder and model")
    query.add_argument("--meta-analysis", dest="meta_analysis", choices=["ale", "mkda"],
                       default=None,
                       help="also run NiMARE's coordinate-based meta-analysis (ALE or "
                            "MKDADensity) on the peaks of the top-k articles: z and -log10 p "
                            "maps beside the prediction, and their correlation with the "
                            "decoder map (text queries only)")
    query.add_argument("--json", action="store_true",
                       help="print the result as JSON instead of a plain-text table")
    query.add_argument("--quiet", action="store_true", help="log warnings only")
    from mnm.serve.cli import DESCRIPTION, HELP, add_serve_arguments

    add_serve_arguments(commands.add_parser("serve", help=HELP, description=DESCRIPTION))
    export = commands.add_parser(
        "export",
        help="write a run's corpus for other tools (NiMARE)",
        description=(
            "Write the corpus of a run (results/corpus/articles.parquet and peaks.parquet, "
            "peaks in MNI) as a NIMADS studyset (nimads_studyset.json) and a NiMARE Dataset "
            "(nimare_dataset.json), which nimare.nimads.Studyset and nimare.dataset.Dataset "
            "read."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    export.add_argument("--nimare", required=True, metavar="DIR",
                        help="output folder (created)")
    export.add_argument("--config", default="config.yaml",
                        help="the run's config file; its results_dir locates the corpus")
    export.add_argument("--quiet", action="store_true", help="log warnings only")
    export.add_argument("--json", action="store_true", help="print the written paths as JSON")
    return parser


def _print_result(table, outputs: dict, as_json: bool, meta: dict | None = None) -> None:
    if as_json:
        records = json.loads(table.to_json(orient="records"))
        extra = {"meta_analysis": meta} if meta else {}
        print(json.dumps({"articles": records, "outputs": outputs, **extra}, indent=2))
        return
    import pandas as pd

    with pd.option_context("display.max_colwidth", 70, "display.width", 160):
        print(table[["rank", "article_id", "score", "pmcid", "title"]].to_string(index=False))
    print()
    for name, path in outputs.items():
        print(f"{name:>24}: {path}")
    if meta:
        r = meta["correlation_with_decoder_map"]
        print(f"\n{meta['method'].upper()} meta-analysis of {meta['n_articles']} articles "
              f"({meta['n_peaks']} peaks, {meta['seconds']:.1f} s): Pearson r(meta z, decoder "
              "map) = " + ("n/a (the model has no decoder)" if r is None
                           else f"{r:.3f} over {meta['correlation_voxels']} voxels"))


def run_query(args: argparse.Namespace) -> int:
    from mnm.query import QueryError, check_output_dir, open_run, query_map, query_text, write_outputs

    if (args.text is None) == (args.map_path is None):
        print("mnm query: give either TEXT or --map FILE.nii.gz (not both, not neither)",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.text is not None and not args.text.strip():
        print("mnm query: the query text is empty", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.top_k < 1:
        print("mnm query: --top-k must be at least 1", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.meta_analysis and args.map_path is not None:
        print("mnm query: --meta-analysis needs a TEXT query (it is compared with the "
              "predicted map)", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        check_output_dir(args.out)  # before any work: a bad --out fails at once
        if args.map_path is not None:
            from mnm.query import load_query_map

            load_query_map(args.map_path)  # reject bad maps before loading the run
        run = open_run(args.config, model=args.model, section=args.section,
                       model_path=args.model_path, device=args.device, atlas=args.atlas)
    except QueryError as error:
        print(f"mnm query: {error}", file=sys.stderr)
        return EXIT_NO_RUN if error.missing_run else EXIT_BAD_INPUT
    try:
        documents = {}
        if args.map_path is not None:
            table, maps, title = query_map(run, args.map_path, args.top_k), {}, ""
        else:
            table, maps = query_text(run, args.text, args.top_k)
            title = args.text
        if args.meta_analysis:
            from mnm.meta import meta_analysis

            meta = meta_analysis(run, table, args.meta_analysis, predicted=maps.get("decoder"))
            maps.update(meta.output_maps())
            documents["meta_analysis"] = meta.summary()
        outputs = write_outputs(Path(args.out), table, maps, title=title, documents=documents)
    except QueryError as error:
        print(f"mnm query: {error}", file=sys.stderr)
        return EXIT_NO_RUN if error.missing_run else EXIT_BAD_INPUT
    _print_result(table, outputs, args.json, documents.get("meta_analysis"))
    return 0


def run_export(args: argparse.Namespace) -> int:
    from mnm.nimare_io import export_run_corpus
    from mnm.query import QueryError

    try:
        paths = export_run_corpus(args.config, args.nimare)
    except QueryError as error:
        print(f"mnm export: {error}", file=sys.stderr)
        return EXIT_NO_RUN if error.missing_run else EXIT_BAD_INPUT
    if args.json:
        print(json.dumps(paths, indent=2))
    else:
        for name, path in paths.items():
            print(f"{name:>8}: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    quiet = args.quiet or getattr(args, "json", False)  # mnm serve has no --json
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.command == "query":
        return run_query(args)
    if args.command == "serve":
        from mnm.serve.cli import run_serve

        return run_serve(args)
    if args.command == "export":
        return run_export(args)
    return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
