"""Can megapixel MNIST's proxy tell the digits from the noise, and at what size?

The policy can only send glimpses to the digits if the proxy shows which of the 55 things
on a canvas are digits. This script measures that directly, with the answer given: for
each proxy side, it draws the training images of ``varsac data megapixel_mnist`` again
from their seeds, shrinks each to the proxy with ``resized_pixels`` (the function that
makes the proxies; here from the whole canvas, not from the pyramid's nearest level),
cuts the few proxy pixels around each digit and each noise patch, and trains a small CNN
to tell them apart (digits weighted ×10, as there are ten noise patches to a digit;
Adam at 1e-3, batch 512). On the validation images (the index's ``val`` split) it ranks
each image's 55 things by the CNN's score and keeps the top eight, the glimpses of
``experiment=megapixel_mnist``:

- ``AUC``: the chance that a digit scores above a noise patch (0.5 is blind);
- ``digits in top 8``: of the five (placing eight glimpses on things at random gives
  8 · 5 / 55 = 0.73);
- ``all 5 in top 8``: the share of images whose five digits are all among the eight
  (with them in view the crop classifier reaches 98.5 %, ``megapixel_glimpses.py``).

The places are given, so this bounds what any policy reading a proxy of that side could
know of which things are digits. Prints the table, writes JSON.

    python benchmarks/megapixel_proxy.py --json docs/megapixel_proxy.json
"""

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from megapixel_glimpses import (  # benchmarks/, on the script's path
    GLIMPSES,
    training_canvases,
    training_split,
)
from slide_glimpses import write_record
from varsac.data.megapixel_mnist import CANVAS_SIZE, DIGITS, NOISE_PATCHES
from varsac.data.mnist import DIGIT_SIZE
from varsac.image_source import resized_pixels

SIDES = (32, 64, 128, 256)  # proxy sides (data.proxy_size)
BATCH = 512


def patch_side(proxy: int) -> int:
    """The odd side of the proxy patch cut around a thing: its 28 px and a margin."""
    return 2 * math.ceil(DIGIT_SIZE / 2 * proxy / CANVAS_SIZE) + 3


def proxies_and_things(
    indices: list[int], sides: list[int], seed: int, data_dir: str
) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """The training images ``indices``, drawn again: {side: uint8 (N, side, side) proxies},
    and float (N, 55, 2) the centres (row, column) of their things, the five digits first."""
    proxies, centres = {side: [] for side in sides}, []
    for canvas in training_canvases(indices, seed, data_dir):
        for side in sides:
            proxies[side].append(resized_pixels(canvas.pixels[:, :, None], side)[:, :, 0])
        boxes = np.concatenate([canvas.digit_boxes, canvas.noise_boxes])
        centres.append(boxes[:, :2] + DIGIT_SIZE / 2)
    return {side: np.stack(shrunk) for side, shrunk in proxies.items()}, np.stack(centres)


def proxy_patches(proxies: np.ndarray, centres: np.ndarray) -> torch.Tensor:
    """(N, P, P) proxies and (N, 55, 2) canvas centres → float (N, 55, 1, k, k) in [0, 1]:
    the proxy pixels around each thing."""
    side = proxies.shape[-1]
    k = patch_side(side)
    padded = np.pad(proxies, ((0, 0), (k, k), (k, k)))
    corners = np.floor(centres * side / CANVAS_SIZE).astype(int) + k - k // 2  # top-left
    patches = [
        [image[r : r + k, c : c + k] for r, c in at]
        for image, at in zip(padded, corners, strict=True)
    ]
    return torch.from_numpy(np.array(patches)).float().div(255)[:, :, None]


