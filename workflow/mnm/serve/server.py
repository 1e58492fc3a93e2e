"""Serve the application with waitress, a pure-Python production WSGI server (threads)."""

from __future__ import annotations

import logging
import sys

from mnm.serve.app import MULTIPART_SLACK_BYTES, create_app
from mnm.serve.service import QueryService

_LOG = logging.getLogger(__name__)
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def make_server(service: QueryService, host: str = "127.0.0.1", port: int = 8000):
    """A waitress server for ``service`` bound to ``host:port`` (not yet running).

    Its ``effective_port`` is the port bound (useful with ``port=0``); ``run()`` serves
    until ``close()``.
    """
    from waitress import create_server

    if host not in LOOPBACK:
        _LOG.warning("listening on %s: the page is reachable from other machines, without "
                     "authentication", host)
    settings = service.settings
    return create_server(
        create_app(service), host=host, port=port, threads=settings.threads, ident="mnm",
        # waitress buffers a request before the app sees it: refuse bodies far beyond the
        # upload limit there; those just over it get the app's JSON 413.
        max_request_body_size=2 * (settings.max_upload_bytes + MULTIPART_SLACK_BYTES),
        # Requests queue behind the model lock: let waitress queue rather than warn early.
        channel_timeout=300,
    )


def serve(service: QueryService, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve until interrupted (Ctrl-C)."""
    server = make_server(service, host, port)
    url_host = f"[{host}]" if ":" in host else host
    print(f"mnm serve: http://{url_host}:{server.effective_port}/  (model {service.model}, "
          f"{len(service.run.articles)} articles, loaded in {service.load_seconds or 0:.1f} s; "
          "Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        service.close()
