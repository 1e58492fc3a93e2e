"""A loopback stand-in for NCBI's E-utilities (esearch, efetch, epost), for pubget's download.

It answers on 127.0.0.1 the three POST endpoints pubget's Entrez client calls, from a list
of PMC articles (``pmc_fixture.articleset_xml`` shapes the efetch answers), and records every
request. ``fail_batches`` makes efetch answer HTTP 500 for those batches, with an NCBI-like
JSON error body that repeats the API key, as NCBI does. The server is bounded: it stops by
itself after ``lifetime_s`` seconds or ``max_requests`` requests, whichever comes first.

:func:`point_pubget_at` sets the Entrez client's base URLs (class attributes in
``pubget._entrez.EntrezClient``) and its retry delays for the current process; the
``loopback_site/sitecustomize.py`` hook does the same in Snakemake's job processes.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

from pmc_fixture import articleset_xml

WEBENV = "MCID_loopback_0001"


@dataclass
class EutilsState:
    """What the server serves and what it saw."""

    articles: list
    api_key: str | None = None
    fail_batches: set = field(default_factory=set)
    max_requests: int = 200
    requests: list = field(default_factory=list)

    def count(self, endpoint: str) -> int:
        return sum(1 for name, _ in self.requests if name == endpoint)


class _Handler(BaseHTTPRequestHandler):
    server_version = "loopback-eutils/1"

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802 (http.server's name)
        state: EutilsState = self.server.state
        length = int(self.headers.get("Content-Length", 0))
        form = {k: v[-1] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        form.update({k: v[-1] for k, v in parse_qs(self.path.partition("?")[2]).items()})
        endpoint = self.path.partition("?")[0].rsplit("/", 1)[-1]
        state.requests.append((endpoint, form))
        if len(state.requests) > state.max_requests:
            self._reply(503, b"too many requests for a test", "text/plain")
            threading.Thread(target=self.server.shutdown, daemon=True).start()
            return
        if state.api_key is not None and form.get("api_key") != state.api_key:
            self._reply(400, json.dumps({"error": "API key invalid"}).encode(),
                        "application/json")
            return
        handler = {"esearch.fcgi": self._esearch, "efetch.fcgi": self._efetch,
                   "epost.fcgi": self._epost}.get(endpoint)
        if handler is None:
            self._reply(404, b"unknown endpoint", "text/plain")
        else:
            handler(state, form)

    def _esearch(self, state, form):
        ids = [str(a["pmcid"]) for a in state.articles]
        result = {"count": str(len(ids)), "retmax": form.get("retmax", "20"),
                  "retstart": "0", "idlist": ids[: int(form.get("retmax", 20))],
                  "querykey": "1", "webenv": WEBENV, "translationset": [],
                  "querytranslation": form.get("term", "")}
        body = {"header": {"type": "esearch", "version": "0.3"}, "esearchresult": result}
        self._reply(200, json.dumps(body).encode(), "application/json")

    def _efetch(self, state, form):
        start, size = int(form.get("retstart", 0)), int(form.get("retmax", 500))
        if form.get("WebEnv") != WEBENV:
            self._reply(400, b'{"error": "unknown WebEnv"}', "application/json")
        elif start // size in state.fail_batches:
            error = {"error": "Internal server error", "api-key": form.get("api_key"),
                     "type": "api-key"}
            self._reply(500, json.dumps(error).encode(), "application/json")
        else:
            chunk = state.articles[start:start + size]
            self._reply(200, articleset_xml(chunk).encode("utf-8"), "text/xml")

    def _epost(self, state, form):
        body = (f"<?xml version=\"1.0\" ?>\n<ePostResult><QueryKey>1</QueryKey>"
                f"<WebEnv>{WEBENV}</WebEnv></ePostResult>")
        self._reply(200, body.encode(), "text/xml")


class EutilsServer:
    """Context manager: the server runs in a daemon thread while the block runs."""

    def __init__(self, state: EutilsState, lifetime_s: float = 120.0):
        self.state = state
        self.lifetime_s = lifetime_s
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.state = state
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._timer = threading.Timer(lifetime_s, self._server.shutdown)
        self._timer.daemon = True

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/entrez/eutils/"

    def __enter__(self) -> "EutilsServer":
        self._thread.start()
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def point_pubget_at(base_url: str, monkeypatch=None) -> None:
    """Send pubget's E-utilities requests to ``base_url``, retrying failures without delay.

    With ``monkeypatch`` (pytest) the change is undone after the test. Requests to the
    loopback address never go through a proxy set in the environment.
    """
    import os

    from pubget._entrez import EntrezClient

    for variable in ("NO_PROXY", "no_proxy"):
        if monkeypatch is None:
            os.environ[variable] = "127.0.0.1,localhost"
        else:
            monkeypatch.setenv(variable, "127.0.0.1,localhost")

    values = {
        "_entrez_base_url": base_url,
        "_esearch_base_url": base_url + "esearch.fcgi",
        "_efetch_base_url": base_url + "efetch.fcgi",
        "_epost_base_url": base_url + "epost.fcgi",
        # pubget waits 2+8+32+64+64 s between its 5 attempts at a failing request
        "_delay_before_retry_failed_request": (0.0, 0.0, 0.0, 0.0, 0.0),
    }
    for name, value in values.items():
        if monkeypatch is None:
            setattr(EntrezClient, name, value)
        else:
            monkeypatch.setattr(EntrezClient, name, value)
