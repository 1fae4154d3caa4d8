"""Where StarCraft counting is bound: the crop classifier alone, on glimpses placed by hand.

Draws the frames of ``varsac data starcraft`` again from their seeds (the same pixels and
the units' places; nothing is written) and trains ``experiment=starcraft``'s crop
classifier by itself, no policy, to count the marines from six glimpses per frame (64²
samples of crops of ``--side`` of the frame side, features summed), placed three ways:

- ``on the marines``: each glimpse where it covers most of the marines not covered yet
  (``starcraft_coverage.greedy_squares``), the rest on other units (what a policy that
  has found the marines would give);
- ``on units at random``: on six units of any type (what the minimap shows: where units
  are, not which are marines), drawn afresh each step from ``--draws`` draws;
- ``at random``: anywhere, drawn afresh each step as above.

Frames 0..N−1: the first 80 % train, the rest validate. Training draws frames so that
every count is equally likely, as ``experiment=starcraft`` does (batch 32, Adam at 1e-3);
validation keeps the natural counts. A row is the validation accuracy, balanced accuracy
and count MAE every 100 steps, beside always-the-median's MAE. Prints the table, writes
JSON.

    python benchmarks/starcraft_glimpses.py --json docs/starcraft_glimpses.json
"""

import argparse
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from slide_glimpses import write_record  # benchmarks/, on the script's path
from starcraft_coverage import greedy_squares
from varsac.data.starcraft.layout import LABEL_COLUMN, MAX_COUNT
from varsac.data.starcraft.scenes import render_scene, scene_layout
from varsac.metrics import BalancedAccuracy
from varsac.models.crop_classifier import CropClassifier
from varsac.models.spatial_transformer import SpatialTransformer

GLIMPSES = 6  # experiment=starcraft: model.vrnn.steps
WINDOW = 64  # model.cropper.window
BATCH = 32  # data.batch_size
PLACINGS = ("on the marines", "on units at random", "at random")
CLASSES = MAX_COUNT + 1


def centres(
    units: np.ndarray, marines: np.ndarray, side: float, placing: str, rng: np.random.Generator
) -> np.ndarray:
    """(GLIMPSES, 2) glimpse centres (x, y) in [0, 1]² for a frame whose units and marines
    are at ``units`` (N, 2) and ``marines`` (M, 2), fractions of the side, as ``placing``
    says."""
    if placing == "at random" or not len(units):
        return rng.uniform(side / 2, 1 - side / 2, size=(GLIMPSES, 2))
    on_units = units[rng.choice(len(units), GLIMPSES, replace=len(units) < GLIMPSES)]
    if placing == "on units at random":
        return on_units
    placed, _ = greedy_squares(marines, side, GLIMPSES)
    return np.concatenate([placed, on_units[len(placed) :]])


def glimpses(indices: range, side: float, draws: dict[str, int], seed: int, frame_size: int):
    """{placing: ``draws[placing]`` draws of uint8 (N, GLIMPSES, 3, WINDOW, WINDOW)}, and the
    (N,) marine counts, of frames ``indices``; each frame is drawn once for all placings."""
    rng, cropper = np.random.default_rng([seed, 7]), SpatialTransformer(window=WINDOW)
    cut = {placing: [[] for _ in range(n)] for placing, n in draws.items()}
    counts = []
    for index in indices:
        layout = scene_layout(seed, index, frame_size)
        frame, _ = render_scene(layout, seed, frame_size)
        image = torch.from_numpy(frame.copy()).permute(2, 0, 1).float().div(255)[None]
        units = np.array([(u.x, u.y) for u in layout.units]).reshape(-1, 2) / frame_size
        is_marine = np.array([u.kind == "marine" for u in layout.units], dtype=bool)
        counts.append(int(is_marine.sum()))
        for placing, drawn in cut.items():
            for draw in drawn:
                xy = centres(units, units[is_marine], side, placing, rng) * 2 - 1
                crops = torch.cat(
                    [torch.full((GLIMPSES, 1), side), torch.from_numpy(xy).float()], 1
                )
                with torch.no_grad():
                    glimpse = cropper(image, crops[None])[0]  # (T, 3, w, w) in [0, 1]
                draw.append(glimpse.mul(255).round().to(torch.uint8))
    drawn = {placing: [torch.stack(draw) for draw in draws_] for placing, draws_ in cut.items()}
    return drawn, torch.tensor(counts)


