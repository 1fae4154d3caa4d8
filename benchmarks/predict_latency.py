"""End-to-end ``varsac predict`` latency on a 4000×3000 JPEG: saccades against the tiled ResNet-18.

The models are those of ``experiment=mit5k`` (six 64² glimpses) and
``experiment=baseline_mit5k`` (ResNet-18 over 144 tiles of 224²), untrained
(latency does not depend on the weights) and saved as ``varsac fit`` saves
checkpoints. The photo is converted to 2528² (``size=2528``), the geometry both
were trained at. Each row is a fresh ``varsac predict`` process, timed from
start to exit (Python, torch and the model load included), with the command's
own split of that time from ``predictions.json``:

- first call on the JPEG: the conversion to a pyramid TIFF included (empty cache);
- second call on the JPEG: the cached pyramid reused;
- the pyramid TIFF of that conversion given directly (``size=null``: read as it is).

One process per image is dominated by starting Python, torch and Lightning;
the "prediction" column (reading the glimpses or tiles and running the model)
is what each further image of a folder costs.

The saccade model averages ``--samples`` posterior samples (the command's
default, 16) besides the posterior mean it draws.

    python benchmarks/predict_latency.py --json docs/predict_latency.json
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mit5k import write_photos
from varsac.checkpoint import CONFIG_KEY, DATA_KEY
from varsac.data.photos import MIT5K_CLASSES

MODELS = {"variational saccading": "mit5k", "resnet18, tiled": "baseline_mit5k"}
VARSAC = Path(sys.executable).parent / "varsac"


def untrained_checkpoint(experiment: str, path: Path) -> Path:
    """The experiment's model with its initial weights, saved as ``varsac fit`` would."""
    with initialize_config_module("varsac.conf", version_base="1.3"):
        cfg = compose(
            "fit",
            overrides=[f"experiment={experiment}", "data.root=unused", "task.num_classes=6"],
        )
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    stored = {
        key: OmegaConf.to_container(cfg[key], resolve=True) for key in ("model", "task", "data")
    }
    stored.update(image_channels=cfg.image_channels, proxy_channels=cfg.proxy_channels)
    torch.save(
        {
            "state_dict": model.state_dict(),
            CONFIG_KEY: stored,
            DATA_KEY: {"class_names": list(MIT5K_CLASSES), "proxy_from_image": True},
        },
        path,
    )
    return path


def timed_predict(checkpoint: Path, image: Path, folder: Path, samples: int, size: str) -> dict:
    """One ``varsac predict`` process: its wall time and its own split of the time."""
    environment = {**os.environ, "VARSAC_DATA_DIR": str(folder / "cache"), "WANDB_MODE": "disabled"}
    outputs = folder / "outputs"
    before = set(outputs.glob("predict/*")) if outputs.exists() else set()
    started = time.perf_counter()
    subprocess.run(
        [str(VARSAC), "predict", f"ckpt_path={checkpoint}", f"input={image}", f"size={size}",
         f"samples={samples}", "pictures=false"],
        cwd=folder, env=environment, check=True, capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - started
    (run,) = set(outputs.glob("predict/*")) - before
    document = json.loads((run / "predictions.json").read_text())
    (prediction,) = document["predictions"]
    return {
        "wall_s": wall,
        "loading_the_model_s": document["seconds"]["loading the model"],
        "converting_s": document["seconds"]["converting"],
        "predicting_s": prediction["seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows: dict[str, dict[str, dict]] = {}
    with TemporaryDirectory() as name:
        folder = Path(name)
        (photo,) = write_photos(folder / "photos", 1)
        print(f"one {photo.stat().st_size / 2**20:.1f} MB 4000×3000 JPEG; timing varsac predict…")
        for model, experiment in MODELS.items():
            checkpoint = untrained_checkpoint(experiment, folder / f"{experiment}.ckpt")
            cache = folder / "cache"
            if cache.exists():
                for pyramid in cache.rglob("*.tif"):
                    pyramid.unlink()  # every model's first call converts
            rows[model] = {
                "jpeg, first call": timed_predict(checkpoint, photo, folder, args.samples, "2528"),
                "jpeg, cached": timed_predict(checkpoint, photo, folder, args.samples, "2528"),
            }
            (pyramid,) = cache.rglob("*.tif")  # the 2528² pyramid: read as it is (size=null)
            rows[model]["pyramid tiff"] = timed_predict(
                checkpoint, pyramid, folder, args.samples, "null"
            )
            for case, row in rows[model].items():
                print(
                    f"  {model:<22} {case:<18} {row['wall_s']:6.2f} s end to end "
                    f"(model {row['loading_the_model_s']:.2f} s, conversion "
                    f"{row['converting_s']:.2f} s, prediction {row['predicting_s']:.3f} s)",
                    flush=True,
                )
    report(rows, args)


def report(rows: dict[str, dict[str, dict]], args: argparse.Namespace) -> None:
    saccade, tiled = (rows[name] for name in MODELS)
    print(f"\nvarsac predict on one 4000×3000 JPEG at 2528² ({os.cpu_count()} CPUs)")
    print(f"{'':<20}{'saccades, s':>14}{'tiled ResNet-18, s':>20}{'ratio':>8}")
    ratios = {}
    for case in saccade:
        ratio = tiled[case]["wall_s"] / saccade[case]["wall_s"]
        ratios[case] = ratio
        print(
            f"{case:<20}{saccade[case]['wall_s']:>14.2f}{tiled[case]['wall_s']:>20.2f}"
            f"{ratio:>7.1f}×"
        )
    model_ratio = tiled["pyramid tiff"]["predicting_s"] / saccade["pyramid tiff"]["predicting_s"]
    print(f"prediction alone (no start-up, no conversion): {model_ratio:.0f}× faster")
    if args.json:
        document = {"settings": vars(args) | {"json": None}, "measured": rows, "ratios": ratios}
        document["ratios"]["prediction alone"] = model_ratio
        args.json.write_text(json.dumps(document, indent=2, default=str))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
