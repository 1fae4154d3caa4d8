"""The paper's Table 1 on this machine: the saccade model against the tiled ResNet-18.

All models read the same pyramid TIFF (a two-digit cluttered MNIST canvas
upsampled to ``--size``², 2528² by default): the saccade model of
``experiment=cluttered_mnist_2528`` through the localized spatial transformer,
and the baseline of ``experiment=baseline_cluttered_mnist_2528`` (144 tiles of
224² at 2528²) two ways, as the paper measured it:

- checkpointed: tiles read and encoded 16 at a time, activations recomputed in
  the backward pass (the experiment's settings);
- naive: every tile of the batch in one pass, activations kept
  (``model.tile_batch=null model.checkpoint=false``). At 2528² training keeps
  about 4.4 GB per image, so by default it is measured at batch 1 only
  (``--naive-batches``).

Each measurement runs in a fresh process:

- inference: images per second at each batch size (median of ``--repeats``
  batches after one warm-up);
- training: seconds per optimiser step at each ``--train-batches`` size;
- memory: peak resident memory of the process, and the part of it above the
  interpreter with torch loaded (the model, its inputs and its activations),
  on which the ratios are taken. On a GPU the paper measured device memory.

Prints our tables beside the paper's, and the ratios of each baseline to the
saccade model at every batch both ran; ``--json`` writes them.

    python benchmarks/table1.py --json docs/table1.json
    python benchmarks/table1.py --size 256 --tile-size 96 --tiles-per-side 3   # a quick check
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from tempfile import TemporaryDirectory

from fresh_process import in_fresh_process, peak_rss_mib

SACCADES, NAIVE = "variational saccading", "resnet18, tiled, naive"
# name → (experiment, overrides on top of it); the steps are timed without a trainer, and a
# learning-rate schedule needs one to know its length (it costs nothing per step)
MODELS = {
    SACCADES: ("cluttered_mnist_2528", ["model.scheduler=null"]),
    "resnet18, tiled, checkpointed": ("baseline_cluttered_mnist_2528", []),
    NAIVE: (
        "baseline_cluttered_mnist_2528",
        ["model.tile_batch=null", "model.checkpoint=false"],
    ),
}
# Table 1 (top) of the paper: 2528² images, batch 160, on GPUs.
PAPER = {
    SACCADES: {"parameters": "7.4 M", "memory": "4.1 GB", "epoch": "120 s"},
    "resnet18, tiled": {
        "parameters": "11.4 M",
        "memory": "79 GB naive, 6.5 GB checkpointed",
        "epoch": "1052 s naive, 1454 s checkpointed",
    },
}


def current_rss_mib() -> float:
    """This process's resident memory now (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure(job: str, name: str, path: Path, batch: int, repeats: int, tiles: str) -> dict:
    """One model of MODELS, one job (infer or train) at one batch size, in this fresh process."""
    import torch
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate

    import varsac.models.baselines
    import varsac.models.localized_spatial_transformer
    import varsac.models.saccader  # noqa: F401  (all code loaded before the floor is taken)
    from varsac.image_source import read_proxies
    from varsac.pyramid import PyramidTIFF

    torch.manual_seed(0)
    tile_size, tiles_per_side = tiles.split(",")
    experiment, extra = MODELS[name]
    overrides = [f"experiment={experiment}", *extra]
    if name != SACCADES:
        overrides += [f"model.tile_size={tile_size}", f"model.tiles_per_side={tiles_per_side}"]
    with initialize_config_module("varsac.conf", version_base="1.3"):
        cfg = compose("fit", overrides=overrides)
    floor = current_rss_mib()
    model = instantiate(cfg.model)
    images = [PyramidTIFF(path) for _ in range(batch)]
    target = torch.zeros(batch, 10)
    target[:, [3, 7]] = 1  # two digits, as in identification
    batch_dict = {"image": images, "proxy": read_proxies(images, cfg.data.proxy_size)}
    batch_dict["target"] = target
    times = []
    if job == "infer":
        model.eval()
        with torch.no_grad():
            for _ in range(repeats + 1):
                started = time.perf_counter()
                model.objective(batch_dict, sample=False)
                times.append(time.perf_counter() - started)
    else:
        model.train()
        optimizer = model.configure_optimizers()
        for _ in range(repeats + 1):
            started = time.perf_counter()
            optimizer.zero_grad()
            loss, _, _ = model.objective(batch_dict, sample=True)
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - started)
    seconds = statistics.median(times[1:])
    peak = peak_rss_mib()
    return {
        "experiment": experiment,
        "overrides": extra,
        "job": job,
        "batch": batch,
        "seconds_per_batch": seconds,
        "images_per_s": batch / seconds,
        "peak_rss_mib": peak,
        "floor_rss_mib": floor,
        "working_mib": peak - floor,
        "parameters": sum(p.numel() for p in model.parameters()),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=2528, help="side of the test image")
    parser.add_argument("--tile-size", type=int, default=224)
    parser.add_argument("--tiles-per-side", type=int, default=12)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16], help="inference")
    parser.add_argument("--train-batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument(
        "--naive-batches", type=int, nargs="*", default=[1],
        help="inference and training batches of the naive baseline (none: skip it)",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        job, name, path, batch, tiles = args.worker
        print(json.dumps(measure(job, name, Path(path), int(batch), args.repeats, tiles)))
        return

    tiles = f"{args.tile_size},{args.tiles_per_side}"
    rows: dict[str, dict[str, dict]] = {}
    with TemporaryDirectory() as folder:
        path = Path(folder) / f"canvas_{args.size}.tif"
        lst_script = str(Path(__file__).with_name("lst.py"))  # writes the canvas as a pyramid
        in_fresh_process(lst_script, "write", str(args.size), str(path))
        print(f"wrote a {args.size}² pyramid TIFF; measuring in fresh processes…", flush=True)
        for name in MODELS:
            jobs = jobs_of(name, args)
            if jobs:
                rows[name] = {}
            for job, batch in jobs:
                result = in_fresh_process(
                    __file__, job, name, str(path), str(batch), tiles, "--repeats",
                    str(args.repeats),
                )  # fmt: skip
                rows[name][f"{job}_{batch}"] = result
                print(
                    f"  {name:<30} {job:<6} batch {batch:>3}: {result['images_per_s']:8.2f} "
                    f"images/s, working memory {result['working_mib']:7.0f} MiB "
                    f"(peak RSS {result['peak_rss_mib']:.0f})",
                    flush=True,
                )
    report(rows, args)


def jobs_of(name: str, args: argparse.Namespace) -> list[tuple[str, int]]:
    """(job, batch) pairs to measure for one model."""
    inference = args.naive_batches if name == NAIVE else args.batches
    training = args.naive_batches if name == NAIVE else args.train_batches
    return [("infer", b) for b in inference] + [("train", b) for b in training]


def compared(rows: dict[str, dict[str, dict]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per baseline and job: the saccade model's speedup and its share of the working memory."""
    saccade = rows[SACCADES]
    ratios = {}
    for name, measured in rows.items():
        if name == SACCADES:
            continue
        ratios[name] = {
            key: {
                "speedup": saccade[key]["images_per_s"] / row["images_per_s"],
                "memory_share": saccade[key]["working_mib"] / row["working_mib"],
            }
            for key, row in measured.items()
            if key in saccade
        }
    return ratios


def report(rows: dict[str, dict[str, dict]], args: argparse.Namespace) -> None:
    """Print the tables, ours beside the paper's, and the ratios; write the JSON."""
    keys = list(dict.fromkeys(key for measured in rows.values() for key in measured))
    print(f"\nTable 1 at {args.size}² on this machine ({os.cpu_count()} CPUs)")
    print("images/s in inference, seconds per step in training; working memory in MiB")
    header = f"{'':<32}{'parameters':>11}" + "".join(f"{key:>11}" for key in keys)
    for quantity in ("speed", "memory"):
        print(f"\n{quantity}\n{header}")
        for name, measured in rows.items():
            any_row = next(iter(measured.values()))
            line = f"{name:<32}{any_row['parameters'] / 1e6:>10.2f}M"
            for key in keys:
                row = measured.get(key)
                if row is None:
                    line += f"{'—':>11}"
                elif quantity == "memory":
                    line += f"{row['working_mib']:>11.0f}"
                elif row["job"] == "infer":
                    line += f"{row['images_per_s']:>11.2f}"
                else:
                    line += f"{row['seconds_per_batch']:>11.2f}"
            print(line)
    print("\nthe paper (2528², batch 160, GPUs):")
    for name, figures in PAPER.items():
        print(f"  {name:<24}" + ", ".join(f"{k} {v}" for k, v in figures.items()))
    ratios = compared(rows)
    print("\nthe saccade model against each baseline (speedup; its share of the working memory):")
    for name, per_job in ratios.items():
        cells = ", ".join(
            f"{key} {ratio['speedup']:.0f}× ({100 * ratio['memory_share']:.1f} %)"
            for key, ratio in per_job.items()
        )
        print(f"  {name}: {cells}")
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k not in ("json", "worker")}
        document = {"settings": settings, "measured": rows, "ratios": ratios, "paper": PAPER}
        args.json.write_text(json.dumps(document, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
