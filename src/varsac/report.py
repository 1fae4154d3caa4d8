"""``varsac report DIR``: a Hydra multirun sweep summarised as a plot and a table.

A sweep directory (``outputs/<name>/multirun/<time>/``) holds ``multirun.yaml``
(the sweep's composed config, with its command line) and one numbered
directory per job (``0/``, ``1/``, …). A job finished when its
``results.json`` exists: ``varsac fit`` writes it last, atomically.

Jobs are grouped into settings: a setting is a job's overrides without
``seed=``, labelled by the keys whose values vary across the sweep. For each
setting the report plots a metric per epoch (mean ± standard deviation over
its seeds) and tabulates the final accuracies. Jobs that failed or are
incomplete, and jobs the sweep planned but never started, are listed.

No torch here, and Hydra only once overrides are read, so the command starts quickly.
"""

import argparse
import csv
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from varsac.files import RESULTS_FILE, atomic_path, replace_atomically
from varsac.overrides import override_key, parse_overrides

FINAL_METRICS = ("test/accuracy", "val/accuracy_best")
SEED_KEY = "seed"


class NotASweepError(Exception):
    """The directory is not a sweep directory; the message says what it is and what to give."""


@dataclass
class Job:
    """One job directory of the sweep."""

    name: str  # the directory's name: Hydra's job number
    path: Path
    overrides: list[str]
    results: dict[str, float] | None  # results.json's "results"; None: the job did not finish
    curve: dict[int, float]  # epoch (from 0) → the metric logged at its end
    max_epochs: int | None
    last_log_record: str | None

    @property
    def finished(self) -> bool:
        return self.results is not None


@dataclass
class Setting:
    """The jobs of one setting: the same overrides but for the seed."""

    overrides: tuple[str, ...]
    label: str
    jobs: list[Job]
    planned: int  # jobs the sweep planned for it: one per seed

    @property
    def finished(self) -> list[Job]:
        return [job for job in self.jobs if job.finished]


@dataclass
class Sweep:
    path: Path
    name: str
    jobs: list[Job]
    settings: list[Setting]
    varying: list[str]  # the override keys whose values vary across the sweep, seed included
    common: list[str]  # the overrides every job has
    planned: int | None  # jobs the sweep planned; None: unknown
    never_started: list[list[str]] | None  # planned jobs without a directory; None: unknown
    unknown_plan: str | None  # why the planned jobs are unknown


def load_yaml(path: Path) -> Any:
    """A YAML file as plain Python, interpolations (``${…}``) left as they are."""
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def job_dirs(path: Path) -> list[Path]:
    """The job directories of a sweep directory (named by Hydra's job number), in job order."""
    found = [child for child in path.iterdir() if child.is_dir() and child.name.isdigit()]
    return sorted(found, key=lambda child: int(child.name))


def check_sweep_dir(path: Path) -> None:
    """Raise ``NotASweepError`` unless ``path`` has a multirun.yaml or job directories."""
    if not path.is_dir():
        raise NotASweepError(f"{path}: no such directory")
    if (path / "multirun.yaml").is_file() or job_dirs(path):
        return
    patterns = ("*/multirun.yaml", "multirun/*/multirun.yaml")
    sweeps = sorted({found.parent for p in patterns for found in path.glob(p)}, key=str)
    if sweeps:
        raise NotASweepError(
            f"{path} is not a sweep directory; it holds {len(sweeps)} sweep(s), the newest is "
            f"{sweeps[-1]}: varsac report {sweeps[-1]}"
        )
    if (path / ".hydra").is_dir():
        raise NotASweepError(
            f"{path} is the directory of a single run, not of a sweep (varsac fit -m …); "
            "give outputs/NAME/multirun/TIME"
        )
    raise NotASweepError(
        f"{path} is not a sweep directory: it has no multirun.yaml and no job directories "
        "(0/, 1/, …); give outputs/NAME/multirun/TIME"
    )


