"""Where the slide model's learning is bound: the crop classifier alone, on glimpses placed by hand.

On the synthetic slides (``varsac data synthetic_slides``, indexed by ``varsac
data slides``), trains ``experiment=slides``'s crop classifier by itself, no
policy, on six glimpses per slide read through the localized spatial
transformer as training reads them (64² samples, square views), placed three
ways:

- ``one on a tumour``: on a tumour slide, the first glimpse centred on its first
  tumour (``tumours.csv``), the other five at random; all six at random on a
  normal slide;
- ``at random``: all six at random on every slide, drawn once;
- ``at random, redrawn``: as above, but each step takes one of ``--draws``
  draws, as a stochastic policy would give.

Random centres are uniform in the middle 80 % of each side (where the tissue
is). A row is the accuracy on the training and validation slides every 50 steps
(batch 8, Adam at 1e-3, the experiment's settings). If the classifier learns
with one glimpse on a tumour but not at random, what bounds the model is where
its glimpses go: the policy. Prints the table, writes JSON.

    python benchmarks/slide_glimpses.py --json docs/slide_glimpses.json
"""

import argparse
import csv
import functools
import json
import random
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.nn import functional as F

from records import machine  # benchmarks/, on the path of a script run from it
from varsac.data.photo_index import read_index
from varsac.files import replace_atomically
from varsac.models.crop_classifier import CropClassifier
from varsac.models.localized_spatial_transformer import LocalizedSpatialTransformer
from varsac.slides import microns_per_pixel, model_view, open_image_source

GLIMPSES = 6  # experiment=slides: model.vrnn.steps
WINDOW = 64  # model.cropper.window
BATCH = 8  # data.batch_size
SPREAD = 0.8  # random centres within this middle share of each side


@functools.cache
def slide_set(root: Path) -> tuple[list, dict[str, list[dict[str, str]]]]:
    """The index's rows and {slide path: its tumour boxes}, read once for every draw."""
    tumours = defaultdict(list)
    with open(root / "tumours.csv", newline="") as handle:
        for box in csv.DictReader(handle):
            tumours[box["path"]].append(box)
    return read_index(root), tumours


def glimpses(root: Path, split: str, microns: float, on_tumour: bool, rng: random.Random):
    """(N, GLIMPSES, 3, WINDOW, WINDOW) glimpses of ``microns`` a side of the split's slides,
    and their (N,) labels (1: tumour)."""
    rows, tumours = slide_set(root)
    cropper = LocalizedSpatialTransformer(window=WINDOW)
    images, labels = [], []
    for row in (row for row in rows if row.split == split):
        view = model_view(open_image_source(root / row.path))
        side = view.levels[0][0]
        scale = min(1.0, microns / microns_per_pixel(view) / side)
        centres = [[rng.uniform(-SPREAD, SPREAD) for _ in "xy"] for _ in range(GLIMPSES)]
        if on_tumour and tumours[row.path]:
            box = tumours[row.path][0]
            centres[0] = [
                (int(box[start]) + int(box[extent]) / 2) / side * 2 - 1
                for start, extent in (("left", "width"), ("top", "height"))
            ]
        crops = torch.tensor([[[scale, x, y] for x, y in centres]])  # (1, T, 3)
        with torch.no_grad():
            images.append(cropper([view], crops)[0])
        labels.append(int(row.label == "tumour"))
    return torch.stack(images), torch.tensor(labels)


def accuracy(net: CropClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return (net(images).argmax(1) == labels).float().mean().item()


def train(
    draws, val, steps: int, seed: int, net: CropClassifier | None = None, batch: int = BATCH
) -> list[dict[str, float]]:
    """Train ``net`` (a fresh crop classifier, experiment=slides' by default), each step on a
    batch of one of the ``draws`` of the training glimpses; the accuracies every 50 steps
    (on the first draw, and on ``val``)."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    net = net or CropClassifier(3, 2, (32, 64, 128, 256), 256, "max")
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    (images, labels), curve = draws[0], []
    for step in range(steps + 1):
        if step % 50 == 0:
            train_acc, val_acc = accuracy(net, images, labels), accuracy(net, *val)
            curve.append({"step": step, "train": train_acc, "val": val_acc})
            print(f"  step {step:4d}: train {train_acc:.3f}, val {val_acc:.3f}", flush=True)
        if step == steps:
            break
        chosen = torch.randint(len(labels), (batch,))
        drawn = draws[rng.randrange(len(draws))][0]
        loss = F.cross_entropy(net(drawn[chosen]), labels[chosen])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("~/.cache/varsac/synthetic_slides"))
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--draws", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    root = args.root.expanduser()
    if not (root / "index.csv").is_file():
        raise SystemExit(
            f"{root / 'index.csv'} is missing: run `varsac data synthetic_slides` and "
            f"`varsac data slides src={root}/labels.csv dst={root}` first"
        )
    rows = {}
    for name, microns, on_tumour, draws in (
        ("one on a tumour", 600.0, True, 1),
        ("at random", 1200.0, False, 1),
        ("at random, redrawn", 1200.0, False, args.draws),
    ):
        rng = random.Random(args.seed)
        started = time.perf_counter()
        train_draws = [glimpses(root, "train", microns, on_tumour, rng) for _ in range(draws)]
        val = glimpses(root, "val", microns, on_tumour, rng)
        read = time.perf_counter() - started
        print(f"{name}: {microns:.0f} µm glimpses, {draws} draw(s) read in {read:.1f} s")
        curve = train(train_draws, val, args.steps, args.seed)
        rows[name] = {"glimpse_microns": microns, "draws": draws, "curve": curve,
                      "slides": {"train": len(train_draws[0][1]), "val": len(val[1])}}  # fmt: skip
    show(rows, args.steps, "µm", "glimpse_microns")
    if args.json:
        write_record(args.json, rows, steps=args.steps)


def show(rows: dict[str, dict], steps: int, header: str, key: str) -> None:
    """Print each row's train/val accuracies at seven steps, after its ``key`` value."""
    shown = sorted({round(steps * k / 6 / 50) * 50 for k in range(7)})  # steps in the table
    width = max(22, *map(len, rows))
    print(f"\n{'glimpses':<{width}} {header:>6} " + " ".join(f"{s:>11}" for s in shown))
    for name, row in rows.items():
        points = {point["step"]: point for point in row["curve"]}
        cells = [
            f"{points[s]['train']:.2f}/{points[s]['val']:.2f}" if s in points else "-"
            for s in shown
        ]
        print(f"{name:<{width}} {row[key]:>6.0f} " + " ".join(f"{c:>11}" for c in cells))
    print("(train/val accuracy at each step)")


def write_record(path: Path, rows: dict[str, dict], **settings: object) -> None:
    """The rows, with the run's ``settings``, the machine and the date, as JSON at ``path``
    (atomically)."""
    record = {**machine(), **settings, "rows": rows}
    encoded = (json.dumps(record, indent=2) + "\n").encode()
    replace_atomically(path, lambda handle: handle.write(encoded))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
