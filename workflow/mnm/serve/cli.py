"""Arguments and entry of ``mnm serve`` (imported by :mod:`mnm.cli`; light to import)."""

from __future__ import annotations

import argparse
import sys

HELP = "serve a local web page and JSON API over a finished run"
DESCRIPTION = (
    "Load the model trained on every article (fold=all) of a finished run, its atlas and "
    "corpus once, then serve a web page (text -> predicted brain maps and articles; uploaded "
    "map -> articles; the run's report) and a JSON API (/api/query, /api/decode, "
    "/maps/<id>.nii.gz, /api/health). Defaults for host, port, model and limits come from the "
    "config's `serve` section."
)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="config.yaml",
                        help="the run's config file; its results_dir locates the outputs "
                             "(default: config.yaml)")
    parser.add_argument("--host", default=None,
                        help="interface to listen on (default: serve.host, 127.0.0.1); "
                             "0.0.0.0 exposes the page to the network")
    parser.add_argument("--port", type=int, default=None,
                        help="TCP port (default: serve.port, 8000; 0 picks a free one)")
    parser.add_argument("--model", default=None,
                        help="model to serve (default: serve.model; one of models.names)")
    parser.add_argument("--section", default=None,
                        help="text section the model was trained on (as for mnm query)")
    parser.add_argument("--model-path", default=None,
                        help="explicit model.safetensors (overrides --model/--section lookup)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="device for the text encoder and model (default: cpu)")
    parser.add_argument("--quiet", action="store_true",
                        help="log warnings only (no line per query)")


def run_serve(args: argparse.Namespace) -> int:
    """Load the run, then serve until Ctrl-C. Exit 3 when the run is missing, 2 bad input."""
    from mnm.cli import EXIT_BAD_INPUT, EXIT_NO_RUN
    from mnm.config import ConfigError
    from mnm.query import QueryError, load_run_config

    if args.port is not None and not 0 <= args.port <= 65535:
        print(f"mnm serve: --port must be in 0..65535, got {args.port}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        serve_config = load_run_config(args.config)["serve"]
        import torch

        torch.set_num_threads(serve_config["torch_threads"])  # this process serves only
        from mnm.serve.server import serve
        from mnm.serve.service import QueryService

        service = QueryService.open(args.config, model=args.model, section=args.section,
                                    model_path=args.model_path, device=args.device)
    except QueryError as error:
        print(f"mnm serve: {error}", file=sys.stderr)
        return EXIT_NO_RUN if error.missing_run else EXIT_BAD_INPUT
    except ConfigError as error:
        print(f"mnm serve: {args.config}: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    host = args.host or serve_config["host"]
    port = serve_config["port"] if args.port is None else args.port
    try:
        serve(service, host=host, port=port)
    except OSError as error:
        service.close()
        print(f"mnm serve: cannot listen on {host}:{port} ({error.strerror or error}); "
              "choose another --port or --host", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0
