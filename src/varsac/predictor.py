"""``varsac.Predictor``: a trained model on images, from Python; ``varsac predict`` runs it too.

    predictor = Predictor.from_checkpoint("last.ckpt", device="auto", samples=16)
    for p in predictor(["photo.jpg", pyramid, array]):
        print(p.prediction, p.probability, p.spread, p.glimpses)

An image is a path to any file libvips reads (converted once to a pyramid TIFF
under ``cache_dir`` and reused next time: the cache key holds the file's path,
size and modification time and the conversion settings; a pyramid TIFF with the
model's channels is read as it is), a whole-slide image (``varsac.slides``,
with the slides extra: read through OpenSlide as it is, never converted), a
``PyramidTIFF`` or ``Slide``, or an image in memory: a uint8 array (H, W) or
(H, W, C), or a float tensor (C, H, W) in [0, 1], written losslessly to a
temporary pyramid. A slide or pyramid TIFF read as it is and not square is padded
to a square with its background, as the index datamodule reads it in training
(``slides.model_view``); a converted image is stretched to the square, as photos
are converted for training. An image in memory is read as a pyramid TIFF of its
pixels would be. A saccade model averages the class probabilities of
``samples`` posterior samples, run as one batch per batch of images, and
reports their standard deviation (how sure it is); the glimpses reported are
those of the posterior mean, boxes in pixels of the original (of a slide's
level 0, fraction × side of its square view from the top-left corner) and,
for a slide that says its resolution, in microns too. A model trained with
glimpse sizes in microns or pixels (``data.glimpse_microns``,
``data.glimpse_pixels``) gets each image's scale bounds
(``glimpse_sizes.glimpse_scale_bounds``); in microns, an image that does not
say its resolution fails. Its proxy
decoder, which only the training loss needs, does not run. A model trained with
the spatial transformer on small tensors reads its glimpses through the
localized spatial transformer here, which at full resolution samples the same
pixels.

Everything here needs torch, pyvips and Hydra's ``instantiate``, not Lightning:
the saccade model is rebuilt as a ``SaccadeNetwork`` (the baselines, which are
LightningModules, import it).
"""

import hashlib
import inspect
import logging
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np
import pyvips
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from varsac.checkpoint import DATA_KEY, load_varsac_checkpoint, stored_config
from varsac.data.glimpse_sizes import check_glimpse_sizes, glimpse_scale_bounds
from varsac.data.pyramid_conversion import CONVERSION_ERRORS, convert_all, write_srgb_pyramid
from varsac.errors import ConfigError, check_at_least, in_one_line
from varsac.image_source import SquareView, read_proxies, to_float
from varsac.models.localized_spatial_transformer import LocalizedSpatialTransformer
from varsac.models.saccades import SaccadeNetwork
from varsac.models.spatial_transformer import SpatialTransformer
from varsac.pyramid import NotAPyramidWarning, PyramidTIFF
from varsac.slides import Slide, SlideError, model_view, reads_as_slide
from varsac.viz import SaccadePicture, describe

log = logging.getLogger(__name__)

ImageInput = str | os.PathLike[str] | PyramidTIFF | Slide | np.ndarray | Tensor
Source = PyramidTIFF | Slide | SquareView  # what an image is read through
SACCADER = "varsac.models.saccader.Saccader"  # the _target_ that SaccadeNetwork stands in for
PICTURE_SIDE = 512  # pixels of the longer side of the image in the saccade pictures


