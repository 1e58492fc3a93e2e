"""How busy the cores were during a Snakemake run: time with 0, 1 or 2+ jobs running.

Reads the run's own log (``.snakemake/log/*.snakemake.log``: a ``[date]`` line before each
job's ``rule``/``localrule`` block and before each ``Finished jobid`` line) and prints the
seconds spent with no job, one job and two or more jobs running, and which rules ran alone
(on 2 cores, the time one core had nothing to do)::

    python benchmarks/dag_timeline.py /tmp/mnm-scale5/articles-20000/.snakemake/log/<run>.snakemake.log

Every job here asks for one thread, so jobs running = cores busy.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import re

STAMP = re.compile(r"\[(\w{3} \w{3}\s+\d+ \d\d:\d\d:\d\d \d{4})\]")
RULE = re.compile(r"(?:local)?rule (\w+):")
JOBID = re.compile(r"\s+jobid: (\d+)")
FINISHED = re.compile(r"Finished jobid: (\d+) \(Rule: (\w+)\)")


def job_spans(lines) -> list[tuple[str, dt.datetime, dt.datetime]]:
    """``(rule, start, end)`` of every job the log saw start and finish."""
    stamp, rule, started, spans = None, None, {}, []
    for line in lines:
        if match := STAMP.match(line):
            stamp = dt.datetime.strptime(" ".join(match.group(1).split()), "%a %b %d %H:%M:%S %Y")
        elif match := RULE.match(line):
            rule = (match.group(1), stamp)
        elif (match := JOBID.match(line)) and rule:
            started[match.group(1)], rule = rule, None
        elif (match := FINISHED.match(line)) and match.group(1) in started:
            name, start = started.pop(match.group(1))
            spans.append((name, start, stamp))
    return spans


def concurrency(spans) -> tuple[collections.Counter, collections.Counter]:
    """Seconds with 0, 1 and 2+ jobs running, and per rule the seconds it ran alone."""
    edges = sorted({t for _, start, end in spans for t in (start, end)})
    levels, alone = collections.Counter(), collections.Counter()
    for begin, end in zip(edges, edges[1:]):
        running = [name for name, s, e in spans if s <= begin and e >= end]
        seconds = (end - begin).total_seconds()
        levels[min(len(running), 2)] += seconds
        if len(running) == 1:
            alone[running[0]] += seconds
    return levels, alone


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log", help="a .snakemake/log/*.snakemake.log file")
    args = parser.parse_args(argv)
    with open(args.log) as handle:
        spans = job_spans(handle)
    if not spans:
        raise SystemExit(f"{args.log}: no finished job found")
    levels, alone = concurrency(spans)
    total = (max(e for _, _, e in spans) - min(s for _, s, _ in spans)).total_seconds()
    print(f"{len(spans)} jobs over {total:,.0f} s: no job {levels[0]:,.0f} s, one job {levels[1]:,.0f} s, "
          f"two or more {levels[2]:,.0f} s")
    print("ran alone: " + ", ".join(f"{name} {s:,.0f} s" for name, s in alone.most_common()))


if __name__ == "__main__":
    main()
