"""Memory and time of saccade inference through the localized spatial transformer.

Writes pyramid TIFFs of a two-digit cluttered MNIST canvas upsampled to
2528², 10 000² and 40 000² (streamed by libvips: the 40 000² image, 4.8 GB as
raw RGB and 1.6 GB as grey, is never held in memory), then, each in a fresh
process, runs the saccade model of ``experiment=cluttered_mnist_2528`` on it at
batch 1 and 16 and reports inference time per image and peak resident memory.
Also times one glimpse read against decoding the whole 2528² level 0.

    python benchmarks/lst.py --json lst.json [--sizes 2528 10000 40000] [--repeats 5]
"""

import json
import os
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import pyvips

from fresh_process import benchmark_parser, in_fresh_process, peak_rss_mib, serve

BATCHES = (1, 16)


def write_image(size: int, path: Path) -> dict:
    """A canvas upsampled to size² and streamed into a pyramid TIFF, in a fresh process."""
    from varsac.data.cluttered_mnist import generate_cluttered
    from varsac.data.mnist import load_mnist
    from varsac.pyramid import write_pyramid

    digits = load_mnist(os.environ.get("VARSAC_DATA_DIR", "~/.cache/varsac")).test
    canvas = generate_cluttered(*digits, 1, seed=0).canvases[0]
    started = time.perf_counter()
    lazy = pyvips.Image.new_from_array(canvas).resize(size / canvas.shape[0], kernel="linear")
    write_pyramid(lazy.crop(0, 0, size, size).cast("uchar"), path)
    return {
        "size": size,
        "write_s": time.perf_counter() - started,
        "file_mib": path.stat().st_size / 2**20,
        "peak_rss_mib": peak_rss_mib(),
    }


def infer(path: Path, batch: int, repeats: int) -> dict:
    """Saccade inference on ``batch`` copies of the image, in a fresh process."""
    import torch
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate

    from varsac.image_source import read_proxies
    from varsac.pyramid import PyramidTIFF

    torch.manual_seed(0)
    with initialize_config_module("varsac.conf", version_base="1.3"):
        cfg = compose("fit", overrides=["experiment=cluttered_mnist_2528"])
    model = instantiate(cfg.model).eval()
    baseline = peak_rss_mib()
    times = []
    for _ in range(repeats + 1):  # the first call opens the files and warms up
        images = [PyramidTIFF(path) for _ in range(batch)]
        started = time.perf_counter()
        with torch.no_grad():
            proxy = read_proxies(images, cfg.data.proxy_size)
            model.saccade(images, proxy, sample=False)
        times.append(time.perf_counter() - started)
    return {
        "batch": batch,
        "ms_per_image": 1000 * float(np.median(times[1:])) / batch,
        "peak_rss_mib": peak_rss_mib(),
        "rss_before_inference_mib": baseline,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def read_times(path: Path, repeats: int) -> dict:
    """Glimpse region reads (at the level the LST picks, and at level 0) against decoding
    all of level 0. Every read is of a new random crop, so no cache serves it."""
    import torch

    from varsac.models.localized_spatial_transformer import bounding_region, choose_level
    from varsac.models.spatial_transformer import crops_from_latents, sampling_grid
    from varsac.pyramid import PyramidTIFF

    pyramid = PyramidTIFF(path)
    generator = torch.Generator().manual_seed(0)
    crops = crops_from_latents(torch.randn(1, repeats * 40, 3, generator=generator), 0.2, 0.5)
    grids = sampling_grid(crops, 32)[0]
    timings: dict[str, list[float]] = {"chosen": [], "level0": []}
    for index, (crop, grid) in enumerate(zip(crops[0], grids, strict=True)):
        chosen = choose_level(pyramid.levels, crop[0].item(), 32)
        for name, level in (("chosen", chosen), ("level0", 0)):
            region = bounding_region(grid, level, *pyramid.levels[level])
            shape = (region.right - region.left + 1, region.bottom - region.top + 1)
            started = time.perf_counter()
            pyramid.read_region(level, region.left, region.top, *shape)
            if index:  # the first read of each level opens its page
                timings[name].append(time.perf_counter() - started)
    decode = []
    for _ in range(repeats):
        started = time.perf_counter()
        pyvips.Image.new_from_file(str(path), page=0, access="sequential").numpy()
        decode.append(time.perf_counter() - started)
    return {
        "glimpse_read_ms": 1000 * float(np.median(timings["chosen"])),
        "glimpse_read_level0_ms": 1000 * float(np.median(timings["level0"])),
        "level0_decode_ms": 1000 * float(np.median(decode)),
    }


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2528, 10_000, 40_000])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.worker:
        return serve(args.worker, {
            "write": lambda size, path: write_image(int(size), Path(path)),
            "infer": lambda path, batch: infer(Path(path), int(batch), args.repeats),
            "reads": lambda path: read_times(Path(path), args.repeats),
        })  # fmt: skip

    rows, written = [], []
    with TemporaryDirectory() as folder:
        for size in args.sizes:
            path = Path(folder) / f"canvas_{size}.tif"
            written.append(in_fresh_process(__file__, "write", str(size), str(path)))
            done = written[-1]
            print(
                f"wrote {size}²: {done['write_s']:.1f} s, {done['file_mib']:.1f} MiB, "
                f"peak RSS {done['peak_rss_mib']:.0f} MiB",
                flush=True,
            )
            for batch in BATCHES:
                rows.append(
                    {"size": size, **in_fresh_process(__file__, "infer", str(path), str(batch))}
                )
                print(
                    f"  batch {batch:2d}: {rows[-1]['ms_per_image']:.1f} ms per image, "
                    f"peak RSS {rows[-1]['peak_rss_mib']:.0f} MiB",
                    flush=True,
                )
            if size == args.sizes[0]:
                reads = in_fresh_process(__file__, "reads", str(path))
    print(f"\n{'image':>8} {'batch':>6} {'ms / image':>11} {'peak RSS MiB':>13}")
    for row in rows:
        print(
            f"{row['size']:>7}² {row['batch']:>6} {row['ms_per_image']:>11.1f} "
            f"{row['peak_rss_mib']:>13.0f}"
        )
    for batch in BATCHES:
        same = [r for r in rows if r["batch"] == batch]
        print(
            f"batch {batch}: peak RSS at {same[-1]['size']}² is "
            f"{same[-1]['peak_rss_mib'] / same[0]['peak_rss_mib']:.3f}× that at {same[0]['size']}²"
        )
    decode = reads["level0_decode_ms"]
    print(
        f"\n{args.sizes[0]}²: whole level-0 decode {decode:.1f} ms; one glimpse read "
        f"{reads['glimpse_read_ms']:.3f} ms at the level the LST picks "
        f"({decode / reads['glimpse_read_ms']:.0f}× faster), "
        f"{reads['glimpse_read_level0_ms']:.3f} ms at level 0 "
        f"({decode / reads['glimpse_read_level0_ms']:.0f}× faster)"
    )
    if args.json:
        args.json.write_text(
            json.dumps({"writes": written, "inference": rows, "reads": reads}, indent=2)
        )
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
