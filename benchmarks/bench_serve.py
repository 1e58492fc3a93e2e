"""Benchmark of ``mnm serve``: warm query latency and concurrent load, against the cold CLI.

Starts ``mnm serve --port 0`` on 127.0.0.1 (a subprocess: the model, atlas and corpus load
once), then

(a) one client sends ``--single`` text queries one after the other (warm latency, p50/p95);
(b) ``--clients`` clients send text queries at once for ``--duration`` seconds, at most
    ``--max-requests`` in all (throughput, p50/p95 latency, every answer checked: HTTP 200
    with ``k`` articles);
(c) ``mnm query`` runs ``--cold-runs`` times as a subprocess (the CLI's cold time: process
    start, model and atlas loading, one query, writing its files).

Every query text differs (article titles of the run, then the config's examples), so no
cache could help. Only 127.0.0.1 is contacted; the server is stopped at the end.
Targets (issue 14): warm p95 < 1 s on 2 cores with MiniLM; 20 clients x 10 s, no error.

Usage (in a finished run folder, e.g. after the default ``snakemake --cores all``)::

    python benchmarks/bench_serve.py --config config.yaml [--clients 20] [--duration 10]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pandas as pd
import yaml

HOST = "127.0.0.1"
MAX_CLIENTS, MAX_DURATION_S, MAX_REQUESTS = 64, 120.0, 100_000
STARTUP_TIMEOUT_S = 600


def query_texts(config_path: Path, n: int) -> list[str]:
    """``n`` distinct query texts: titles of the run's articles, then the config's examples."""
    config = yaml.safe_load(config_path.read_text()) or {}
    results = Path(config.get("results_dir", "results"))
    if not results.is_absolute():
        results = config_path.parent / results
    titles = pd.read_parquet(results / "corpus" / "articles.parquet", columns=["title"])["title"]
    texts = [t for t in titles.dropna().astype(str) if t.strip()]
    texts += list((config.get("serve") or {}).get("examples") or [])
    if not texts:
        raise SystemExit("no query texts: the run has no article titles")
    return [texts[i % len(texts)] + ("" if i < len(texts) else f" ({i})") for i in range(n)]


class Server:
    """``mnm serve`` in a subprocess on a free loopback port (log in a temporary file)."""

    def __init__(self, config_path: Path):
        self.log = tempfile.NamedTemporaryFile("w+", prefix="bench-serve-", suffix=".log")
        start = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mnm.cli", "serve", "--config", str(config_path), "--host", HOST,
             "--port", "0", "--quiet"],
            cwd=config_path.parent, stdout=self.log, stderr=subprocess.STDOUT)
        self.port = self._wait_for_port()
        self.startup_s = time.perf_counter() - start

    def _wait_for_port(self) -> int:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            text = Path(self.log.name).read_text()
            found = re.search(r"http://127\.0\.0\.1:(\d+)/", text)
            if found:
                return int(found.group(1))
            if self.process.poll() is not None:
                raise SystemExit(
                    f"mnm serve exited with {self.process.returncode}:\n{text[-3000:]}")
            time.sleep(0.2)
        self.stop()
        raise SystemExit("mnm serve did not start in time")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


class Client:
    """One user: a keep-alive connection sending text queries and checking the answers."""

    def __init__(self, port: int, k: int):
        self.port, self.k = port, k
        self.connection = None

    def query(self, text: str) -> tuple[float, str | None]:
        """(latency in s, error or None) of one ``/api/query``."""
        start = time.perf_counter()
        try:
            if self.connection is None:
                self.connection = http.client.HTTPConnection(HOST, self.port, timeout=120)
            self.connection.request("GET", "/api/query?" + urlencode({"text": text, "k": self.k}))
            response = self.connection.getresponse()
            body = response.read()
            elapsed = time.perf_counter() - start
            if response.status != 200:
                return elapsed, f"HTTP {response.status}: {body[:200]!r}"
            articles = json.loads(body)["articles"]
            if len(articles) != self.k:
                return elapsed, f"{len(articles)} articles instead of {self.k}"
            return elapsed, None
        except (OSError, http.client.HTTPException, ValueError, KeyError) as error:
            if self.connection is not None:
                self.connection.close()
            self.connection = None
            return time.perf_counter() - start, f"{type(error).__name__}: {error}"


def sequential(port: int, texts: list[str], k: int) -> dict:
    client = Client(port, k)
    results = [client.query(text) for text in texts]
    return summarise(results, sum(r[0] for r in results), clients=1)


def concurrent(port: int, texts: list[str], k: int, clients: int, duration: float,
               max_requests: int) -> dict:
    """``clients`` threads querying until ``duration`` s have passed or ``max_requests`` sent."""
    lock = threading.Lock()
    counter = iter(range(max_requests))
    results: list[tuple[float, str | None]] = []
    deadline = time.perf_counter() + duration

    def user():
        client = Client(port, k)
        while time.perf_counter() < deadline:
            with lock:
                number = next(counter, None)
            if number is None:
                return
            outcome = client.query(texts[number % len(texts)])
            with lock:
                results.append(outcome)

    threads = [threading.Thread(target=user) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return summarise(results, time.perf_counter() - start, clients)


def summarise(results: list, wall_s: float, clients: int) -> dict:
    latencies = np.array([r[0] for r in results])
    errors = [r[1] for r in results if r[1]]
    return {
        "clients": clients,
        "requests": len(results),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "wall_s": round(wall_s, 2),
        "throughput_per_s": round(len(results) / wall_s, 2) if wall_s else None,
        "p50_s": round(float(np.percentile(latencies, 50)), 3) if len(results) else None,
        "p95_s": round(float(np.percentile(latencies, 95)), 3) if len(results) else None,
        "max_s": round(float(latencies.max()), 3) if len(results) else None,
    }


def cold_cli(config_path: Path, text: str, runs: int) -> list[float]:
    """Wall times of ``mnm query TEXT`` as a fresh process (model and atlas loaded each time)."""
    times = []
    with tempfile.TemporaryDirectory(prefix="bench-serve-cli-") as out:
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "mnm.cli", "query", text, "--config", str(config_path),
                 "--out", os.path.join(out, "q"), "--quiet", "--json"],
                cwd=config_path.parent, check=True, stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - start)
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="config.yaml", help="the finished run's config")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load (b)")
    parser.add_argument("--max-requests", type=int, default=5000, help="cap on requests (b)")
    parser.add_argument("--single", type=int, default=30, help="sequential queries (a)")
    parser.add_argument("--k", type=int, default=10, help="articles per query")
    parser.add_argument("--cold-runs", type=int, default=1, help="CLI runs (c); 0 skips")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if not (1 <= args.clients <= MAX_CLIENTS and 0 < args.duration <= MAX_DURATION_S
            and 1 <= args.max_requests <= MAX_REQUESTS):
        parser.error(f"bounds: 1..{MAX_CLIENTS} clients, duration <= {MAX_DURATION_S} s, "
                     f"1..{MAX_REQUESTS} requests")
    config_path = Path(args.config).resolve()
    texts = query_texts(config_path, args.single + args.max_requests + 1)

    server = Server(config_path)
    try:
        warm = sequential(server.port, texts[1:args.single + 1], args.k)
        load = concurrent(server.port, texts[args.single + 1:], args.k, args.clients,
                          args.duration, args.max_requests)
    finally:
        server.stop()
    cold = cold_cli(config_path, texts[0], args.cold_runs) if args.cold_runs else []

    report = {
        "config": str(config_path),
        "cpu_count": os.cpu_count(),
        "server_startup_s": round(server.startup_s, 2),
        "warm_single_client": warm,
        "concurrent": load,
        "cli_cold_s": [round(t, 2) for t in cold],
        "targets": {
            "warm_p95_under_1s": bool(warm["p95_s"] is not None and warm["p95_s"] < 1.0),
            "concurrent_no_error": load["errors"] == 0 and load["requests"] > 0,
        },
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"run: {config_path} ({os.cpu_count()} CPUs); server start-up (load once): "
              f"{report['server_startup_s']} s")
        rows = pd.DataFrame([{"phase": "warm, 1 client", **warm},
                             {"phase": f"{args.clients} clients x {args.duration:g} s", **load}])
        print(rows.drop(columns=["first_error"]).to_string(index=False))
        if load["first_error"] or warm["first_error"]:
            print("first error:", load["first_error"] or warm["first_error"])
        if cold:
            print(f"CLI cold `mnm query` (process start + load + 1 query + files): "
                  f"{', '.join(f'{t:.1f}' for t in cold)} s")
        print("targets:", report["targets"])
    return 0 if all(report["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
