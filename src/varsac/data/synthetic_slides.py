"""Synthetic whole-slide images: tissue-like slides with or without small "tumours".

There are no real slides here to train on, so this module draws slides that pose the
task slides pose: a small region, a few hundred microns, on a slide millimetres across.
A slide is

- of a random size, ``SIDES`` (4 000–12 000 px) each side, independently: not square,
  at a random resolution of ``MPPS`` (0.25 µm per pixel, "40×", or 0.5, "20×"), so the
  same tissue is twice as many pixels on some slides as on others;
- glass (``GLASS``) around irregular pieces of tissue covering ``TISSUE_SHARE`` of it:
  a smooth noise field (two octaves of Perlin noise at 1/16 of the resolution),
  fading towards the slide's border, thresholded at the quantile that gives the share;
- the tissue: pink eosin, its shade varying over about 150 µm and darker in fibres of
  about 20 µm (Perlin noise), with purple nuclei of about 5 µm (cells of a Worley noise,
  about 14 µm apart);
- a "tumour" slide (half of them, ``TUMOUR_REGIONS`` regions) holds a few regions of
  ``TUMOUR_MICRONS`` (100–300 µm) across, in the inner part of the tissue, with
  irregular outlines, where the nuclei are larger, crowd together and are darker; a
  "normal" slide has none.

Everything is built lazily with libvips operations and streamed into the file tile row
by tile row (the full-resolution image is never in memory; the noise fields at an
sixteenth of the resolution are): an Aperio-SVS-like pyramidal TIFF with JPEG tiles and an
``Aperio Image Library …|AppMag = 20|MPP = 0.5`` description (``slides.aperio_description``),
which OpenSlide reads as an Aperio slide, with its microns per pixel.

A slide is a function of ``(seed, split, index)`` alone (``slide_plan``), whatever the
processes and whichever slides were drawn before; the test slides are their own
stream (``split`` test), so a set with more training slides keeps its test slides.

On disk (``generate_synthetic_slides(dst)``)::

    DST/slides/train/00017.svs   training slide 17 (split train or val in labels.csv)
    DST/slides/test/00003.svs    test slide 3
    DST/labels.csv               path,label,split: the src of `varsac data slides`, which
                                 keeps its splits
    DST/tumours.csv              path,left,top,width,height (level-0 pixels),width_um: each
                                 tumour region's box
    DST/synthetic_slides.json    the settings the pixels depend on
"""

import logging
import math
import os
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pyvips

from varsac.data.generation import Generated, draw_on_processes
from varsac.data.labelled_files import ListedFile, stratified_split
from varsac.data.photo_index import class_table
from varsac.errors import ConfigError, check_at_least
from varsac.files import atomic_path, resume_folder, write_csv_atomically
from varsac.slides import aperio_description

log = logging.getLogger(__name__)

CLASSES = ("normal", "tumour")
SIDES = (4000, 12_000)  # pixels of each side, uniform
MPPS = (0.25, 0.5)  # microns per pixel, one of them
MAGNIFICATIONS = {0.25: 40, 0.5: 20}  # what a scanner calls them
TISSUE_SHARE = (0.3, 0.55)  # of the slide, uniform
TUMOUR_REGIONS = (1, 4)  # per tumour slide, uniform, both included
TUMOUR_MICRONS = (100.0, 300.0)  # a region's diameter, uniform
LOW = 16  # the noise fields' pixels are LOW × LOW slide pixels
GLASS = (245, 243, 247)
EOSIN = ((238, 178, 210), (214, 122, 176))  # the light and the dark shade of the tissue
NUCLEUS = (118, 70, 160)
TUMOUR_NUCLEUS = (78, 36, 124)
NUCLEUS_SPACING_UM = 14.0  # Worley cells
NUCLEUS_RADIUS_UM = (2.5, 5.0)  # in normal tissue, in a tumour
RADIUS_STEPS = 8  # a nucleus's radius is kept in uchar in 1/8 px (24 px at most: 192)
FIBRE = 0.85  # the fibres' shade of the tissue's
QUALITY = 85  # JPEG, as scanners write
TILE = 256
MIN_SIDE = TILE  # sides of less than a few tumours (1 200 px at most) are for tests only
SETTINGS_NAME = "synthetic_slides.json"
LABELS_NAME = "labels.csv"
TUMOURS_NAME = "tumours.csv"
FORMAT_VERSION = 1  # bump when the same settings give other pixels or labels
PROTOCOL_SPLITS = ("train", "test")  # validation slides are training slides

