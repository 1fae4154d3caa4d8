"""``varsac predict``: a trained model on your images: what it decided, how sure, where it looked.

Inputs are image files of any size in any format the installed libvips reads
(JPEG, PNG, TIFF, WebP, HEIF/AVIF, GIF, SVG…: ``varsac.image_files`` asks
libvips, by content). A file libvips recognises but cannot decode, or one named
like an image that holds none, failed (the command exits 1); a file that is no
image is skipped; both are listed with the reason. Pyramid TIFFs are read
directly; any other image is converted once to a pyramid TIFF under
``cache_dir`` and reused next time (the cache key holds the file's path, size
and modification time, and the conversion settings). A saccade model averages
the class probabilities of ``samples`` posterior samples and reports their
standard deviation (how sure it is); the saccades drawn and listed are those of
the posterior mean. A model trained with the spatial transformer on small
tensors reads its glimpses through the localized spatial transformer here,
which at full resolution samples the same pixels.

Outputs, in the run directory:

- ``predictions.csv``: per image, the prediction, its probability and spread,
  and every class's probability;
- ``predictions.json``: the same, each glimpse's box in pixels of the original
  image (upright, as its orientation tag turns it), and the ``failed`` and
  ``skipped`` files with the reasons;
- ``saccades/<image>.png``: the proxy and the image with numbered boxes, and
  the glimpses.
"""

import hashlib
import io
import json
import logging
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from varsac.checkpoint import CONFIG_KEY, DATA_KEY, load_varsac_checkpoint
from varsac.config_check import checked_arguments
from varsac.data.photo_conversion import fit_square
from varsac.data.pyramid_conversion import CONVERSION_ERRORS, as_srgb, convert_all
from varsac.data.pyramid_dataset import read_proxies
from varsac.errors import ConfigError, check_at_least
from varsac.files import replace_atomically, write_csv_atomically
from varsac.image_files import SortedFiles, readable_formats, sort_files
from varsac.models.localized_spatial_transformer import LocalizedSpatialTransformer
from varsac.models.saccader import Saccader
from varsac.models.spatial_transformer import SpatialTransformer
from varsac.pyramid import NotAPyramidWarning, PyramidTIFF, open_image, write_pyramid
from varsac.train import run_dir
from varsac.viz import SaccadePicture, describe, draw_saccades

log = logging.getLogger(__name__)

PICTURE_SIDE = 512  # pixels of the longer side of the image in the saccade pictures


@dataclass
class Prediction:
    """One image's prediction. Boxes are (left, top, width, height) in pixels of the original."""

    path: str
    prediction: str
    probability: float  # of the predicted class (the mean over the posterior samples)
    spread: float  # its standard deviation over the samples (0 without sampling)
    probabilities: dict[str, float]
    spreads: dict[str, float]
    glimpses: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0  # reading the glimpses and predicting, conversion excluded


@dataclass(frozen=True)
class PredictOptions:
    """The options of ``varsac predict`` (conf/predict.yaml), of the types given here."""

    ckpt_path: str
    input: str
    cache_dir: str
    samples: int = 16
    size: int | None = None
    workers: int | None = None
    device: str = "auto"
    pictures: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        check_at_least(samples=(self.samples, 0))
        if self.size is not None:
            check_at_least(size=(self.size, 1))


@dataclass
class LoadedModel:
    """A checkpoint's model, its class names, and the proxy side and image channels it takes."""

    model: torch.nn.Module
    class_names: list[str]
    proxy_size: int
    channels: int


def find_images(path: Path) -> SortedFiles:
    """The file ``path``, or the files under the folder ``path`` (recursively, sorted, hidden
    files and folders left out), sorted into images, failed and skipped files."""
    if path.is_file():
        found = sort_files([path])
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
    found = sort_files(files)
    if not found.images:
        rejected = {**found.failed, **found.skipped}
        example = next((f" (e.g. {p.name}: {reason})" for p, reason in rejected.items()), "")
        raise FileNotFoundError(
            f"input={path}: no image files that libvips reads in this folder{example}; "
            f"it reads {readable_formats()}"
        )
    return found