def planned_jobs(multirun: dict[str, Any]) -> tuple[list[list[str]] | None, str | None]:
    """The overrides of every job the sweep planned, in Hydra's job order; or None and why not.

    Built as Hydra's BasicSweeper builds them: the sweep parameters of the
    config (``hydra.sweeper.params``) first, then the command line's overrides,
    a key on the command line replacing the config's.
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    hydra_config = multirun.get("hydra") or {}
    sweeper = hydra_config.get("sweeper") or {}
    if not str(sweeper.get("_target_", "")).endswith(".BasicSweeper"):
        return None, f"the sweeper is {sweeper.get('_target_')}, not Hydra's basic sweeper"
    params = [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]
    task = (hydra_config.get("overrides") or {}).get("task") or []
    arguments = params + [str(o) for o in task]
    try:
        overrides = parse_overrides(arguments)
        batches = BasicSweeper.split_arguments(overrides, max_batch_size=None)
    except Exception as error:  # e.g. a glob() over config groups, which needs the configs
        return None, f"the sweep's overrides could not be expanded here ({error})"
    return [job for batch in batches for job in batch], None


def read_curve(path: Path, metric: str) -> dict[int, float]:
    """epoch → ``metric`` from a CSVLogger ``metrics.csv`` (the last value logged per epoch)."""
    curve: dict[int, float] = {}
    if path.is_file():
        with path.open(newline="") as file:
            for row in csv.DictReader(file):
                if row.get(metric) and row.get("epoch"):
                    curve[int(float(row["epoch"]))] = float(row[metric])
    return dict(sorted(curve.items()))


def read_last_log_record(path: Path) -> str | None:
    """The message of the last record of the job's log (``fit.log``), its lines joined.

    Records start ``[time][logger][LEVEL] - message``; a message may go on over the
    next lines (a run stopped by an error names the reason, then the checkpoint left).
    None without a log.
    """
    for log in sorted(path.glob("*.log")):
        record: list[str] = []
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("["):
                record = [line.split("] - ", 1)[-1].strip()]
            elif line.strip():
                record.append(line.strip())
        if record:
            return " ".join(record)
    return None


def read_job(path: Path, metric: str, planned: list[list[str]] | None) -> Job:
    """A job directory; overrides from its .hydra/overrides.yaml, else from its job number."""
    hydra_dir = path / ".hydra"
    overrides_file, config_file = hydra_dir / "overrides.yaml", hydra_dir / "config.yaml"
    if overrides_file.is_file():
        overrides = [str(o) for o in load_yaml(overrides_file) or []]
    elif planned is not None and int(path.name) < len(planned):
        overrides = planned[int(path.name)]
    else:
        overrides = []
    results_file = path / RESULTS_FILE
    results = json.loads(results_file.read_text())["results"] if results_file.is_file() else None
    config = load_yaml(config_file) if config_file.is_file() else {}
    max_epochs = (config.get("trainer") or {}).get("max_epochs")
    return Job(
        name=path.name,
        path=path,
        overrides=overrides,
        results=results,
        curve=read_curve(path / "csv" / "metrics.csv", metric),
        max_epochs=max_epochs if isinstance(max_epochs, int) else None,
        last_log_record=read_last_log_record(path),
    )


def read_sweep(path: Path, metric: str = "val/accuracy") -> Sweep:
    """Read a sweep directory: its jobs, grouped into settings in the sweep's order."""
    check_sweep_dir(path)
    multirun_file = path / "multirun.yaml"
    multirun = load_yaml(multirun_file) if multirun_file.is_file() else {}
    if multirun_file.is_file():
        planned, unknown_plan = planned_jobs(multirun)
    else:
        planned, unknown_plan = None, f"{multirun_file} is missing"
    jobs = [read_job(job_path, metric, planned) for job_path in job_dirs(path)]

    everything = (planned or []) + [job.overrides for job in jobs]
    values: dict[str, set[str]] = {}
    for overrides in everything:
        for override in overrides:
            values.setdefault(override_key(override), set()).add(override)
    # A key varies if its value differs between jobs, or if some jobs lack it.
    varying = [
        key
        for key, seen in values.items()
        if len(seen) > 1 or any(key not in map(override_key, o) for o in everything)
    ]

    def setting_of(overrides: Sequence[str]) -> tuple[str, ...]:
        return tuple(o for o in overrides if override_key(o) != SEED_KEY)

    settings: dict[tuple[str, ...], Setting] = {}
    for overrides in everything:  # planned first: the sweep's order of values
        key = setting_of(overrides)
        if key not in settings:
            label = ", ".join(o for o in key if override_key(o) in varying) or "all jobs"
            settings[key] = Setting(key, label, jobs=[], planned=0)
    for overrides in planned or []:
        settings[setting_of(overrides)].planned += 1
    for job in jobs:
        settings[setting_of(job.overrides)].jobs.append(job)
    if planned is None:
        for setting in settings.values():
            setting.planned = len(setting.jobs)

    started = {tuple(job.overrides) for job in jobs}
    return Sweep(
        path=path,
        name=str(multirun.get("name") or path.parent.parent.name),
        jobs=jobs,
        settings=list(settings.values()),
        varying=varying,
        common=[o for o in everything[0] if override_key(o) not in varying] if everything else [],
        planned=None if planned is None else len(planned),
        never_started=None if planned is None else [o for o in planned if tuple(o) not in started],
        unknown_plan=unknown_plan,
    )


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n − 1); the deviation is NaN for one value."""
    array = np.asarray(values, dtype=float)
    std = float(array.std(ddof=1)) if len(array) > 1 else math.nan
    return float(array.mean()), std


def setting_curve(jobs: Sequence[Job]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(epochs, mean, std) of the jobs' curves: at each epoch over the jobs that logged it."""
    epochs = sorted(set().union(*(job.curve for job in jobs)))
    stats = np.array([mean_std([job.curve[e] for job in jobs if e in job.curve]) for e in epochs])
    return np.array(epochs, dtype=int), stats[:, 0], stats[:, 1]