def scorer(k: int) -> nn.Module:
    """A small CNN: (M, 1, k, k) patches → (M,) logits that the patch holds a digit."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(64 * k * k, 64), nn.ReLU(), nn.Linear(64, 1), nn.Flatten(0),
    )  # fmt: skip


def ranking(net: nn.Module, patches: torch.Tensor) -> dict[str, float]:
    """AUC, mean digits among each image's top GLIMPSES things, and the share of images
    with all five there; ``patches`` (N, 55, 1, k, k), the digits first."""
    with torch.no_grad():
        scores = net(patches.flatten(0, 1)).view(patches.shape[:2])  # (N, 55)
    digits, noise = scores[:, :DIGITS].flatten(), scores[:, DIGITS:].flatten()
    auc = (digits[:, None] > noise[None, :]).float().mean().item()
    top = scores.topk(GLIMPSES, dim=1).indices < DIGITS  # (N, GLIMPSES): a digit?
    in_top = top.sum(1).float()
    return {"auc": auc, "digits_in_top": in_top.mean().item(),
            "all_in_top": (in_top == DIGITS).float().mean().item()}  # fmt: skip


def train(train_patches: torch.Tensor, val_patches: torch.Tensor, steps: int, seed: int):
    """Train a scorer on the training patches; its validation ranking every 250 steps."""
    torch.manual_seed(seed)
    net = scorer(train_patches.shape[-1])
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    flat = train_patches.flatten(0, 1)
    is_digit = (torch.arange(train_patches.shape[1]) < DIGITS).float()
    targets = is_digit.repeat(len(train_patches))
    weight = torch.tensor((train_patches.shape[1] - DIGITS) / DIGITS)
    curve = []
    for step in range(steps + 1):
        if step % 250 == 0:
            curve.append({"step": step, **ranking(net, val_patches)})
            shown = ", ".join(f"{k} {v:.3f}" for k, v in curve[-1].items() if k != "step")
            print(f"  step {step:5d}: {shown}", flush=True)
        if step == steps:
            return curve
        chosen = torch.randint(len(flat), (BATCH,))
        loss = F.binary_cross_entropy_with_logits(
            net(flat[chosen]), targets[chosen], pos_weight=weight
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(Path("~/.cache/varsac").expanduser()))
    parser.add_argument("--images", type=int, default=2000, help="training images drawn")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--sides", type=int, nargs="+", default=SIDES)
    parser.add_argument("--seed", type=int, default=0, help="the set's seed (varsac data's)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    train_indices, val_indices = training_split(args.images, args.seed)
    started = time.perf_counter()
    drawn = [
        proxies_and_things(i, args.sides, args.seed, args.data_dir)
        for i in (train_indices, val_indices)
    ]
    seconds = time.perf_counter() - started
    print(f"{len(train_indices)} + {len(val_indices)} images drawn in {seconds:.0f} s")
    rows = {}
    for side in args.sides:
        print(f"proxy {side}² (a digit is {DIGIT_SIZE * side / CANVAS_SIZE:.1f} px):")
        patches = [proxy_patches(proxies[side], centres) for proxies, centres in drawn]
        curve = train(*patches, args.steps, args.seed)
        rows[str(side)] = {"digit_px": DIGIT_SIZE * side / CANVAS_SIZE,
                           "patch": patch_side(side), "curve": curve}  # fmt: skip
    print(
        f"\n{'proxy':>6} {'digit px':>9} {'AUC':>6} {'digits in top 8':>16} {'all 5 in top 8':>15}"
    )
    for side, row in rows.items():
        last = row["curve"][-1]
        print(f"{side:>6} {row['digit_px']:>9.1f} {last['auc']:>6.3f} "
              f"{last['digits_in_top']:>16.2f} {last['all_in_top']:>15.1%}")  # fmt: skip
    at_random = GLIMPSES * DIGITS / (DIGITS + NOISE_PATCHES)
    print(f"(the {GLIMPSES} glimpses on things at random: {at_random:.2f} digits in view)")
    if args.json:
        images = {"train": len(train_indices), "val": len(val_indices)}
        write_record(args.json, rows, steps=args.steps, images=images)


if __name__ == "__main__":
    main()
