"""Photo-set throughput: converting 4000×3000 JPEGs, and feeding the saccade model from them.

1. Conversion: ``--photos`` synthetic 4000×3000 JPEGs (smooth Perlin scenes with
   sensor-like noise, about 4.3 MB each at quality 92, like a 12-megapixel
   camera's) in six class folders are converted to 2528² pyramid TIFFs by
   ``varsac data mit5k``'s code, in a fresh process per run, with one worker
   and with one per core: photos per second and peak resident memory.
2. Loading against training, on the converted set with ``experiment=mit5k``:
   reading the proxies (``setup``), samples per second that the train loader
   delivers, samples per second that the localized spatial transformer reads
   glimpses at inside the step, and samples per second that a whole training
   step (forward with the reads, backward, optimiser) consumes.

    python benchmarks/mit5k.py --json docs/mit5k.json [--photos 96] [--workdir DIR]

The JPEGs are kept in ``--workdir`` between runs; the conversions are redone.
The TIFFs are read from the page cache once the first epoch has touched them.
"""

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pyvips

from fresh_process import benchmark_parser, in_fresh_process, peak_rss_mib, serve

CLASSES = ("abstract", "animals", "man-made", "nature", "None", "people")
WIDTH, HEIGHT = 4000, 3000


def write_photos(folder: Path, count: int) -> list[Path]:
    """``count`` 4000×3000 JPEGs, round-robin over the class folders (kept if present)."""
    paths = []
    for index in range(count):
        path = folder / CLASSES[index % len(CLASSES)] / f"photo{index:04d}.jpg"
        paths.append(path)
        if path.is_file():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        coarse, middle, fine = (
            pyvips.Image.perlin(WIDTH, HEIGHT, cell_size=cell, seed=index * 3 + k)
            for k, cell in enumerate((400, 150, 60))
        )
        light = coarse * 250 + middle * 120 + fine * 60
        scene = (light + 128).bandjoin(
            [light * 0.8 + 110 + middle * 30, light * 0.6 + 90 - fine * 30]
        )
        noise = pyvips.Image.gaussnoise(WIDTH, HEIGHT, mean=0, sigma=6, seed=index)
        photo = (scene + noise).cast("uchar").copy(interpretation="srgb")
        photo.jpegsave(str(path.with_suffix(".partial.jpg")), Q=92)
        path.with_suffix(".partial.jpg").rename(path)
    return paths


def convert(src: Path, dst: Path, workers: int) -> dict:
    """One conversion of ``src`` into an empty ``dst`` (run in a fresh process)."""
    from varsac.data.photo_conversion import convert_photos

    conversion = convert_photos(src, dst, workers=workers)
    sizes = [(dst / row.path).stat().st_size for row in conversion.rows]
    return {
        "workers": workers,
        "photos": conversion.converted,
        "failed": len(conversion.failures),
        "seconds": conversion.seconds,
        "photos_per_s": conversion.converted / conversion.seconds,
        "tiff_mib_mean": float(np.mean(sizes)) / 2**20,
        "peak_rss_mib": peak_rss_mib(),
    }