@dataclass
class Prediction:
    """One image's prediction. Boxes are (left, top, width, height) in pixels of the original,
    and for a slide that says its resolution also in microns (left_um, …: ``pixel_boxes``)."""

    path: str | None  # the image's file, None for one in memory
    prediction: str
    probability: float  # of the predicted class (the mean over the posterior samples)
    spread: float  # its standard deviation over the samples (0 without sampling)
    probabilities: dict[str, float]
    spreads: dict[str, float]
    glimpses: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0  # its share of its batch's reading and predicting, conversion excluded
    # what varsac.viz.draw_saccades draws, when asked for (a saccade model only)
    picture: SaccadePicture | None = field(default=None, repr=False, compare=False)

    def record(self) -> dict[str, Any]:
        """The prediction as plain values, the picture left out (for predictions.json)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "picture"}


class ImageError(ValueError):
    """An image that could not be read or predicted; the message names it and says why."""


def pixel_boxes(
    boxes: Tensor, width: int, height: int, mpp: tuple[float, float] | None = None
) -> list[dict[str, float]]:
    """(T, 4) fractions (x0, y0, x1, y1) → per glimpse {step, left, top, width, height}, pixels;
    with ``mpp`` (microns per pixel, x and y: a slide that says its resolution) also
    {left_um, top_um, width_um, height_um}, the same box in microns."""
    glimpses = []
    for step, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        box = {"left": x0 * width, "top": y0 * height}
        box |= {"width": (x1 - x0) * width, "height": (y1 - y0) * height}
        glimpse = {"step": step + 1} | {key: round(value, 1) for key, value in box.items()}
        if mpp is not None:
            scales = {"left": mpp[0], "top": mpp[1], "width": mpp[0], "height": mpp[1]}
            glimpse |= {f"{key}_um": round(box[key] * scales[key], 1) for key in box}
        glimpses.append(glimpse)
    return glimpses


def default_cache_dir() -> Path:
    """``$VARSAC_DATA_DIR/predict_pyramids``, as ``varsac predict``'s ``cache_dir``."""
    return Path(os.environ.get("VARSAC_DATA_DIR", "~/.cache/varsac")).expanduser() / (
        "predict_pyramids"
    )


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto``: a GPU if there is one, else the CPU; anything else as torch names it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def build_model(model: DictConfig) -> nn.Module:
    """The model a checkpoint's ``model`` config describes; a ``Saccader`` as the
    ``SaccadeNetwork`` of its parts (the same state dict, no training machinery)."""
    if model.get("_target_") != SACCADER:
        return instantiate(model)
    taken = inspect.signature(SaccadeNetwork).parameters
    parts = {
        key: instantiate(value) if OmegaConf.is_config(value) else value
        for key, value in model.items()
        if key in taken
    }
    return SaccadeNetwork(**parts)


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


