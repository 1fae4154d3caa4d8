"""``varsac predict``: a trained model on your images: what it decided, how sure, where it looked.

A loop over ``varsac.Predictor`` (predictor.py, which says how images are
converted, cached and predicted), ``batch_size`` images at a time. Inputs are
image files of any size in any format the installed libvips reads (JPEG, PNG,
TIFF, WebP, HEIF/AVIF, GIF, SVG…: ``varsac.image_files`` asks libvips, by
content); whole-slide images among them (any file OpenSlide recognises, or named
like a slide: SVS, NDPI, MIRAX, DICOM…) are read as they are through OpenSlide
(``varsac.slides``, with the slides extra), whether libvips reads them or not.
A file libvips recognises but cannot decode, or one named like an image that
holds none, failed (the command exits 1); a file that is no image is skipped;
both are listed with the reason.
An image that fails while its batch is predicted fails alone: the batch is
predicted again image by image.

Outputs, in the run directory:

- ``predictions.csv``: per image, the prediction, its probability and spread,
  and every class's probability;
- ``predictions.json``: the same, each glimpse's box in pixels of the original
  image (upright, as its orientation tag turns it; a slide's level 0), for a
  slide that says its resolution also in microns from its top left corner
  (``left_um``, ``top_um``, ``width_um``, ``height_um``), and the ``failed``
  and ``skipped`` files with the reasons;
- ``saccades/<image>.png``: the proxy and the image with numbered boxes, and
  the glimpses.
"""

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig
from tqdm import tqdm

from varsac.config_check import checked_arguments
from varsac.errors import check_at_least
from varsac.files import replace_atomically, write_csv_atomically, write_png_atomically
from varsac.image_files import SortedFiles, readable_formats, sort_files
from varsac.predictor import PICTURE_SIDE, Prediction, Predictor
from varsac.run import run_dir
from varsac.slides import SlideSupportMissing, reads_as_slide
from varsac.viz import draw_saccades

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictOptions:
    """The options of ``varsac predict`` (conf/predict.yaml), of the types given here."""

    ckpt_path: str
    input: str
    cache_dir: str
    samples: int = 16
    batch_size: int = 8
    size: int | None = None
    workers: int | None = None
    device: str = "auto"
    pictures: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        check_at_least(samples=(self.samples, 0), batch_size=(self.batch_size, 1))
        if self.size is not None:
            check_at_least(size=(self.size, 1))


def find_images(path: Path) -> SortedFiles:
    """The file ``path``, or the files under the folder ``path`` (recursively, sorted, hidden
    files and folders left out), sorted into images, failed and skipped files."""
    if path.is_file():
        found = sort_inputs([path])
        if not found.images:
            (reason,) = {**found.failed, **found.skipped}.values()
            raise FileNotFoundError(f"input={path}: {reason}")
        return found
    if not path.is_dir():
        raise FileNotFoundError(f"input={path}: no such file or folder")
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    found = sort_inputs(files)
    if not found.images:
        rejected = {**found.failed, **found.skipped}
        example = next((f" (e.g. {p.name}: {reason})" for p, reason in rejected.items()), "")
        raise FileNotFoundError(
            f"input={path}: no image files that libvips reads in this folder{example}; "
            f"it reads {readable_formats()}"
        )
    return found


def sort_inputs(files: Sequence[Path]) -> SortedFiles:
    """``files`` sorted as ``sort_files`` sorts them, but for whole-slide images that libvips
    does not read (MIRAX, DICOM…): they are images too, which the predictor opens through
    OpenSlide (or fails with OpenSlide's reason, or with what to install)."""
    found = sort_files(files)
    slides = {path for path in [*found.failed, *found.skipped] if is_slide(path)}
    for path in slides:
        found.failed.pop(path, None)
        found.skipped.pop(path, None)
    images = set(found.images) | slides
    found.images = [path for path in files if path in images]
    return found


def is_slide(path: Path) -> bool:
    """Whether ``path`` reads as a slide (``reads_as_slide``); a file named like one is, when
    OpenSlide is missing, so that the predictor says what to install."""
    try:
        return reads_as_slide(path)
    except SlideSupportMissing:
        return True


def picture_name(source: Path, root: Path) -> str:
    """A file name for ``source``'s picture, unique among the inputs under ``root``."""
    relative = source.relative_to(root) if root.is_dir() else Path(source.name)
    return "__".join(relative.with_suffix("").parts) + ".png"