def loading_and_training(root: Path, batch_size: int, epochs: int) -> dict:
    """Loader, glimpse reading and training-step throughput on the converted set."""
    import torch
    from hydra import compose, initialize_config_module

    from varsac.train import instantiate_data_and_model

    torch.manual_seed(0)
    overrides = ["experiment=mit5k", f"data.root={root}", f"data.batch_size={batch_size}"]
    with initialize_config_module("varsac.conf", version_base="1.3"):
        cfg = compose("fit", overrides=overrides)
    datamodule, model = instantiate_data_and_model(cfg)
    started = time.perf_counter()
    datamodule.setup("fit")
    setup_s = time.perf_counter() - started
    train_size = len(datamodule.datasets["train"])

    loader = datamodule.train_dataloader()
    started = time.perf_counter()
    delivered = sum(len(batch["image"]) for _ in range(epochs) for batch in loader)
    loader_s = time.perf_counter() - started

    read_s = [0.0]

    def before(*_: object) -> None:
        read_s.append(time.perf_counter())

    def after(*_: object) -> None:
        read_s[0] += time.perf_counter() - read_s.pop()

    model.cropper.register_forward_pre_hook(before)
    model.cropper.register_forward_hook(after)
    optimizer = model.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    model.train()

    def train_step(batch: dict) -> None:
        optimizer.zero_grad()
        loss, _, _ = model.objective(batch, sample=True)
        loss.backward()
        optimizer.step()

    batches = [batch for _ in range(epochs) for batch in loader]
    train_step(batches[0])  # warm-up: opens the pages, allocates
    read_s[0] = 0.0
    started = time.perf_counter()
    for batch in batches:
        train_step(batch)
    step_s = time.perf_counter() - started
    consumed = sum(len(batch["image"]) for batch in batches)
    return {
        "batch_size": batch_size,
        "train_photos": train_size,
        "proxies_per_s": (train_size + len(datamodule.datasets["val"])) / setup_s,
        "setup_s": setup_s,
        "loader_samples_per_s": delivered / loader_s,
        "glimpse_read_samples_per_s": consumed / read_s[0],
        "step_samples_per_s": consumed / step_s,
        "read_share_of_step": read_s[0] / step_s,
        "glimpses_per_sample": cfg.model.vrnn.steps,
        "window": cfg.model.cropper.window,
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--photos", type=int, default=96)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/varsac-bench-mit5k"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    if args.worker:
        return serve(args.worker, {
            "convert": lambda src, dst, n: convert(Path(src), Path(dst), int(n)),
            "train": lambda root, batch, epochs: loading_and_training(
                Path(root), int(batch), int(epochs)
            ),
        })  # fmt: skip

    src = args.workdir / "photos"
    started = time.perf_counter()
    photos = write_photos(src, args.photos)
    megabytes = sum(p.stat().st_size for p in photos) / 1e6
    print(
        f"{len(photos)} JPEGs of {WIDTH}×{HEIGHT} in {src} ({megabytes / len(photos):.1f} MB "
        f"each; {time.perf_counter() - started:.0f} s to make or find)",
        flush=True,
    )
    conversions = []
    for workers in sorted({1, os.cpu_count() or 1}):
        dst = args.workdir / f"converted_{workers}"
        shutil.rmtree(dst, ignore_errors=True)
        conversions.append(in_fresh_process(__file__, "convert", str(src), str(dst), str(workers)))
        done = conversions[-1]
        print(
            f"converted with {workers} worker(s): {done['photos_per_s']:.2f} photos/s, "
            f"{done['tiff_mib_mean']:.2f} MiB per TIFF, peak RSS {done['peak_rss_mib']:.0f} MiB",
            flush=True,
        )
    root = args.workdir / f"converted_{conversions[-1]['workers']}"
    loading = in_fresh_process(__file__, "train", str(root), str(args.batch_size), str(args.epochs))

    print(f"\n{'conversion of 4000×3000 JPEGs to 2528²':<44}{'photos/s':>10}{'peak RSS MiB':>14}")
    for done in conversions:
        print(f"  {done['workers']} worker(s){'':<32}{done['photos_per_s']:>10.2f}"
              f"{done['peak_rss_mib']:>14.0f}")  # fmt: skip
    speedup = conversions[-1]["photos_per_s"] / conversions[0]["photos_per_s"]
    print(f"  all cores against one: {speedup:.2f}×")
    step = loading["step_samples_per_s"]
    glimpses = f"{loading['glimpses_per_sample']} glimpses of {loading['window']}²"
    print(f"\nfeeding the saccade model (batch {loading['batch_size']}, {glimpses} per photo)")
    print(f"  {'proxies read at setup':<40}{loading['proxies_per_s']:>10.0f} photos/s")
    for name, key in (
        ("train loader delivers", "loader_samples_per_s"),
        ("glimpses read (inside the step)", "glimpse_read_samples_per_s"),
        ("training step consumes (reads included)", "step_samples_per_s"),
    ):
        print(f"  {name:<40}{loading[key]:>10.1f} samples/s  ({loading[key] / step:.1f}× the step)")
    print(f"  glimpse reading takes {100 * loading['read_share_of_step']:.0f} % of a training step")
    if args.json:
        args.json.write_text(json.dumps({"conversion": conversions, "loading": loading}, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