def format_mean_std(values: Sequence[float]) -> str:
    if not values:
        return "—"
    mean, std = mean_std(values)
    return f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def format_range(values: Sequence[int]) -> str:
    if not values:
        return "—"
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}–{high}"


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def distinct_overrides(sweep: Sweep, overrides: Sequence[str]) -> str:
    """A job's overrides that differ between the sweep's jobs (all of them if none do)."""
    shown = [o for o in overrides if override_key(o) in sweep.varying] or list(overrides)
    return " ".join(f"`{cell(o)}`" for o in shown) or "(none)"


def results_table(sweep: Sweep) -> str:
    """The Markdown table of final figures, one row per setting."""
    header = ["setting", *FINAL_METRICS, "seeds finished", "epochs"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for setting in sweep.settings:
        finished = setting.finished
        finals = [
            format_mean_std([job.results[m] for job in finished if m in job.results])
            for m in FINAL_METRICS
        ]
        epochs = format_range([len(job.curve) for job in finished])
        seeds = f"{len(finished)} / {setting.planned}"
        lines.append("| " + " | ".join([cell(setting.label), *finals, seeds, epochs]) + " |")
    return "\n".join(lines)


def markdown(sweep: Sweep, metric: str, table: str, plot_name: str | None) -> str:
    """The whole report: the table, the plot, failed or incomplete jobs, jobs never started."""
    finished = sum(job.finished for job in sweep.jobs)
    failed = [job for job in sweep.jobs if not job.finished]
    planned = "unknown number of" if sweep.planned is None else str(sweep.planned)
    never = "?" if sweep.never_started is None else str(len(sweep.never_started))
    stage = "validation" if metric.startswith("val/") else "logged"
    lines = [
        f"# Sweep {sweep.name}: {sweep.path.name}",
        "",
        f"`{sweep.path}`: {planned} jobs planned, {len(sweep.jobs)} started, {finished} "
        f"finished, {len(failed)} failed or incomplete, {never} never started.",
        "",
        "Overrides of every job: " + (" ".join(f"`{o}`" for o in sweep.common) or "none") + ".",
        "",
        "## Final accuracies",
        "",
        "Mean ± standard deviation over the seeds that finished (sample deviation, n − 1; "
        "none with one seed). `test/accuracy` is the test split, evaluated once at the end "
        "of a run with its best checkpoint; `val/accuracy_best` is the best validation "
        "accuracy of the run; epochs: the epochs with a logged "
        f"`{metric}`.",
        "",
        table,
        "",
        f"## `{metric}` per epoch",
        "",
    ]
    if plot_name is None:
        lines.append(f"No finished job logged `{metric}` in csv/metrics.csv: no plot.")
    else:
        lines += [
            f"![{metric} per epoch]({plot_name})",
            "",
            f"The curves are `{metric}` after each epoch ({stage} split), the mean over the "
            "seeds that finished, with a band of ± one standard deviation. The test split "
            "is evaluated only once, at the end of a run, whereas the paper's Figure 4 "
            "plots test accuracy per epoch.",
        ]
    lines += ["", "## Failed or incomplete", ""]
    if failed:
        lines += [
            f"Jobs without {RESULTS_FILE}: they failed, were killed, or are still running.",
            "",
            "| job | overrides | epochs logged | last message in its log |",
            "| --- | --- | --- | --- |",
        ]
        for job in failed:
            epochs = str(len(job.curve))
            if job.max_epochs is not None:
                epochs += f" of {job.max_epochs}"
            log_line = cell(job.last_log_record) if job.last_log_record else "(no log)"
            overrides = distinct_overrides(sweep, job.overrides)
            lines.append(f"| {job.name} | {overrides} | {epochs} | {log_line} |")
    else:
        lines.append("None.")
    lines += ["", "## Never started", ""]
    if sweep.never_started is None:
        lines.append(f"Unknown: {sweep.unknown_plan}.")
    elif sweep.never_started:
        lines += [f"- {distinct_overrides(sweep, o)}" for o in sweep.never_started]
    else:
        lines.append("None.")
    return "\n".join(lines) + "\n"


def plot(sweep: Sweep, metric: str, path: Path) -> bool:
    """Write ``metric`` per epoch, one line and ± std band per setting, to the PNG ``path``.

    Returns False (and writes nothing) when no finished job logged ``metric``.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    curves = [(s, s.finished) for s in sweep.settings if any(job.curve for job in s.finished)]
    if not curves:
        return False
    figure = Figure(figsize=(8, 5), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    for setting, jobs in curves:
        epochs, mean, std = setting_curve(jobs)
        trained = epochs + 1  # epoch 0 ends after one epoch of training
        seeds = f"{len(jobs)} seed{'s' if len(jobs) > 1 else ''}"
        (line,) = axes.plot(trained, mean, marker=".", label=f"{setting.label} ({seeds})")
        if np.isfinite(std).any():
            axes.fill_between(trained, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    axes.set_xlabel("epochs trained")
    axes.set_ylabel(metric)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    axes.set_title(f"{sweep.name}, sweep {sweep.path.name}: {metric}, mean ± std over seeds")
    axes.legend()
    with atomic_path(path) as partial:
        figure.savefig(partial, format="png")
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """``varsac report DIR [--metric M] [--output OUT]``; returns the exit status.

    0: the report was written (failed jobs are listed in it); 1: it was written
    but no job finished; 2: DIR is not a sweep directory.
    """
    parser = argparse.ArgumentParser(
        prog="varsac report",
        description="Summarise a Hydra sweep (varsac fit -m …): a plot of a metric per epoch "
        "for each setting, mean ± std over seeds, and a Markdown table of final accuracies; "
        "failed, incomplete and never-started jobs are listed.",
    )
    parser.add_argument("dir", type=Path, help="the sweep directory: outputs/NAME/multirun/TIME")
    parser.add_argument(
        "--metric",
        default="val/accuracy",
        help="the per-epoch metric to plot, a column of csv/metrics.csv (default: %(default)s)",
    )
    parser.add_argument(
        "--output", type=Path, help="where to write the plot and report.md (default: DIR/report)"
    )
    args = parser.parse_args(argv)
    try:
        sweep = read_sweep(args.dir, args.metric)
    except NotASweepError as error:
        print(f"varsac report: {error}", file=sys.stderr)
        return 2
    output = args.output or args.dir / "report"
    plot_path = output / f"{args.metric.replace('/', '_')}.png"
    plotted = plot(sweep, args.metric, plot_path)
    if not plotted:
        plot_path.unlink(missing_ok=True)  # a plot from an earlier report would mislead
    table = results_table(sweep)
    document = markdown(sweep, args.metric, table, plot_path.name if plotted else None)
    report_path = output / "report.md"
    replace_atomically(report_path, lambda handle: handle.write(document.encode()))
    print(table)
    print()
    if plotted:
        print(f"plot:   {plot_path}")
    print(f"report: {report_path}")
    if not any(job.finished for job in sweep.jobs):
        print(
            f"varsac report: no job of {args.dir} finished; {report_path} lists them",
            file=sys.stderr,
        )
        return 1
    return 0