def predict(config: DictConfig) -> None:
    """Predict every input image; write the tables and pictures; exit 1 if any image failed."""
    cfg = PredictOptions(**checked_arguments(PredictOptions, config))
    root = Path(cfg.input).expanduser()
    found = find_images(root)
    started = time.perf_counter()
    predictor = Predictor.from_checkpoint(
        Path(cfg.ckpt_path).expanduser(), cfg.device, cfg.samples, size=cfg.size,
        cache_dir=cfg.cache_dir, workers=cfg.workers, seed=cfg.seed,
    )  # fmt: skip
    seconds = {"loading the model": time.perf_counter() - started}
    started = time.perf_counter()
    read, failures = predictor.sources(found.images)
    failures = {**found.failed, **failures}
    seconds["converting"] = time.perf_counter() - started
    out = run_dir()
    sources = list(read)  # in the order found
    images = [(str(source), read[source]) for source in sources]
    predictions = []
    outcomes = predictor.predict_each(images, cfg.batch_size, cfg.pictures)
    for index, outcome in tqdm(outcomes, total=len(images), desc="predicting", unit="image"):
        if isinstance(outcome, str):
            failures[sources[index]] = outcome
            log.warning("could not predict %s: %s", sources[index], outcome)
            continue
        if outcome.picture is not None:
            sheet = draw_saccades([outcome.picture], side=PICTURE_SIDE, glimpse_side=128)
            write_png_atomically(out / "saccades" / picture_name(sources[index], root), sheet)
        predictions.append(outcome)
    done = Outcome(predictions, failures, found.skipped, seconds)
    write_tables(done, out, predictor.class_names)
    log.info(summary(done, out))
    if failures:
        raise SystemExit(1)


@dataclass(frozen=True)
class Outcome:
    """What a ``varsac predict`` did: its predictions, the files that failed and those
    skipped ({path: reason}), and the seconds its stages took."""

    predictions: list[Prediction]
    failures: dict[Path, str]
    skipped: dict[Path, str]
    seconds: dict[str, float]


def write_tables(outcome: Outcome, out: Path, names: list[str]) -> None:
    """predictions.csv (a row per image) and predictions.json (with glimpses, and the files
    failed and skipped: {path: reason})."""
    predictions, failures, skipped = outcome.predictions, outcome.failures, outcome.skipped
    header = ["path", "prediction", "probability", "spread", *names]
    rows = (
        [p.path, p.prediction, f"{p.probability:.4f}", f"{p.spread:.4f}"]
        + [f"{p.probabilities[name]:.4f}" for name in names]
        for p in predictions
    )
    write_csv_atomically(out / "predictions.csv", header, rows)
    document = {
        "predictions": [p.record() for p in predictions],
        "failed": {str(k): v for k, v in failures.items()},
        "skipped": {str(k): v for k, v in skipped.items()},
        "seconds": outcome.seconds,
    }
    encoded = json.dumps(document, indent=2).encode()
    replace_atomically(out / "predictions.json", lambda handle: handle.write(encoded))


def summary(outcome: Outcome, out: Path) -> str:
    """The log's account of the run: the first predictions, failures and skips, the times."""
    predictions, failures, skipped = outcome.predictions, outcome.failures, outcome.skipped
    seconds = outcome.seconds
    lines = [f"varsac predict finished — run directory: {out}"]
    lines += [
        f"  {Path(p.path).name:<32} {p.prediction:<16} p={p.probability:.3f} ± {p.spread:.3f}"
        for p in predictions[:20]
    ]
    if len(predictions) > 20:
        lines.append(f"  … and {len(predictions) - 20} more in predictions.csv")
    lines += [f"  FAILED {source}: {reason}" for source, reason in failures.items()]
    lines += [f"  SKIPPED {path}: {reason}" for path, reason in list(skipped.items())[:20]]
    if len(skipped) > 20:
        lines.append(f"  … and {len(skipped) - 20} more skipped in predictions.json")
    per_image = sum(p.seconds for p in predictions) / max(len(predictions), 1)
    lines.append(
        f"  {len(predictions)} predicted, {len(failures)} failed, {len(skipped)} skipped (not "
        f"images); model loaded in "
        f"{seconds['loading the model']:.2f} s, conversions {seconds['converting']:.2f} s, "
        f"{per_image:.3f} s per image"
    )
    return "\n".join(lines)
