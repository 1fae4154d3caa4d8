"""Prediction latency of the saccade model against the tiled ResNet-18: in a process, end to end.

The models are those of ``experiment=mit5k`` (six 64² glimpses) and
``experiment=baseline_mit5k`` (ResNet-18 over 144 tiles of 224²), untrained
(latency does not depend on the weights) and saved as ``varsac fit`` saves
checkpoints. One 4000×3000 JPEG is converted to a ``--size``² pyramid TIFF (2528²,
the geometry both were trained at), and that pyramid is copied into a folder of
``--images`` cached pyramids (the same pixels each time; a read costs what it
costs on any image). In one run, for each model:

- prediction alone: ``varsac.Predictor`` in a warm process over the folder
  (``--batch-size`` images a batch), seconds per image: the glimpse or tile
  reads and the network, no start-up and no conversion;
- the folder end to end: one ``varsac predict`` process over it, start-up
  included, in images per second;
- one image end to end from the command line, a fresh ``varsac predict``
  process each: the JPEG with an empty cache (its conversion included), the
  JPEG again (the cached pyramid), and the pyramid TIFF given directly;
- the same image through the Python API from a warm process (the model loaded,
  one call before): the cached JPEG and the pyramid.

The tiled model takes about a hundred times longer per image, so its folder holds
``--baseline-images`` of the same pyramids. Each command-line row splits its
wall time with the command's own ``predictions.json``: loading the model,
converting, predicting, and the rest (starting Python, importing, Hydra,
writing the outputs). The saccade model averages ``--samples`` posterior samples
(the command's default, 16) besides the posterior mean.

    python benchmarks/predict_latency.py --json docs/predict_latency.json
    python benchmarks/predict_latency.py --size 512 --images 4 --baseline-images 2  # a check
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

from mit5k import write_photos
from varsac import Predictor
from varsac.checkpoint import save_initial_checkpoint
from varsac.data.photos import MIT5K_CLASSES

MODELS = {"variational saccading": "mit5k", "resnet18, tiled": "baseline_mit5k"}
VARSAC = Path(sys.executable).parent / "varsac"


def timed_cli(
    checkpoint: Path, input: Path, work: Path, args: argparse.Namespace, size: str
) -> dict:
    """One ``varsac predict`` process: its wall time and its own split of the time."""
    environment = {**os.environ, "VARSAC_DATA_DIR": str(work / "cache"), "WANDB_MODE": "disabled"}
    outputs = work / "outputs"
    before = set(outputs.glob("predict/*")) if outputs.exists() else set()
    started = time.perf_counter()
    subprocess.run(
        [str(VARSAC), "predict", f"ckpt_path={checkpoint}", f"input={input}", f"size={size}",
         f"samples={args.samples}", f"batch_size={args.batch_size}", "pictures=false"],
        cwd=work, env=environment, check=True, capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - started
    (run,) = set(outputs.glob("predict/*")) - before
    document = json.loads((run / "predictions.json").read_text())
    predicting = sum(p["seconds"] for p in document["predictions"])
    loading, converting = (
        document["seconds"]["loading the model"],
        document["seconds"]["converting"],
    )
    return {
        "images": len(document["predictions"]),
        "wall_s": wall,
        "images_per_s": len(document["predictions"]) / wall,
        "loading_the_model_s": loading,
        "converting_s": converting,
        "predicting_s": predicting,
        "start_up_and_rest_s": wall - loading - converting - predicting,
    }


def timed_api(predictor: Predictor, images: list[Path], batch_size: int) -> dict:
    """``predictor(images)`` after one warm-up call on the first image: seconds per image."""
    predictor(images[:1], batch_size=batch_size)
    started = time.perf_counter()
    predictor(images, batch_size=batch_size)
    seconds = time.perf_counter() - started
    return {"images": len(images), "seconds": seconds, "seconds_per_image": seconds / len(images)}


def measure(experiment: str, photo: Path, work: Path, args: argparse.Namespace, count: int) -> dict:
    """Every row of one model (see the module's docstring)."""
    overrides = [f"experiment={experiment}", "data.root=unused", "task.num_classes=6"]
    checkpoint = save_initial_checkpoint(overrides, MIT5K_CLASSES, work / f"{experiment}.ckpt")
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)  # every model's first call converts
    rows = {"jpeg, first call": timed_cli(checkpoint, photo, work, args, str(args.size))}
    rows["jpeg, cached"] = timed_cli(checkpoint, photo, work, args, str(args.size))
    (pyramid,) = cache.rglob("*.tif")  # the size² pyramid: read as it is (size=null)
    rows["pyramid tiff"] = timed_cli(checkpoint, pyramid, work, args, "null")
    folder = work / f"folder_{experiment}"
    folder.mkdir()
    copies = [shutil.copy(pyramid, folder / f"{index:04d}.tif") for index in range(count)]
    rows["folder"] = timed_cli(checkpoint, folder, work, args, "null")
    started = time.perf_counter()
    predictor = Predictor.from_checkpoint(
        checkpoint,
        device="auto",
        samples=args.samples,
        size=args.size,
        cache_dir=cache / "predict_pyramids",  # the command's cache
    )
    loaded = time.perf_counter() - started
    rows["api, jpeg cached"] = timed_api(predictor, [photo], 1)
    as_is = Predictor(
        predictor.model, predictor.class_names, predictor.proxy_size, predictor.channels,
        device="auto", samples=args.samples, cache_dir=cache,
    )  # fmt: skip
    rows["api, pyramid tiff"] = timed_api(as_is, [pyramid], 1)
    rows["prediction alone"] = timed_api(as_is, [Path(p) for p in copies], args.batch_size)
    rows["prediction alone"]["loading_the_model_s"] = loaded
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--size", type=int, default=2528, help="side of the pyramids")
    parser.add_argument("--images", type=int, default=100, help="pyramids in the folder")
    parser.add_argument("--baseline-images", type=int, default=10, help="the tiled model's")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    measured = {}
    with TemporaryDirectory() as name:
        work = Path(name)
        (photo,) = write_photos(work / "photos", 1)
        print(f"one {photo.stat().st_size / 2**20:.1f} MB 4000×3000 JPEG at {args.size}²; timing…")
        for (model, experiment), count in zip(
            MODELS.items(), (args.images, args.baseline_images), strict=True
        ):
            measured[model] = measure(experiment, photo, work, args, count)
            print(f"  {model} done", flush=True)
    report(measured, args)


