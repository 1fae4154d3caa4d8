"""Measurements in fresh processes, so that each one's peak memory and caches are its own.

A benchmark script runs itself as ``python SCRIPT --worker JOB ARGS…``; the worker
prints its result as JSON on its last line of output.
"""

import argparse
import json
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path


def peak_rss_mib() -> float:
    """This process's peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def in_fresh_process(script: str, *args: str) -> dict:
    """Run ``script --worker *args`` in a new interpreter; return the JSON it printed last."""
    out = subprocess.run(
        [sys.executable, script, "--worker", *args], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def benchmark_parser(doc: str) -> argparse.ArgumentParser:
    """The parser of a benchmark script described by ``doc``: with ``--json`` (where to write
    the results) and the hidden ``--worker JOB ARGS…`` of ``in_fresh_process``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    return parser


def serve(job_and_args: list[str], jobs: dict[str, Callable[..., dict]]) -> None:
    """In a worker: run ``jobs[JOB](*ARGS)`` (arguments as strings) and print its result as
    JSON on the last line, for ``in_fresh_process``."""
    job, *arguments = job_and_args
    print(json.dumps(jobs[job](*arguments)))
