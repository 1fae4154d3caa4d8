"""How many of a StarCraft frame's marines a few glimpses can see at all, by glimpse size.

A count is exact only if the glimpses between them see every marine. This script asks,
for the frames of ``varsac data starcraft`` (their layouts, from the same seeds; nothing
is rendered), how much of that is possible: ``--glimpses`` square glimpses of a side, placed
greedily (each one where it covers the most marine centres not covered yet, on a grid of
1/8 of the side), see how many marines? Greedy placement covers at least 63 % of what the
best placement covers, and usually nearly all of it, so the figures are close lower bounds.

A row per glimpse side (a fraction of the frame side, ``model.max_scale``): the frames whose
marines are all seen, and the mean share of marines seen, over the frames with at least one
marine; then the same for the frames with more than ten marines. Prints the table, writes
JSON.

    python benchmarks/starcraft_coverage.py --json docs/starcraft_coverage.json
"""

import argparse
from pathlib import Path

import numpy as np

from slide_glimpses import write_record  # benchmarks/, on the script's path
from varsac.data.starcraft.scenes import scene_layout

SIDES = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4)  # the glimpse side, a fraction of the frame's


def greedy_squares(points: np.ndarray, side: float, glimpses: int) -> tuple[np.ndarray, int]:
    """Up to ``glimpses`` squares of ``side`` placed one after another, each where it covers
    most of the ``points`` (N, 2) in [0, 1]² left, until none is left: their (M, 2) centres
    (M ≤ glimpses) and how many of the points they cover between them."""
    corners = np.linspace(0, 1 - side, int(np.ceil((1 - side) / (side / 8))) + 1)
    x0, y0 = (grid.ravel() for grid in np.meshgrid(corners, corners))  # (K,) square corners
    inside = (
        (points[None, :, 0] >= x0[:, None])
        & (points[None, :, 0] <= x0[:, None] + side)
        & (points[None, :, 1] >= y0[:, None])
        & (points[None, :, 1] <= y0[:, None] + side)
    )  # (K, N)
    left, chosen = np.ones(len(points), dtype=bool), []
    while left.any() and len(chosen) < glimpses:
        chosen.append((inside & left).sum(axis=1).argmax())
        left &= ~inside[chosen[-1]]
    centres = np.stack([x0[chosen], y0[chosen]], axis=1) + side / 2
    return centres, int((~left).sum())


def coverage(layouts: list[np.ndarray], side: float, glimpses: int) -> dict[str, float]:
    """The share of frames whose marines are all seen and the mean share of marines seen."""
    seen = np.array([greedy_squares(p, side, glimpses)[1] for p in layouts])
    counts = np.array([len(p) for p in layouts])
    return {"all_seen": float((seen == counts).mean()), "seen": float((seen / counts).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=2000, help="frames 0..N-1 of the set")
    parser.add_argument("--glimpses", type=int, default=6, help="model.vrnn.steps")
    parser.add_argument("--seed", type=int, default=0, help="the set's seed (varsac data's)")
    parser.add_argument("--frame-size", type=int, default=1024)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    marines = []
    for index in range(args.frames):
        units = scene_layout(args.seed, index, args.frame_size).units
        points = [(u.x, u.y) for u in units if u.kind == "marine"]
        if points:
            marines.append(np.array(points) / args.frame_size)
    many = [p for p in marines if len(p) > 10]
    print(f"{len(marines)} frames with marines, {len(many)} of them with more than ten")
    print(f"{'side':>5} {'px':>5} {'all seen':>9} {'seen':>7} {'all seen (>10)':>15} "
          f"{'seen (>10)':>11}")  # fmt: skip
    rows = {}
    for side in SIDES:
        every, crowded = (coverage(frames, side, args.glimpses) for frames in (marines, many))
        rows[str(side)] = {"px": side * args.frame_size, "frames_with_marines": every,
                           "frames_with_more_than_ten": crowded}  # fmt: skip
        print(
            f"{side:>5.2f} {side * args.frame_size:>5.0f} {every['all_seen']:>9.1%} "
            f"{every['seen']:>7.1%} {crowded['all_seen']:>15.1%} {crowded['seen']:>11.1%}"
        )
    if args.json:
        write_record(args.json, rows, glimpses=args.glimpses, frames=args.frames)


if __name__ == "__main__":
    main()