def report(measured: dict[str, dict[str, dict]], args: argparse.Namespace) -> None:
    saccade, tiled = (measured[name] for name in MODELS)
    rows = [  # (what, unit, row, its key, better when larger)
        ("prediction alone, per image", "s", "prediction alone", "seconds_per_image", False),
        ("folder end to end", "images/s", "folder", "images_per_s", True),
        ("one jpeg, CLI, first call", "s", "jpeg, first call", "wall_s", False),
        ("one jpeg, CLI, cached", "s", "jpeg, cached", "wall_s", False),
        ("one pyramid, CLI", "s", "pyramid tiff", "wall_s", False),
        ("one jpeg, API warm, cached", "s", "api, jpeg cached", "seconds", False),
        ("one pyramid, API warm", "s", "api, pyramid tiff", "seconds", False),
    ]
    print(
        f"\nvarsac predict at {args.size}², K = {args.samples} samples, batch {args.batch_size}, "
        f"{os.cpu_count()} CPUs; folders of {args.images} and {args.baseline_images} pyramids"
    )
    print(f"{'':<30}{'unit':>10}{'saccades':>12}{'tiled ResNet-18':>18}{'saccades faster':>17}")
    ratios = {}
    for what, unit, case, key, larger in rows:
        mine, theirs = saccade[case][key], tiled[case][key]
        ratios[what] = mine / theirs if larger else theirs / mine
        print(f"{what:<30}{unit:>10}{mine:>12.3f}{theirs:>18.3f}{ratios[what]:>16.1f}×")
    print("\nwhere the command-line time of the saccade model goes, s:")
    for case in ("jpeg, first call", "jpeg, cached", "pyramid tiff", "folder"):
        row = saccade[case]
        print(
            f"  {case:<18} start-up and the rest {row['start_up_and_rest_s']:.2f}, model "
            f"{row['loading_the_model_s']:.2f}, conversion {row['converting_s']:.2f}, "
            f"prediction {row['predicting_s']:.2f} ({row['images']} images)"
        )
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k != "json"}
        document = {"settings": settings, "cpus": os.cpu_count(), "measured": measured,
                    "ratios": ratios}  # fmt: skip
        args.json.write_text(json.dumps(document, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
