"""Ablation rows: each one whole `varsac fit`, its validation curve per epoch and its test figures.

A row is ``NAME=OVERRIDES`` (the Hydra overrides of one run, space-separated).
Each row runs ``varsac fit`` in a fresh process under ``--output-root`` and is
read back from the run directory it leaves (``csv/metrics.csv`` for the
validation figures per epoch, ``results.json`` for the test figures), or, with
``--collect NAME=RUN_DIR``, read from a run that finished already (its minutes
from the first and last time stamps of its ``fit.log``). Rows are
merged into ``--json`` by name, so a table grows over several sessions, each row
with the machine it was measured on. Prints the table.

    python benchmarks/fit_runs.py --json docs/cluttered_mnist_issue14.json \\
        --run "crops up to 0.8=experiment=cluttered_mnist model.max_scale=0.8"
"""

import argparse
import csv
import json
import shlex
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from omegaconf import OmegaConf

from records import machine, merge_rows  # benchmarks/, on the path of a script run from it

# The validation figures kept per epoch, where the run logs them.
CURVE_KEYS = ("val/accuracy", "val/crop_scale", "val/classification_nll", "val/balanced_accuracy")


def validation_curve(run_dir: Path) -> list[dict[str, float]]:
    """One entry per epoch: the ``CURVE_KEYS`` the run logged at its end."""
    (metrics,) = run_dir.glob("csv/metrics.csv")
    curve: dict[int, dict[str, float]] = {}
    with metrics.open(newline="") as handle:
        for row in csv.DictReader(handle):
            figures = {k.removeprefix("val/"): float(row[k]) for k in CURVE_KEYS if row.get(k)}
            if figures:
                curve.setdefault(int(row["epoch"]), {"epoch": int(row["epoch"])}).update(figures)
    return [curve[epoch] for epoch in sorted(curve)]


def logged_minutes(run_dir: Path) -> float | None:
    """Minutes from the first to the last time-stamped line of the run's ``fit.log``."""
    log = run_dir / "fit.log"
    if not log.is_file():
        return None
    stamps = [
        datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")
        for line in log.read_text(errors="replace").splitlines()
        if line.startswith("[20") and len(line) > 24
    ]
    return (stamps[-1] - stamps[0]).total_seconds() / 60 if stamps else None


def read_run(name: str, run_dir: Path, minutes: float | None) -> dict:
    """A row from a finished run directory; its command from the overrides Hydra recorded."""
    results_file = run_dir / "results.json"
    if not results_file.is_file():
        raise SystemExit(f"{run_dir} has no results.json: the run did not finish")
    results = json.loads(results_file.read_text())["results"]
    overrides = OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")
    kept = [o for o in overrides if not o.startswith("paths.output_root=")]
    return {
        "name": name,
        "command": shlex.join(["varsac", "fit", *kept]),
        "run_dir": str(run_dir),
        "minutes": minutes,
        "val_curve": validation_curve(run_dir),
        "test": {k.removeprefix("test/"): v for k, v in results.items() if k.startswith("test/")},
    }


def fit(name: str, overrides: str, output_root: Path) -> dict:
    """Run ``varsac fit OVERRIDES`` under ``output_root/<slug of name>`` and read it back."""
    slug = "".join(c if c.isascii() and c.isalnum() else "_" for c in name).strip("_")
    root = output_root / slug
    arguments = [*shlex.split(overrides), f"paths.output_root={root}"]
    print(f"{name}: varsac fit {overrides}", flush=True)
    started = time.perf_counter()
    varsac = Path(sys.executable).with_name("varsac")
    if subprocess.run([str(varsac), "fit", *arguments]).returncode != 0:
        raise SystemExit(f"{name}: varsac fit {overrides} failed (its error is above)")
    minutes = (time.perf_counter() - started) / 60
    run_dir = max(root.glob("*/*/results.json"), key=lambda p: p.stat().st_mtime).parent
    return read_run(name, run_dir, minutes)


def print_table(rows: list[dict]) -> None:
    print(f"\n{'row':<40} {'epochs':>6} {'best val':>9} {'test':>8} {'minutes':>8}")
    for row in rows:
        curve = [e["accuracy"] for e in row["val_curve"] if "accuracy" in e]
        best = max(curve, default=row.get("val_best", float("nan")))
        test = row["test"].get("accuracy", float("nan"))
        minutes = f"{row['minutes']:.1f}" if row["minutes"] is not None else "—"
        epochs = len(row["val_curve"])
        print(f"{row['name']:<40} {epochs:>6} {best:>9.4f} {test:>8.4f} {minutes:>8}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True, help="rows are merged into this file")
    parser.add_argument("--run", action="append", default=[], metavar="NAME=OVERRIDES")
    parser.add_argument("--collect", action="append", default=[], metavar="NAME=RUN_DIR")
    parser.add_argument("--output-root", type=Path, default=Path("outputs/fit_runs"))
    args = parser.parse_args()
    new_rows = []
    for spec in args.collect:
        name, run_dir = spec.split("=", 1)
        new_rows.append(read_run(name, Path(run_dir), logged_minutes(Path(run_dir))))
    for spec in args.run:
        name, overrides = spec.split("=", 1)
        new_rows.append(fit(name, overrides, args.output_root))
    measured_on = machine()
    for row in new_rows:
        row["machine"] = measured_on
    print_table(merge_rows(args.json, "runs", new_rows, key=lambda row: row["name"]))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