_SPLIT_NUMBERS = {"train": 0, "test": 1}


@dataclass(frozen=True)
class SlidePlan:
    """What one slide shows, before any pixel is drawn."""

    width: int
    height: int
    mpp: float
    label: str  # one of CLASSES
    tissue_share: float
    noise_seeds: tuple[int, int, int, int]  # the Perlin and Worley fields'
    tumours: tuple[tuple[int, int, int], ...]  # (centre x, centre y, diameter), level-0 pixels


def slide_generator(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator slide ``index`` of ``split`` (train or test) is drawn from."""
    if split not in _SPLIT_NUMBERS:
        raise ValueError(f"split must be one of {PROTOCOL_SPLITS}, got {split!r}")
    return np.random.default_rng([seed, _SPLIT_NUMBERS[split], index])


def slide_path(split: str, index: int) -> str:
    """Slide ``index`` of ``split``, relative to the set's folder."""
    return f"slides/{split}/{index:05d}.svs"


def low_field(width: int, height: int, cell: int, seed: int) -> np.ndarray:
    """float32 (height, width) Perlin noise of ``cell`` pixels, about −0.6..0.6."""
    field = pyvips.Image.perlin(width, height, cell_size=max(cell, 2), seed=seed)
    return field.numpy().astype(np.float32)


def tissue_field(plan_size: tuple[int, int], mpp: float, seeds: tuple[int, int]) -> np.ndarray:
    """float32 (h, w) at 1/LOW of the slide: large where tissue is, lowered towards the
    border so that tissue keeps off the slide's edge."""
    width, height = plan_size
    low_w, low_h = math.ceil(width / LOW) + 1, math.ceil(height / LOW) + 1
    millimetre = 1000 / (mpp * LOW)  # low pixels
    field = low_field(low_w, low_h, round(1.2 * millimetre), seeds[0])
    field += 0.5 * low_field(low_w, low_h, round(0.3 * millimetre), seeds[1])
    ys = np.linspace(-1, 1, low_h, dtype=np.float32)[:, None]
    xs = np.linspace(-1, 1, low_w, dtype=np.float32)[None]
    return field - 0.6 * np.maximum(np.abs(xs), np.abs(ys)) ** 4


def slide_plan(seed: int, split: str, index: int, sides: tuple[int, int] = SIDES) -> SlidePlan:
    """Slide ``index`` of ``split``: its size (each side uniform in ``sides``), resolution,
    class and tumours (see the module)."""
    rng = slide_generator(seed, split, index)
    label = CLASSES[int(rng.integers(len(CLASSES)))]  # the first draw: labels come cheap
    width, height = (int(side) for side in rng.integers(*sides, endpoint=True, size=2))
    mpp = float(rng.choice(MPPS))
    share = float(rng.uniform(*TISSUE_SHARE))
    seeds = tuple(int(s) for s in rng.integers(2**31, size=4))
    tumours: list[tuple[int, int, int]] = []
    if label == "tumour":
        field = tissue_field((width, height), mpp, seeds[:2])
        inner = np.flatnonzero(field >= np.quantile(field, 1 - share / 2))  # tissue's inner half
        for _ in range(int(rng.integers(TUMOUR_REGIONS[0], TUMOUR_REGIONS[1], endpoint=True))):
            y, x = np.unravel_index(rng.choice(inner), field.shape)
            diameter = round(rng.uniform(*TUMOUR_MICRONS) / mpp)
            centre = (min(int(x) * LOW, width - 1), min(int(y) * LOW, height - 1))
            tumours.append((*centre, diameter))
    return SlidePlan(width, height, mpp, label, share, seeds, tuple(tumours))


def tumour_field(plan: SlidePlan, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """float32 ``shape`` at 1/LOW of the slide: 1 inside the tumours' irregular outlines
    (a radius wobbling with the angle by three harmonics), 0 elsewhere."""
    field = np.zeros(shape, np.float32)
    for x, y, diameter in plan.tumours:
        radius = diameter / 2 / LOW
        reach = math.ceil(radius * 1.5) + 1
        cx, cy = x / LOW, y / LOW
        top, left = max(int(cy) - reach, 0), max(int(cx) - reach, 0)
        ys, xs = np.mgrid[top : int(cy) + reach, left : int(cx) + reach].astype(np.float32)
        angle, distance = np.arctan2(ys - cy, xs - cx), np.hypot(ys - cy, xs - cx)
        wobble = 1 + sum(
            rng.uniform(0.05, 0.15) * np.sin(k * angle + rng.uniform(0, 2 * math.pi))
            for k in (2, 3, 5)
        )
        inside = np.clip(radius * wobble - distance + 0.5, 0, 1)
        window = field[top : top + inside.shape[0], left : left + inside.shape[1]]
        np.maximum(window, inside[: window.shape[0], : window.shape[1]], out=window)
    return field


def draw_slide(plan: SlidePlan) -> pyvips.Image:
    """The slide of ``plan`` as a lazy uchar sRGB libvips image (see the module).

    The colours that vary smoothly (glass or tissue, its shade, the nuclei's hue and size)
    are computed at 1/LOW in numpy and upsampled lazily; at full resolution only the
    fibres (Perlin noise) and the nuclei (Worley noise) are computed, each blended in with
    one ``ifthenelse``, on uchar pixels but for the nuclei's distances: streaming needs a
    few rows of tiles of these, whatever the slide's height.
    """
    width, height = plan.width, plan.height
    tissue = tissue_field((width, height), plan.mpp, plan.noise_seeds[:2])
    level = np.quantile(tissue, 1 - plan.tissue_share)
    soft = np.clip((tissue - level) * 40, 0, 1)[..., None]  # a crisp edge, a few low pixels
    rng = np.random.default_rng(plan.noise_seeds[2])
    tumour = tumour_field(plan, tissue.shape, rng)[..., None]
    stain_cell = round(150 / (plan.mpp * LOW))  # the shade varies over about 150 µm
    shade = low_field(*tissue.shape[::-1], stain_cell, plan.noise_seeds[3])[..., None] + 0.5
    light, dark = (np.array(colour, np.float32) for colour in EOSIN)
    eosin = light + np.clip(shade, 0, 1) * (dark - light)
    glass = np.array(GLASS, np.float32)
    normal, cancer = (np.array(colour, np.float32) for colour in (NUCLEUS, TUMOUR_NUCLEUS))
    hue = normal + tumour * (cancer - normal)
    small, large = (r / plan.mpp for r in NUCLEUS_RADIUS_UM)
    radius = soft * (small + tumour * (large - small)) * RADIUS_STEPS
    fields = np.concatenate(
        [glass + soft * (eosin - glass), glass + soft * (FIBRE * eosin - glass), hue, radius],
        axis=-1,
    )
    low = pyvips.Image.new_from_array(np.clip(fields.round(), 0, 255).astype(np.uint8))
    up = low.resize(LOW, kernel="linear").crop(0, 0, width, height)  # lazy, 10 bands
    tissue_colour, fibre_colour, nucleus_colour = up[0:3], up[3:6], up[6:9]
    fibres = pyvips.Image.perlin(
        width, height, cell_size=round(20 / plan.mpp), uchar=True, seed=plan.noise_seeds[3]
    )  # fibres of about 20 µm
    spacing = round(NUCLEUS_SPACING_UM / plan.mpp)
    distance = pyvips.Image.worley(width, height, cell_size=spacing, seed=plan.noise_seeds[2])
    # 255 inside a nucleus, 0 outside, over an edge of 1.5 px
    nuclei = (up[9] * (1 / RADIUS_STEPS) - distance) * (255 / 1.5)
    stroma = fibres.ifthenelse(fibre_colour, tissue_colour, blend=True)
    slide = nuclei.cast("uchar").ifthenelse(nucleus_colour, stroma, blend=True)
    return slide.copy(interpretation="srgb")


def write_aperio(image: pyvips.Image, path: Path, mpp: float) -> None:
    """Stream the uchar sRGB ``image`` (lazy, of any size) into an Aperio-like pyramidal TIFF
    at ``path`` of ``mpp`` microns per pixel, with JPEG tiles, atomically."""
    image = image.copy()
    description = aperio_description(
        image.width, image.height, MAGNIFICATIONS[mpp], mpp, tile=TILE, compression="JPEG"
    )
    image.set_type(pyvips.GValue.gstr_type, "image-description", description)
    with atomic_path(path) as partial_path:
        image.tiffsave(
            str(partial_path), tile=True, pyramid=True, tile_width=TILE, tile_height=TILE,
            compression="jpeg", Q=QUALITY, bigtiff=image.width * image.height * 3 > 2**31,
        )  # fmt: skip


def write_slide(plan: SlidePlan, path: Path) -> None:
    """Stream the slide of ``plan`` into an Aperio-like pyramidal TIFF at ``path``."""
    write_aperio(draw_slide(plan), path, plan.mpp)


def _write_slides(
    dst: Path, seed: int, sides: tuple[int, int], todo: list[tuple[str, int]]
) -> list[tuple[str, int]]:
    """Draw and write the (split, index) slides of ``todo`` (in a worker process)."""
    for split, index in todo:
        write_slide(slide_plan(seed, split, index, sides), dst / slide_path(split, index))
    return todo


def generate_synthetic_slides(
    dst: str | os.PathLike[str],
    *,
    n: int = 96,
    test_n: int = 32,
    val: float = 0.2,
    seed: int = 0,
    sides: tuple[int, int] = SIDES,
    workers: int | None = None,
) -> Generated[ListedFile]:
    """Draw ``n`` training and ``test_n`` test slides into ``dst``; write ``dst/labels.csv``
    with every slide's split (``val`` of each class's training slides drawn from ``seed``
    for validation, ``labelled_files.stratified_split``) and ``dst/tumours.csv``.

    Slides whose file exists already are kept, so an interrupted run resumes, and a later
    run with more slides adds them. ``sides``: the least and the most pixels of a side.
    ``seed`` and ``sides`` are recorded in ``dst/synthetic_slides.json``; others into the
    same ``dst`` are refused. Slides are drawn on ``workers``
    processes (None: one per core).
    """
    check_at_least(n=(n, 1), test_n=(test_n, 1), smallest_side=(sides[0], MIN_SIDE))
    if sides[0] > sides[1]:
        raise ConfigError(f"sides={list(sides)}: the least side must come first")
    if workers is not None:
        check_at_least(workers=(workers, 1))
    dst = Path(dst).expanduser()
    sides = (int(sides[0]), int(sides[1]))
    settings = {"format_version": FORMAT_VERSION, "seed": seed, "sides": list(sides)}
    resume_folder(dst, SETTINGS_NAME, settings, "synthetic slides")
    sizes = {"train": n, "test": test_n}
    every = [(split, index) for split in PROTOCOL_SPLITS for index in range(sizes[split])]
    todo = [job for job in every if not (dst / slide_path(*job)).is_file()]
    log.info(
        "synthetic slides in %s: %d of %d to draw, %d drawn before",
        dst, len(todo), len(every), len(every) - len(todo),
    )  # fmt: skip
    start = time.perf_counter()
    draw = partial(_write_slides, dst, seed, sides)
    draw_on_processes(draw, todo, workers, unit="slide", desc="synthetic slides")
    plans = {job: slide_plan(seed, *job, sides) for job in every}
    training = [plan.label for (split, _), plan in plans.items() if split == "train"]
    splits = iter(stratified_split(training, val=val, test=0, seed=seed))
    rows = [
        ListedFile(
            Path(slide_path(*job)), plan.label, next(splits) if job[0] == "train" else "test"
        )
        for job, plan in plans.items()
    ]
    write_csv_atomically(
        dst / LABELS_NAME,
        ("path", "label", "split"),
        ((row.source.as_posix(), row.label, row.split) for row in rows),
    )
    write_csv_atomically(
        dst / TUMOURS_NAME,
        ("path", "left", "top", "width", "height", "width_um"),
        (
            (slide_path(*job), x - d // 2, y - d // 2, d, d, round(d * plan.mpp, 1))
            for job, plan in plans.items()
            for x, y, d in plan.tumours
        ),
    )
    return Generated(
        rows=rows,
        generated=len(todo),
        already_done=len(every) - len(todo),
        seconds=time.perf_counter() - start,
    )


def summary(generated: Generated[ListedFile], dst: str | os.PathLike[str]) -> str:
    """Slides per class and split, what was drawn, how fast and where, as a few lines."""
    dst = Path(dst).expanduser()
    lines = class_table(generated.rows)
    lines.append(f"{generated.drawn('slide')}; labels: {dst / LABELS_NAME}")
    lines.append(f"then: varsac data slides src={dst / LABELS_NAME} dst={dst}")
    return "\n".join(lines)