def evaluate(net: CropClassifier, images: torch.Tensor, counts: torch.Tensor) -> dict[str, float]:
    """Validation accuracy, balanced accuracy and count MAE of ``net``."""
    with torch.no_grad():
        predicted = torch.cat(
            [net(chunk.float().div(255)).argmax(1) for chunk in images.split(128)]
        )
    balanced = BalancedAccuracy(CLASSES)
    balanced.update(predicted, counts)
    return {"accuracy": (predicted == counts).float().mean().item(),
            "balanced_accuracy": balanced.compute().item(),
            "mae": (predicted - counts).abs().float().mean().item()}  # fmt: skip


def train(draws, counts, val, val_counts, steps: int, seed: int) -> list[dict[str, float]]:
    """A fresh crop classifier, each step on a count-balanced batch of one of the ``draws``;
    its validation figures every 100 steps."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    net = CropClassifier(3, CLASSES, (32, 64, 128, 256), 256, "sum")  # the experiment's
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    weights = 1.0 / torch.bincount(counts, minlength=CLASSES).clamp(min=1)[counts].float()
    curve = []
    for step in range(steps + 1):
        if step % 100 == 0:
            curve.append({"step": step, **evaluate(net, val, val_counts)})
            shown = ", ".join(f"{k} {v:.3f}" for k, v in curve[-1].items() if k != "step")
            print(f"  step {step:5d}: {shown}", flush=True)
        if step == steps:
            return curve
        chosen = torch.multinomial(weights, BATCH, replacement=True)
        drawn = draws[rng.randrange(len(draws))][chosen].float().div(255)
        loss = F.cross_entropy(net(drawn), counts[chosen])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=2000, help="frames 0..N-1 of the set")
    parser.add_argument("--side", type=float, default=0.1, help="model.max_scale")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="the set's seed (varsac data's)")
    parser.add_argument("--frame-size", type=int, default=1024)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    split = int(args.frames * 0.8)
    train_draws = {p: 1 if p == "on the marines" else args.draws for p in PLACINGS}
    started = time.perf_counter()
    train_cut, counts = glimpses(range(split), args.side, train_draws, args.seed, args.frame_size)
    val_cut, val_counts = glimpses(
        range(split, args.frames), args.side, dict.fromkeys(PLACINGS, 1), args.seed,
        args.frame_size,
    )  # fmt: skip
    print(f"{args.frames} frames drawn and cut in {time.perf_counter() - started:.0f} s")
    median = val_counts.float().median()  # torch's lower median
    median_mae = (val_counts - median).abs().mean().item()
    rows = {}
    for placing in PLACINGS:
        print(f"{placing}:")
        curve = train(train_cut[placing], counts, val_cut[placing][0], val_counts, args.steps,
                      args.seed)  # fmt: skip
        rows[placing] = {"draws": train_draws[placing], "curve": curve}
    print(f"\n{'glimpses':<20} {'accuracy':>9} {'balanced':>9} {'MAE':>6}   (step {args.steps})")
    for placing, row in rows.items():
        last = row["curve"][-1]
        print(f"{placing:<20} {last['accuracy']:>9.1%} {last['balanced_accuracy']:>9.1%} "
              f"{last['mae']:>6.2f}")  # fmt: skip
    print(f"{'always the median':<20} {'':>9} {'':>9} {median_mae:>6.2f}")
    if args.json:
        write_record(args.json, rows, steps=args.steps, side=args.side, frames=args.frames,
                     label=LABEL_COLUMN, median_mae=median_mae)  # fmt: skip


if __name__ == "__main__":
    main()