def load_model(ckpt_path: Path, device: torch.device) -> LoadedModel:
    """The model of a varsac checkpoint, in eval mode on ``device``, with what it needs."""
    checkpoint = load_varsac_checkpoint(ckpt_path)
    cfg = OmegaConf.create(checkpoint[CONFIG_KEY])
    data = checkpoint.get(DATA_KEY, {})
    if not data.get("proxy_from_image", True):
        raise ConfigError(
            f"{ckpt_path} was trained with a proxy that is another image than the input "
            f"(data: {cfg.data._target_}); varsac predict makes the proxy from the image itself"
        )
    model = instantiate(cfg.model)
    model.load_state_dict(checkpoint["state_dict"])
    if isinstance(getattr(model, "cropper", None), SpatialTransformer):
        model.cropper = LocalizedSpatialTransformer(window=model.cropper.window)
    num_classes = model.task.num_classes
    names = data.get("class_names") or [str(k) for k in range(num_classes)]
    return LoadedModel(
        model.to(device).eval(), list(names), cfg.data.proxy_size, cfg.image_channels
    )


def cached_pyramid_path(source: Path, cache_dir: Path, size: int | None, channels: int) -> Path:
    """Where ``source`` converted with these settings lives in the cache."""
    stat = source.stat()
    key = f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{size}|{channels}"
    return cache_dir / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.tif"


def readable_as_is(path: Path, channels: int) -> bool:
    """Whether ``path`` is a pyramid TIFF (with coarser levels) of ``channels`` channels."""
    if path.suffix.lower() not in (".tif", ".tiff"):
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotAPyramidWarning)
        try:
            pyramid = PyramidTIFF(path)
            return len(pyramid.levels) > 1 and pyramid.channels == channels
        except CONVERSION_ERRORS:
            return False


def convert(source: Path, target: Path, size: int | None, channels: int) -> None:
    """``source`` as an 8-bit pyramid TIFF of ``channels`` (1 or 3), resized to size² if given."""
    image = as_srgb(open_image(source))
    if size is not None:
        image = fit_square(image, size, "resize")
    if channels == 1:
        image = image.colourspace("b-w")
    write_pyramid(image, target, compression="jpeg", quality=90)


def pyramids_for(
    sources: list[Path], cfg: PredictOptions, channels: int
) -> tuple[dict[Path, Path], dict[Path, str]]:
    """({source: pyramid to read}, {source: why it failed}), converting what is not cached."""
    cache_dir = Path(cfg.cache_dir).expanduser()
    pyramids, jobs = {}, []
    for source in sources:
        if cfg.size is None and readable_as_is(source, channels):
            pyramids[source] = source
            continue
        target = cached_pyramid_path(source, cache_dir, cfg.size, channels)
        pyramids[source] = target
        if not target.is_file():
            jobs.append((source, target))
    if jobs:
        log.info("converting %d of %d images to pyramids in %s", len(jobs), len(sources), cache_dir)
    failures = convert_all(
        jobs, lambda s, t: convert(s, t, cfg.size, channels), cfg.workers, "image"
    )
    return {s: p for s, p in pyramids.items() if s not in failures}, failures


@torch.no_grad()
def predict_one(
    loaded: LoadedModel, image: PyramidTIFF, samples: int
) -> tuple[Tensor, Tensor, SaccadePicture | None]:
    """(K,) mean class probabilities, (K,) their spread, and the saccade picture or None."""
    model = loaded.model
    if not isinstance(model, Saccader):
        probabilities = model([image]).exp()[0].cpu()
        return probabilities, torch.zeros_like(probabilities), None
    proxy = read_proxies([image], loaded.proxy_size).to(next(model.parameters()).device)
    mean = model.saccade([image], proxy, sample=False)
    if samples > 0:
        looks = [model.saccade([image], proxy, sample=True) for _ in range(samples)]
        probabilities = torch.stack([look.log_probs[0].exp() for look in looks])
    else:
        probabilities = mean.log_probs.exp()
    # the image at a level a little larger than the picture, in its own shape
    display = image.read_level(image.proxy_level(PICTURE_SIDE))
    picture = SaccadePicture(
        image=torch.from_numpy(display).permute(2, 0, 1).float() / 255,
        proxy=proxy[0].cpu(),
        boxes=mean.boxes[0].cpu(),
        glimpses=mean.glimpses[0].cpu(),
    )
    probabilities, spread = probabilities.mean(0), probabilities.std(0, correction=0)
    return probabilities.cpu(), spread.cpu(), picture


def pixel_boxes(boxes: Tensor, width: int, height: int) -> list[dict[str, float]]:
    """(T, 4) fractions (x0, y0, x1, y1) → per glimpse {step, left, top, width, height}, pixels."""
    return [
        {
            "step": step + 1,
            "left": round(x0 * width, 1),
            "top": round(y0 * height, 1),
            "width": round((x1 - x0) * width, 1),
            "height": round((y1 - y0) * height, 1),
        }
        for step, (x0, y0, x1, y1) in enumerate(boxes.tolist())
    ]


