"""What does the contrast prior put in view on megapixel MNIST, before anything is learnt?

With ``model.vrnn.where=cells`` each glimpse draws a cell of the proxy encoder's map, and
``model.vrnn.contrast_prior`` = κ adds κ · log contrast to the draw's logits
(``map_pointer.cell_contrast``). An attention that has learnt nothing is even, so the
first draws follow the prior alone. This script measures what they see: it draws the
first training images of ``varsac data megapixel_mnist`` again from their seeds, makes
their proxies, draws the experiment's eight cells per image without replacement from
softmax(κ · log contrast) (a Gumbel top-k, as ``CellDraw`` draws them in training; κ = 0
is the even draw), and also takes the eight likeliest cells (evaluation). A glimpse of
``SCALE`` of the side at its cell's place, the cell's peak (the latent's offset is 0 at
first), has a thing in view if the thing's centre lies inside it. For each κ, per image:

- ``class digits``: of the three digits of the class (what the label is);
- ``≥ 1 class digit``: the share of images with one at least in view (with one in view
  among seven noise patches the crop classifier alone passes 88 % in 300 steps,
  ``megapixel_glimpses.py``);
- ``digits`` (of five) and ``noise`` (of fifty) patches in view;
- ``twice``: glimpses on a digit that another glimpse of the image also sees (a thing on
  the border of two cells is the peak of both);
- ``outnumbered``: the share of images where the class digits, counted once per glimpse
  that sees them, outnumber each other digit (a tie counts half): what the classifier's
  sum over the glimpses could tell at best.

The rows marked "inhibition of return" draw with ``CellDraw`` itself (an even attention,
``vrnn.inhibition_of_return=true``): each glimpse also takes the cells whose peaks it
covers.

``--statistic mean`` ranks the cells by their mean distance from the background instead
of the largest, and centres the glimpses on the cells, not their peaks: the prior as it
was first, for comparison. Prints the table, writes JSON.

    python benchmarks/megapixel_contrast.py --json docs/megapixel_contrast.json
"""

import argparse
from pathlib import Path

import torch
from torch.nn import functional as F

from megapixel_glimpses import GLIMPSES, SCALE
from megapixel_proxy import proxies_and_things
from slide_glimpses import write_record
from varsac.data.megapixel_mnist import CANVAS_SIZE, DIGITS, TARGET_DIGITS
from varsac.models.map_pointer import CellDraw, MapPointer, cell_centres, cell_contrast

KAPPAS = (0.0, 1.0, 2.0, 4.0, 8.0)


def mean_contrast(proxy: torch.Tensor, side: int, floor: float = 0.01):
    """``cell_contrast`` as it was first: each cell's mean distance from the background,
    not its largest, and its centre, not its peak, as its place."""
    background = proxy.flatten(2).median(-1).values[..., None, None]
    contrast = F.adaptive_avg_pool2d((proxy - background).abs().sum(1, keepdim=True), side)
    contrast = contrast.flatten(1)
    logits = (contrast + floor * contrast.mean(-1, keepdim=True) + 1e-12).log()
    return logits, cell_centres(proxy.new_empty(1, 1, side, side)).expand(len(proxy), -1, -1)


def in_view(centres: torch.Tensor, places: torch.Tensor) -> torch.Tensor:
    """(N, 55, 2) canvas centres (row, column) of the things and (N, cells², 2) glimpse
    places (x, y) in the normalised frame → bool (N, cells², 55): whether a glimpse of
    ``SCALE`` of the side at each cell's place has each thing's centre inside it."""
    at = (places + 1) * CANVAS_SIZE / 2  # (N, cells², 2) canvas (x, y)
    half = SCALE * CANVAS_SIZE / 2
    near_row = (centres[:, None, :, 0] - at[:, :, None, 1]).abs() < half
    near_column = (centres[:, None, :, 1] - at[:, :, None, 0]).abs() < half
    return near_row & near_column


def seen(chosen: torch.Tensor, view: torch.Tensor) -> dict[str, float]:
    """(N, GLIMPSES) chosen cells and (N, cells², 55) views → what the glimpses saw, per image."""
    looks = view.gather(1, chosen[:, :, None].expand(-1, -1, view.shape[-1]))  # (N, G, 55)
    things, counts = looks.any(1), looks[:, :, :DIGITS].sum(1).float()  # (N, 55), (N, 5)
    target = things[:, :TARGET_DIGITS]
    votes, rival = counts[:, :TARGET_DIGITS].sum(1), counts[:, TARGET_DIGITS:].amax(1)
    return {"class_digits": target.sum(1).float().mean().item(),
            "any_class_digit": target.any(1).float().mean().item(),
            "digits": things[:, :DIGITS].sum(1).float().mean().item(),
            "noise": things[:, DIGITS:].sum(1).float().mean().item(),
            "twice": (counts - 1).clamp_min(0).sum(1).mean().item(),
            "outnumbered": ((votes > rival).float() + 0.5 * (votes == rival).float())
            .mean().item()}  # fmt: skip


