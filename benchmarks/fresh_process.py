"""Measurements in fresh processes, so that each one's peak memory and caches are its own.

A benchmark script runs itself as ``python SCRIPT --worker JOB ARGS…``; the worker
prints its result as JSON on its last line of output.
"""

import json
import resource
import subprocess
import sys


def peak_rss_mib() -> float:
    """This process's peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def in_fresh_process(script: str, *args: str) -> dict:
    """Run ``script --worker *args`` in a new interpreter; return the JSON it printed last."""
    out = subprocess.run(
        [sys.executable, script, "--worker", *args], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])