def in_memory_image(image: np.ndarray | Tensor) -> pyvips.Image:
    """A uint8 (H, W) or (H, W, C) array, or a float (C, H, W) tensor in [0, 1], for libvips."""
    if isinstance(image, Tensor):
        if image.ndim != 3 or not image.is_floating_point():
            raise ValueError(
                f"a tensor image must be float (C, H, W) in [0, 1], got {image.dtype} "
                f"{tuple(image.shape)}"
            )
        image = (image.detach().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or image.size == 0:
        raise ValueError(
            f"an array image must be uint8 (H, W) or (H, W, C), got {image.dtype} {image.shape}"
        )
    bands = 1 if image.ndim == 2 else image.shape[2]
    interpretation = "b-w" if bands in (1, 2) else "srgb"
    return pyvips.Image.new_from_array(np.ascontiguousarray(image), interpretation=interpretation)


class Predictor:
    """A trained model's predictions, in batches of images (see the module's docstring).

    ``model``: a ``SaccadeNetwork`` or a baseline classifier (images → (B, K) class
    log-probabilities), in eval mode; ``proxy_size`` and ``channels``: the side of its
    proxy and the channels of its images. ``seed`` seeds the posterior samples of each
    batch (``predict_batch``): the same images in the same batches get the same answers.
    ``glimpse_microns`` or ``glimpse_pixels``: the [min, max] glimpse sizes the model was
    trained with (``glimpse_sizes``), None for its own ``min_scale`` and ``max_scale``.
    """

    def __init__(
        self,
        model: nn.Module,
        class_names: Sequence[str],
        proxy_size: int,
        channels: int,
        device: str | torch.device = "auto",
        samples: int = 16,
        size: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        workers: int | None = None,
        seed: int = 0,
        glimpse_microns: Sequence[float] | None = None,
        glimpse_pixels: Sequence[float] | None = None,
    ) -> None:
        check_at_least(samples=(samples, 0))
        check_glimpse_sizes(glimpse_microns, glimpse_pixels)
        if size is not None:
            check_at_least(size=(size, 1))
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.class_names = list(class_names)
        self.proxy_size = proxy_size
        self.channels = channels
        self.samples = samples
        self.size = size
        self.cache_dir = default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()
        self.workers = workers
        self.seed = seed
        self.glimpse_microns, self.glimpse_pixels = glimpse_microns, glimpse_pixels

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike[str], device: str | torch.device = "auto", samples: int = 16,
        **options: Any,
    ) -> "Predictor":  # fmt: skip
        """The model of a ``varsac fit`` checkpoint, loaded as weights only (it runs no code).

        ``options``: the other arguments of ``Predictor`` (size, cache_dir, workers, seed).
        """
        checkpoint = load_varsac_checkpoint(path)
        cfg = stored_config(checkpoint)
        data = checkpoint.get(DATA_KEY, {})
        if not data.get("proxy_from_image", True):
            raise ConfigError(
                f"{path} was trained with a proxy that is another image than the input "
                f"(data: {cfg.data._target_}); prediction makes the proxy from the image itself"
            )
        model = build_model(cfg.model)
        model.load_state_dict(checkpoint["state_dict"])
        if isinstance(getattr(model, "cropper", None), SpatialTransformer):
            model.cropper = LocalizedSpatialTransformer(window=model.cropper.window)
        names = data.get("class_names") or [str(k) for k in range(model.task.num_classes)]
        glimpses = {key: cfg.data.get(key) for key in ("glimpse_microns", "glimpse_pixels")}
        return cls(
            model, names, cfg.data.proxy_size, cfg.data.image_channels, device, samples,
            **glimpses, **options,
        )  # fmt: skip

    def __call__(
        self, images: ImageInput | Sequence[ImageInput], batch_size: int = 8, pictures: bool = False
    ) -> list[Prediction]:
        """One ``Prediction`` per image, in order (a single image: a list of one).

        ``pictures``: also each prediction's ``picture`` of the saccades (``draw_saccades``).
        Raises ``ImageError``, naming the image, for one that cannot be read.
        """
        if isinstance(images, str | os.PathLike | PyramidTIFF | Slide | np.ndarray | Tensor):
            images = [images]
        with TemporaryDirectory(prefix="varsac-images-") as scratch:
            labels, files, entries = [], [], []  # entries: (path reported, file to read)
            for index, image in enumerate(images):
                if isinstance(image, PyramidTIFF | Slide):
                    image = image.path
                if isinstance(image, str | os.PathLike):
                    if not Path(image).is_file():
                        raise ImageError(f"{image}: no such file")
                    labels.append(str(image))
                    files.append(Path(image))
                    entries.append((str(image), Path(image)))
                    continue
                labels.append(f"image {index} ({type(image).__name__} in memory)")
                target = Path(scratch) / f"{index}.tif"
                try:
                    write_srgb_pyramid(in_memory_image(image), target, channels=self.channels,
                                       size=self.size, compression="deflate")  # fmt: skip
                except CONVERSION_ERRORS as error:
                    raise ImageError(f"{labels[-1]}: {in_one_line(error)}") from None
                entries.append((None, target))
            sources, failures = self.sources(files)
            for path, reason in failures.items():
                raise ImageError(f"{path}: {reason}")
            ordered = [  # an image in memory is read as the pyramid of its pixels would be
                (path, sources[file] if file in sources else model_view(PyramidTIFF(file)))
                for path, file in entries
            ]
            predictions = []
            for index, outcome in self.predict_each(ordered, batch_size, pictures):
                if isinstance(outcome, str):
                    raise ImageError(f"{labels[index]}: {outcome}")
                predictions.append(outcome)
            return predictions

    def sources(self, files: Sequence[Path]) -> tuple[dict[Path, Source], dict[Path, str]]:
        """({file: what it is read through}, {file: why it failed}), in the order of ``files``:
        a whole-slide image as a ``Slide`` (``slide``), any other file as a pyramid TIFF,
        converted first unless it is one with the model's channels (``pyramids``).

        What is read as it is, a slide or a pyramid TIFF, is seen as a square as the index
        datamodule sees it in training (``model_view``: padded with its background); a
        converted image keeps its conversion's shape, stretched to the square as photos are
        converted for training (``data mit5k`` with ``fit=resize``, its default)."""
        slides, failures, others = {}, {}, []
        for file in files:
            try:
                if reads_as_slide(file):
                    slides[file] = self.slide(file)
                else:
                    others.append(file)
            except CONVERSION_ERRORS as error:
                failures[file] = in_one_line(error)
        pyramids, failed = self.pyramids(others)
        read = dict(slides)
        for file, pyramid in pyramids.items():
            tiff = PyramidTIFF(pyramid)
            read[file] = model_view(tiff) if pyramid == file else tiff  # as is, or converted
        return {file: read[file] for file in files if file in read}, {**failures, **failed}

    def slide(self, path: Path) -> Slide | SquareView:
        """The whole-slide image ``path`` as a ``Slide`` of the model's channels, opened (it
        fails here if OpenSlide cannot read it), seen as a square (``model_view``). It is
        never converted to a pyramid, which would copy gigabytes, nor resized (``size``). A
        grey model reads it in grey, each region converted as it is read
        (``Slide(channels=1)``), as libvips converts the colour images that it is given
        (``srgb_image``): the model sees what it saw in training."""
        if self.size is not None:
            raise SlideError(
                f"{path}: a whole-slide image is read at its own levels and not resized: leave "
                f"size unset (it is {self.size})"
            )
        slide = Slide(path, channels=self.channels)
        log.debug("%s: a slide of %s, levels %s", path, slide.vendor, slide.levels)
        return model_view(slide)

    def pyramids(self, sources: Sequence[Path]) -> tuple[dict[Path, Path], dict[Path, str]]:
        """({source: pyramid to read}, {source: why it failed}), converting what is not cached,
        on ``workers`` threads."""
        pyramids, jobs = {}, []
        for source in sources:
            if self.size is None and readable_as_is(source, self.channels):
                pyramids[source] = source
                continue
            target = cached_pyramid_path(source, self.cache_dir, self.size, self.channels)
            pyramids[source] = target
            if not target.is_file():
                jobs.append((source, target))
        if not jobs:
            return pyramids, {}
        log.info(
            "converting %d of %d images to pyramids in %s", len(jobs), len(sources), self.cache_dir
        )
        failures = convert_all(jobs, self.convert, self.workers, "image")
        return {s: p for s, p in pyramids.items() if s not in failures}, failures

    def convert(self, source: Path, target: Path) -> None:
        """``source`` as an 8-bit pyramid TIFF with the model's channels (JPEG tiles)."""
        write_srgb_pyramid(source, target, channels=self.channels, size=self.size)

    def predict_each(
        self, images: Sequence[tuple[str | None, Source]], batch_size: int, pictures: bool
    ) -> Iterator[tuple[int, Prediction | str]]:
        """(index, its Prediction, or why it failed) for each (path or None, source), in
        order, ``batch_size`` images at a time. A batch that fails to read is predicted again
        image by image, so that one bad image fails alone."""
        check_at_least(batch_size=(batch_size, 1))
        for start in range(0, len(images), batch_size):
            batch = range(start, min(start + batch_size, len(images)))
            try:
                predicted = self.predict_batch([images[i] for i in batch], pictures, start)
            except CONVERSION_ERRORS as error:
                if len(batch) == 1:
                    yield start, in_one_line(error)
                    continue
                for index in batch:  # again one by one: which image failed, and the others
                    try:
                        (alone,) = self.predict_batch([images[index]], pictures, index)
                    except CONVERSION_ERRORS as error:
                        yield index, in_one_line(error)
                    else:
                        yield index, alone
                continue
            yield from zip(batch, predicted, strict=True)

    @torch.no_grad()
    def predict_batch(
        self, images: Sequence[tuple[str | None, Source]], pictures: bool, position: int = 0
    ) -> list[Prediction]:
        """The predictions of B images, (path or None, source) each, in one batch; the
        posterior samples seeded by ``seed`` + ``position`` (that of the batch's first image),
        the caller's random state left as it was."""
        started = time.perf_counter()
        sources = [source for _, source in images]
        model, proxy, mean = self.model, None, None
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices):
            torch.manual_seed(self.seed + position)
            if isinstance(model, SaccadeNetwork):
                proxy = read_proxies(sources, self.proxy_size).to(self.device)  # (B, C, P, P)
                bounds = self.scale_bounds(sources)
                mean = model.saccade(sources, proxy, sample=False, scale_bounds=bounds)
                if self.samples > 0:
                    looks = model.saccade(
                        sources, proxy, sample=True, looks=self.samples, scale_bounds=bounds
                    )
                    probabilities = looks.log_probs.exp().view(len(images), self.samples, -1)
                else:
                    probabilities = mean.log_probs.exp()[:, None]  # (B, 1, K)
            else:
                probabilities = model(sources).exp()[:, None]
        average, spread = probabilities.mean(1).cpu(), probabilities.std(1, correction=0).cpu()
        predicted = model.task.predict(average.log())
        seconds = (time.perf_counter() - started) / len(images)
        predictions = []
        for i, (path, source) in enumerate(images):
            best = int(average[i].argmax())
            prediction = Prediction(
                path=path,
                prediction=describe(predicted[i], self.class_names),
                probability=float(average[i, best]),
                spread=float(spread[i, best]),
                probabilities=dict(zip(self.class_names, average[i].tolist(), strict=True)),
                spreads=dict(zip(self.class_names, spread[i].tolist(), strict=True)),
                seconds=seconds,
            )
            if mean is not None:
                slide = source.source if isinstance(source, SquareView) else source
                mpp = slide.mpp if isinstance(slide, Slide) else None
                prediction.glimpses = pixel_boxes(mean.boxes[i], *source.levels[0], mpp)
                if pictures:
                    # the image at a level a little larger than the picture, in its own shape
                    display = source.read_level(source.proxy_level(PICTURE_SIDE))
                    prediction.picture = SaccadePicture(
                        image=to_float(display),
                        proxy=proxy[i].cpu(),
                        boxes=mean.boxes[i].cpu(),
                        glimpses=mean.glimpses[i].cpu(),
                        prediction=prediction.prediction,
                    )
            predictions.append(prediction)
        return predictions

    def scale_bounds(self, sources: Sequence[Source]) -> Tensor | None:
        """float32 (B, 2): each image's crop-scale bounds for the model's glimpse sizes
        (``glimpse_scale_bounds``); None for a model trained without them."""
        if self.glimpse_microns is None and self.glimpse_pixels is None:
            return None
        bounds = [
            glimpse_scale_bounds(source, self.glimpse_microns, self.glimpse_pixels)
            for source in sources
        ]
        return torch.tensor(bounds, dtype=torch.float32)