def inhibited(prior: torch.Tensor, places: torch.Tensor, sample: bool) -> torch.Tensor:
    """(N, cells²) prior logits and (N, cells², 2) peaks → (N, GLIMPSES) cells that
    ``CellDraw`` with inhibition of return takes, under an even attention, its glimpses
    of ``SCALE`` at the peaks."""
    side = int(prior.shape[1] ** 0.5)
    pointer = MapPointer(1, 1)
    torch.nn.init.zeros_(pointer.score.weight)  # even logits: the prior alone
    keys = pointer.keys(prior.new_zeros(len(prior), 1, side, side))
    draw = CellDraw(pointer, keys, sample, (SCALE, SCALE), prior, places, 0.0, inhibit=True)
    with torch.no_grad():
        for _ in range(GLIMPSES):
            place, _ = draw(prior.new_zeros(len(prior), 1))
            draw.inside(prior.new_zeros(len(prior), 3), place)
    return draw.taken.float().topk(GLIMPSES).indices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(Path("~/.cache/varsac").expanduser()))
    parser.add_argument("--images", type=int, default=500, help="training images drawn")
    parser.add_argument("--proxy", type=int, default=128, help="data.proxy_size")
    parser.add_argument("--cells", type=int, default=32, help="the map's side (proxy / 2^halvings)")
    parser.add_argument("--statistic", choices=("largest", "mean"), default="largest")
    parser.add_argument("--draws", type=int, default=5, help="draws per image, averaged")
    parser.add_argument("--seed", type=int, default=0, help="the set's seed (varsac data's)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    proxies, centres = proxies_and_things(
        list(range(args.images)), [args.proxy], args.seed, args.data_dir
    )
    proxy = torch.from_numpy(proxies[args.proxy]).float()[:, None].div(255)  # (N, 1, P, P)
    contrast = cell_contrast if args.statistic == "largest" else mean_contrast
    log_contrast, places = contrast(proxy, args.cells)  # (N, cells²), (N, cells², 2)
    view = in_view(torch.from_numpy(centres).float(), places)
    generator = torch.Generator().manual_seed(args.seed)
    rows = {}
    for kappa in KAPPAS:
        draws = []
        for _ in range(args.draws):
            uniform = torch.rand(log_contrast.shape, generator=generator).clamp_min(1e-12)
            gumbel = -(-uniform.log()).log()
            draws.append(seen((kappa * log_contrast + gumbel).topk(GLIMPSES).indices, view))
        rows[f"drawn, κ = {kappa:g}"] = {k: sum(d[k] for d in draws) / len(draws) for k in draws[0]}
    rows["likeliest (evaluation)"] = seen(log_contrast.topk(GLIMPSES).indices, view)
    torch.manual_seed(args.seed)
    for kappa in KAPPAS[-1:]:
        chosen = [inhibited(kappa * log_contrast, places, True) for _ in range(args.draws)]
        draws = [seen(cells, view) for cells in chosen]
        rows[f"drawn, κ = {kappa:g}, inhibition of return"] = {
            k: sum(d[k] for d in draws) / len(draws) for k in draws[0]
        }
    rows["likeliest, inhibition of return"] = seen(inhibited(log_contrast, places, False), view)
    print(f"{args.images} images, {args.proxy}² proxy, {args.cells}² cells, contrast = "
          f"{args.statistic} distance, {GLIMPSES} glimpses of {SCALE:g} of the side")  # fmt: skip
    print(f"{'cells':>38} {'class digits':>13} {'≥ 1 class digit':>16} {'digits':>7} "
          f"{'noise':>6} {'twice':>6} {'outnumbered':>12}")  # fmt: skip
    for name, row in rows.items():
        print(f"{name:>38} {row['class_digits']:>10.2f}/{TARGET_DIGITS} "
              f"{row['any_class_digit']:>16.1%} {row['digits']:>5.2f}/{DIGITS} "
              f"{row['noise']:>6.2f} {row['twice']:>6.2f} {row['outnumbered']:>12.1%}")  # fmt: skip
    if args.json:
        write_record(args.json, rows, images=args.images, proxy=args.proxy, cells=args.cells,
                     statistic=args.statistic, glimpses=GLIMPSES, scale=SCALE)  # fmt: skip


if __name__ == "__main__":
    main()
