"""Where megapixel MNIST's learning is bound: the crop classifier alone, on glimpses placed by hand.

Draws the images of ``varsac data megapixel_mnist`` again from their seeds (the same
pixels, with the digits' and the noise patches' places) and trains
``experiment=megapixel_mnist``'s crop classifier by itself, no policy, on eight glimpses
per image (32² samples of 60 px crops, sum-pooled), placed four ways:

- ``on the five digits``: five glimpses centred on the digits, three on noise patches
  (what a policy that has found the digits would give);
- ``on one digit of the class``: one on a digit of the class, seven on noise patches;
- ``on things at random``: eight of the 55 digits and noise patches, drawn afresh each
  step from ``--draws`` draws (what ``where=cells`` gives once its attention has learnt
  where the strokes are, but not which are digits);
- ``at random``: anywhere on the canvas, drawn afresh each step as above.

A row is the accuracy on the first draw of the training images and on the validation
images (the index's ``val`` split) every 50 steps (batch 32, Adam at 1e-3). Prints the
table, writes JSON.

    python benchmarks/megapixel_glimpses.py --json docs/megapixel_glimpses.json
"""

import argparse
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from slide_glimpses import show, train, write_record  # benchmarks/, on the script's path
from varsac.data.megapixel_mnist import (
    CANVAS_SIZE,
    TARGET_DIGITS,
    MegapixelCanvas,
    compose_canvas,
    image_generator,
    split_noise_bank,
    validation_indices,
)
from varsac.data.mnist import DIGIT_SIZE, load_mnist
from varsac.models.crop_classifier import CropClassifier
from varsac.models.spatial_transformer import SpatialTransformer

GLIMPSES = 8  # experiment=megapixel_mnist: model.vrnn.steps
WINDOW = 32  # model.cropper.window
SCALE = 0.04  # 60 px of 1500: a 28 px digit and some room around it
BATCH = 32  # data.batch_size
PLACINGS = ("on the five digits", "on one digit of the class", "on things at random", "at random")


def centres(canvas, placing: str, rng: np.random.Generator) -> np.ndarray:
    """(GLIMPSES, 2) glimpse centres (x, y) in (−1, 1) for one canvas, as ``placing`` says."""
    digits = canvas.digit_boxes[:, :2] + DIGIT_SIZE / 2  # (5, 2) centres (row, column)
    noise = canvas.noise_boxes[:, :2] + DIGIT_SIZE / 2
    if placing == "at random":
        points = rng.uniform(0, CANVAS_SIZE, size=(GLIMPSES, 2))
    elif placing == "on things at random":
        things = np.concatenate([digits, noise])
        points = things[rng.choice(len(things), GLIMPSES, replace=False)]
    else:  # the class's digits come first (compose_canvas)
        on = (
            digits if placing == "on the five digits" else digits[rng.integers(TARGET_DIGITS)][None]
        )
        points = np.concatenate([on, noise[rng.choice(len(noise), GLIMPSES - len(on), False)]])
    return (points[:, ::-1] / CANVAS_SIZE * 2 - 1).astype(np.float32)  # (row, col) → (x, y)


def training_canvases(indices: list[int], seed: int, data_dir: str) -> Iterator[MegapixelCanvas]:
    """The training images ``indices`` of the set of seed ``seed``, drawn again, one by one."""
    digits, bank = load_mnist(data_dir, sources=()).train, split_noise_bank(seed, "train")
    for index in indices:
        yield compose_canvas(image_generator(seed, "train", index), digits, bank)


def training_split(images: int, seed: int) -> tuple[list[int], list[int]]:
    """The first ``images`` training images, as ``varsac data megapixel_mnist`` splits
    them: (train indices, validation indices)."""
    held_out = validation_indices(seed, 5000, 0.1)
    train = [i for i in range(images) if i not in held_out]
    return train, sorted(i for i in held_out if i < images)


def glimpses(indices: list[int], placing: str, draws: int, seed: int, data_dir: str):
    """``draws`` draws of (N, GLIMPSES, 1, WINDOW, WINDOW) glimpses of the training images
    ``indices``, and their (N,) labels."""
    rng, cropper = np.random.default_rng([seed, 7]), SpatialTransformer(window=WINDOW)
    drawn, labels = [[] for _ in range(draws)], []
    for canvas in training_canvases(indices, seed, data_dir):
        image = torch.from_numpy(canvas.pixels).float().div(255)[None, None]  # (1, 1, S, S)
        labels.append(canvas.label)
        for draw in drawn:
            xy = torch.from_numpy(centres(canvas, placing, rng))
            crops = torch.cat([torch.full((GLIMPSES, 1), SCALE), xy], 1)[None]  # (1, T, 3)
            with torch.no_grad():
                draw.append(cropper(image, crops)[0])
    labels = torch.tensor(labels)
    return [(torch.stack(draw), labels) for draw in drawn]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(Path("~/.cache/varsac").expanduser()))
    parser.add_argument("--images", type=int, default=5000, help="training images drawn")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--draws", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0, help="the set's seed (varsac data's)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    train_indices, val_indices = training_split(args.images, args.seed)
    rows = {}
    for placing in PLACINGS:
        draws = args.draws if "random" in placing else 1
        started = time.perf_counter()
        train_draws = glimpses(train_indices, placing, draws, args.seed, args.data_dir)
        (val,) = glimpses(val_indices, placing, 1, args.seed, args.data_dir)
        print(f"{placing}: {draws} draw(s) cut in {time.perf_counter() - started:.1f} s")
        net = CropClassifier(1, 10, (32, 64, 128, 256), 256, "sum")  # the experiment's
        curve = train(train_draws, val, args.steps, args.seed, net, BATCH)
        images = {"train": len(train_indices), "val": len(val_indices)}
        rows[placing] = {"glimpse_px": SCALE * CANVAS_SIZE, "draws": draws, "curve": curve,
                         "images": images}  # fmt: skip
    show(rows, args.steps, "px", "glimpse_px")
    if args.json:
        write_record(args.json, rows, steps=args.steps)


if __name__ == "__main__":
    main()
