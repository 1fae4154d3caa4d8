"""Whole-slide images: glimpse reads against OpenSlide's own, and inference against a pyramid.

Writes a ``--size``² synthetic slide (100 000² by default: a 4 096² tissue patch of
``varsac.data.synthetic_slides``, tiled over the slide lazily and streamed into an
Aperio-like SVS by libvips, never in memory; 0.5 µm per pixel) and a ``--pyramid-size``²
pyramid TIFF of the same tissue (2528², the photos' size). Then, each in a fresh process:

- glimpse reads: ``--reads`` crops of 150–1 200 µm (``experiment=slides``'s glimpse
  sizes) at random places, read through ``Slide`` and the localized spatial transformer
  (the region at the level the LST picks, flattened, sampled to 64²), against
  OpenSlide's own ``read_region`` of the same box at the same level (RGBA, nothing else),
  median milliseconds per glimpse;
- inference: the saccade model of ``experiment=slides`` (untrained: time and memory do
  not depend on the weights), ``--batch-size`` copies of the image a batch, its proxies
  and six glimpses, on the slide and on the pyramid: images per second and peak resident
  memory (the issue's target: the slide within 10 % of the pyramid).

    python benchmarks/slides.py --json docs/slides.json
    python benchmarks/slides.py --size 3000 --pyramid-size 512 --reads 8 --repeats 1  # a check
"""

import json
import os
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np

from fresh_process import benchmark_parser, in_fresh_process, peak_rss_mib, serve

PATCH = 4096  # the side of the tissue patch that tiles the large slide
MPP = 0.5
GLIMPSE_MICRONS = (150.0, 1200.0)