def picture_name(source: Path, root: Path) -> str:
    """A file name for ``source``'s picture, unique among the inputs under ``root``."""
    relative = source.relative_to(root) if root.is_dir() else Path(source.name)
    return "__".join(relative.with_suffix("").parts) + ".png"


def predict(config: DictConfig) -> None:
    """Predict every input image; write the tables and pictures; exit 1 if any image failed."""
    cfg = PredictOptions(**checked_arguments(PredictOptions, config))
    root = Path(cfg.input).expanduser()
    found = find_images(root)
    sources = found.images
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    )
    started = time.perf_counter()
    loaded = load_model(Path(cfg.ckpt_path).expanduser(), device)
    seconds = {"loading the model": time.perf_counter() - started}
    torch.manual_seed(cfg.seed)
    started = time.perf_counter()
    pyramids, failures = pyramids_for(sources, cfg, loaded.channels)
    failures = {**found.failed, **failures}
    seconds["converting"] = time.perf_counter() - started
    out = run_dir()
    predictions = []
    for source in tqdm(sources, desc="predicting", unit="image"):
        if source not in pyramids:
            continue
        try:
            prediction, picture = predict_file(loaded, source, pyramids[source], cfg.samples)
        except CONVERSION_ERRORS as error:
            failures[source] = " ".join(str(error).split())
            log.warning("could not predict %s: %s", source, failures[source])
            continue
        if picture is not None and cfg.pictures:
            sheet = draw_saccades([picture], side=PICTURE_SIDE, glimpse_side=128)
            write_png(sheet, out / "saccades" / picture_name(source, root))
        predictions.append(prediction)
    write_tables(predictions, failures, found.skipped, seconds, out, loaded.class_names)
    log.info(summary(predictions, failures, found.skipped, seconds, out))
    if failures:
        raise SystemExit(1)


def predict_file(
    loaded: LoadedModel, source: Path, pyramid: Path, samples: int
) -> tuple[Prediction, SaccadePicture | None]:
    """One image's prediction, and its saccade picture (None for a model without saccades)."""
    started = time.perf_counter()
    image = PyramidTIFF(pyramid)
    probabilities, spread, picture = predict_one(loaded, image, samples)
    names = loaded.class_names
    predicted = loaded.model.task.predict(probabilities.log()[None])[0]
    best = int(probabilities.argmax())
    prediction = Prediction(
        path=str(source),
        prediction=describe(predicted, names),
        probability=float(probabilities[best]),
        spread=float(spread[best]),
        probabilities=dict(zip(names, probabilities.tolist(), strict=True)),
        spreads=dict(zip(names, spread.tolist(), strict=True)),
        seconds=time.perf_counter() - started,
    )
    if picture is not None:
        prediction.glimpses = pixel_boxes(picture.boxes, *image.levels[0])
        picture.prediction = prediction.prediction
    return prediction, picture


def write_png(picture: Image.Image, path: Path) -> None:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    replace_atomically(path, lambda handle: handle.write(buffer.getvalue()))


def write_tables(
    predictions: list[Prediction],
    failures: dict[Path, str],
    skipped: dict[Path, str],
    seconds: dict[str, float],
    out: Path,
    names: list[str],
) -> None:
    """predictions.csv (a row per image) and predictions.json (with glimpses, and the files
    failed and skipped: {path: reason})."""
    header = ["path", "prediction", "probability", "spread", *names]
    rows = (
        [p.path, p.prediction, f"{p.probability:.4f}", f"{p.spread:.4f}"]
        + [f"{p.probabilities[name]:.4f}" for name in names]
        for p in predictions
    )
    write_csv_atomically(out / "predictions.csv", header, rows)
    document = {
        "predictions": [asdict(p) for p in predictions],
        "failed": {str(k): v for k, v in failures.items()},
        "skipped": {str(k): v for k, v in skipped.items()},
        "seconds": seconds,
    }
    encoded = json.dumps(document, indent=2).encode()
    replace_atomically(out / "predictions.json", lambda handle: handle.write(encoded))


def summary(
    predictions: list[Prediction],
    failures: dict[Path, str],
    skipped: dict[Path, str],
    seconds: dict[str, float],
    out: Path,
) -> str:
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
