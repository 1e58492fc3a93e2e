"""Shared by the benchmarks that time one step of the pipeline under several code versions.

Each measurement runs a small script in a fresh Python whose ``sys.path`` starts with the
``workflow`` folder of a checkout (``--code``), on the outputs of a rehearsal (``--results``),
so that two versions compare on one machine, one after the other. The script prints one JSON
line last; :data:`PEAK_MB` gives it the process's peak memory (``VmHWM``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: Source of ``peak_mb()`` for the measured scripts: the process's peak RSS in MB.
PEAK_MB = """
def peak_mb():
    return [int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")][0] / 1024
"""


def run_measurement(script: str, code: Path, *args) -> dict:
    """Run ``script`` (its ``sys.argv[1]`` is ``code``, then ``args``) and return its last JSON line."""
    output = subprocess.run([sys.executable, "-c", script, str(code), *map(str, args)],
                            capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def version_parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser with ``--results`` (a rehearsal's results folder) and ``--code``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, required=True, help="a rehearsal's results_rehearsal folder")
    parser.add_argument("--code", type=Path, nargs="+", default=[REPO / "workflow"],
                        help="workflow folders of the checkouts to compare (default: this one)")
    return parser