def tissue_patch(side: int):  # -> pyvips.Image, in memory: side² of synthetic tissue
    from varsac.data.synthetic_slides import SlidePlan, draw_slide

    plan = SlidePlan(side, side, MPP, "tumour", 0.6, (1, 2, 3, 4), ((side // 2, side // 2, 400),))
    return draw_slide(plan).copy_memory()


def write_images(size: int, pyramid_size: int, folder: Path) -> dict:
    """The large slide and the pyramid TIFF (see the module's docstring), in a fresh process."""
    from varsac.data.synthetic_slides import write_aperio
    from varsac.pyramid import write_pyramid

    started = time.perf_counter()
    patch = tissue_patch(min(size, PATCH))
    copies = -(-size // patch.width)
    write_aperio(patch.replicate(copies, copies).crop(0, 0, size, size), folder / "slide.svs", MPP)
    slide_s = time.perf_counter() - started
    started = time.perf_counter()
    small = tissue_patch(pyramid_size)
    write_pyramid(small, folder / "pyramid.tif", compression="jpeg")
    return {
        "slide_side": size,
        "slide_write_s": slide_s,
        "slide_mib": (folder / "slide.svs").stat().st_size / 2**20,
        "pyramid_side": pyramid_size,
        "pyramid_write_s": time.perf_counter() - started,
        "peak_rss_mib": peak_rss_mib(),
    }


def read_times(path: Path, reads: int) -> dict:
    """Median ms per glimpse: the LST on the ``Slide``, and OpenSlide's ``read_region`` of
    each glimpse's region at the level the LST picks."""
    import openslide
    import torch

    from varsac.data.glimpse_sizes import glimpse_scale_bounds
    from varsac.models.localized_spatial_transformer import (
        LocalizedSpatialTransformer,
        bounding_region,
        choose_level,
    )
    from varsac.models.spatial_transformer import crops_from_latents, sampling_grid
    from varsac.slides import Slide, model_view

    slide = Slide(path)
    image = model_view(slide)
    low, high = glimpse_scale_bounds(image, microns=GLIMPSE_MICRONS)
    generator = torch.Generator().manual_seed(0)
    crops = crops_from_latents(torch.randn(1, reads + 1, 3, generator=generator), low, high)
    lst = LocalizedSpatialTransformer(window=64, workers=1)
    handle = openslide.OpenSlide(path)
    times: dict[str, list[float]] = {"lst": [], "openslide": []}
    for index in range(reads + 1):  # the first of each opens the file and warms up
        crop = crops[:, index : index + 1]
        started = time.perf_counter()
        lst([image], crop)
        lst_s = time.perf_counter() - started
        level = choose_level(image.levels, crop[0, 0, 0].item(), 64)
        region = bounding_region(sampling_grid(crop, 64)[0, 0], level, *image.levels[level])
        width = min(region.right, slide.levels[level][0] - 1) - region.left + 1
        height = min(region.bottom, slide.levels[level][1] - 1) - region.top + 1
        downsample = handle.level_downsamples[level]
        location = (round(region.left * downsample), round(region.top * downsample))
        started = time.perf_counter()
        handle.read_region(location, level, (max(width, 1), max(height, 1)))
        if index:
            times["lst"].append(1000 * lst_s)
            times["openslide"].append(1000 * (time.perf_counter() - started))
    return {
        "glimpses": reads,
        "scale_bounds": [low, high],
        "lst_ms": float(np.median(times["lst"])),
        "openslide_read_region_ms": float(np.median(times["openslide"])),
    }


def infer(path: Path, batch: int, repeats: int) -> dict:
    """The saccade model of experiment=slides on ``batch`` copies of the image, in a fresh
    process: images per second (the median of ``repeats`` batches) and peak RSS."""
    import torch
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate

    from varsac.data.glimpse_sizes import glimpse_scale_bounds
    from varsac.image_source import read_proxies
    from varsac.slides import microns_per_pixel, model_view, open_image_source

    torch.manual_seed(0)
    with initialize_config_module("varsac.conf", version_base="1.3"):
        cfg = compose("fit", overrides=["experiment=slides", "task.num_classes=2"])
    model = instantiate(cfg.model).eval()
    baseline = peak_rss_mib()
    times = []
    for _ in range(repeats + 1):  # the first call opens the files and warms up
        images = [model_view(open_image_source(path)) for _ in range(batch)]
        started = time.perf_counter()
        with torch.no_grad():
            proxy = read_proxies(images, cfg.data.proxy_size)
            bounds = None  # a pyramid says no resolution: the model's own scales
            if microns_per_pixel(images[0]) is not None:
                pairs = [glimpse_scale_bounds(image, microns=GLIMPSE_MICRONS) for image in images]
                bounds = torch.tensor(pairs)
            model.saccade(images, proxy, sample=False, scale_bounds=bounds)
        times.append(time.perf_counter() - started)
    return {
        "batch": batch,
        "images_per_s": batch / float(np.median(times[1:])),
        "peak_rss_mib": peak_rss_mib(),
        "rss_before_inference_mib": baseline,
    }


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--size", type=int, default=100_000, help="side of the slide")
    parser.add_argument("--pyramid-size", type=int, default=2528)
    parser.add_argument("--reads", type=int, default=200, help="glimpses timed")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.worker:
        return serve(args.worker, {
            "write": lambda folder: write_images(args.size, args.pyramid_size, Path(folder)),
            "reads": lambda folder: read_times(Path(folder), args.reads),
            "infer": lambda path: infer(Path(path), args.batch_size, args.repeats),
        })  # fmt: skip

    same = [f"--size={args.size}", f"--pyramid-size={args.pyramid_size}"]
    same += [f"--reads={args.reads}", f"--batch-size={args.batch_size}"]
    same += [f"--repeats={args.repeats}"]
    with TemporaryDirectory() as name:
        folder = Path(name)
        written = in_fresh_process(__file__, "write", str(folder), *same)
        print(
            f"wrote a {args.size}² slide in {written['slide_write_s']:.1f} s "
            f"({written['slide_mib']:.0f} MiB), peak RSS {written['peak_rss_mib']:.0f} MiB",
            flush=True,
        )
        reads = in_fresh_process(__file__, "reads", str(folder / "slide.svs"), *same)
        inference = {
            kind: in_fresh_process(__file__, "infer", str(folder / file), *same)
            for kind, file in (("slide", "slide.svs"), ("pyramid", "pyramid.tif"))
        }
    ratio = inference["slide"]["peak_rss_mib"] / inference["pyramid"]["peak_rss_mib"]
    print(
        f"\none glimpse of {GLIMPSE_MICRONS[0]:.0f}–{GLIMPSE_MICRONS[1]:.0f} µm on the "
        f"{args.size}² slide, median of {args.reads}, {os.cpu_count()} CPUs:\n"
        f"  Slide + LST (read, flatten, sample 64²) {reads['lst_ms']:8.2f} ms\n"
        f"  OpenSlide read_region of the same box   {reads['openslide_read_region_ms']:8.2f} ms"
    )
    print(f"\n{'inference, batch ' + str(args.batch_size):<28}{'images/s':>10}{'peak RSS MiB':>14}")
    for kind, row in inference.items():
        side = args.size if kind == "slide" else args.pyramid_size
        label = f"{kind} {side}²"
        print(f"  {label:<26}{row['images_per_s']:>10.2f}{row['peak_rss_mib']:>14.0f}")
    print(f"peak RSS on the slide: {ratio:.3f}× that on the pyramid (target: within 1.1×)")
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k not in ("json", "worker")}
        document = {
            "settings": settings,
            "cpus": os.cpu_count(),
            "writes": written,
            "reads": reads,
            "inference": inference,
            "memory_ratio": ratio,
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
