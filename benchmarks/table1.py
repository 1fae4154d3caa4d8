"""The paper's Table 1 on this machine: the saccade model against the tiled ResNet-18.

Both models read the same pyramid TIFF (a two-digit cluttered MNIST canvas
upsampled to ``--size``², 2528² by default): the saccade model of
``experiment=cluttered_mnist_2528`` through the localized spatial transformer,
the baseline of ``experiment=baseline_cluttered_mnist_2528`` as a grid of
tiles (144 of 224² at 2528², activation checkpointing on, as in the paper).
Each measurement runs in a fresh process:

- inference: images per second at each ``--batches`` size (median of
  ``--repeats`` batches after one warm-up);
- training: seconds per optimiser step at ``--train-batch``;
- memory: peak resident memory of the process, and the part of it above the
  interpreter with torch loaded (the model, its inputs and its activations),
  on which the ratio is taken. On a GPU the paper measured device memory.

Prints our table beside the paper's, and the ratios; ``--json`` writes them.

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

MODELS = {
    "variational saccading": "cluttered_mnist_2528",
    "resnet18, tiled": "baseline_cluttered_mnist_2528",
}
# Table 1 (top) of the paper: 2528² images, batch 160, on GPUs.
PAPER = {
    "variational saccading": {"parameters": "7.4 M", "memory": "4.1 GB", "epoch": "120 s"},
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


def measure(job: str, experiment: str, path: Path, batch: int, repeats: int, tiles: str) -> dict:
    """One model, one job (infer or train) at one batch size, in this (fresh) process."""
    import torch
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate

    import varsac.models.baselines
    import varsac.models.localized_spatial_transformer
    import varsac.models.saccader  # noqa: F401  (all code loaded before the floor is taken)
    from varsac.data.pyramid_dataset import read_proxies
    from varsac.pyramid import PyramidTIFF

    torch.manual_seed(0)
    tile_size, tiles_per_side = tiles.split(",")
    overrides = [f"experiment={experiment}"]
    if experiment.startswith("baseline"):
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
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--train-batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        job, experiment, path, batch, tiles = args.worker
        print(json.dumps(measure(job, experiment, Path(path), int(batch), args.repeats, tiles)))
        return

    tiles = f"{args.tile_size},{args.tiles_per_side}"
    rows: dict[str, dict[str, dict]] = {name: {} for name in MODELS}
    with TemporaryDirectory() as folder:
        path = Path(folder) / f"canvas_{args.size}.tif"
        lst_script = str(Path(__file__).with_name("lst.py"))  # writes the canvas as a pyramid
        in_fresh_process(lst_script, "write", str(args.size), str(path))
        print(f"wrote a {args.size}² pyramid TIFF; measuring in fresh processes…", flush=True)
        for name, experiment in MODELS.items():
            jobs = [("infer", b) for b in args.batches] + [("train", args.train_batch)]
            for job, batch in jobs:
                result = in_fresh_process(
                    __file__, job, experiment, str(path), str(batch), tiles, "--repeats",
                    str(args.repeats),
                )  # fmt: skip
                rows[name][f"{job}_{batch}"] = result
                print(
                    f"  {name:<22} {job:<6} batch {batch:>3}: {result['images_per_s']:8.2f} "
                    f"images/s, working memory {result['working_mib']:7.0f} MiB "
                    f"(peak RSS {result['peak_rss_mib']:.0f})",
                    flush=True,
                )
    report(rows, args)


def report(rows: dict[str, dict[str, dict]], args: argparse.Namespace) -> None:
    """Print the table, ours beside the paper's, and the ratios; write the JSON."""
    saccade, tiled = (rows[name] for name in MODELS)
    train = f"train_{args.train_batch}"
    print(f"\nTable 1 at {args.size}² on this machine ({os.cpu_count()} CPUs)")
    header = f"{'':<24}{'parameters':>12}"
    header += "".join(f"{f'images/s b{b}':>14}" for b in args.batches)
    header += f"{f's/step b{args.train_batch}':>12}{'infer MiB':>11}{'train MiB':>11}"
    print(header)
    for name, measured in rows.items():
        last = measured[f"infer_{args.batches[-1]}"]
        line = f"{name:<24}{last['parameters'] / 1e6:>11.2f}M"
        line += "".join(f"{measured[f'infer_{b}']['images_per_s']:>14.2f}" for b in args.batches)
        line += f"{measured[train]['seconds_per_batch']:>12.2f}"
        line += f"{last['working_mib']:>11.0f}{measured[train]['working_mib']:>11.0f}"
        print(line)
    print("\nthe paper (2528², batch 160, GPUs):")
    for name, figures in PAPER.items():
        print(f"  {name:<24}" + ", ".join(f"{k} {v}" for k, v in figures.items()))
    ratios = {
        f"speedup_b{b}": saccade[f"infer_{b}"]["images_per_s"] / tiled[f"infer_{b}"]["images_per_s"]
        for b in args.batches
    }
    ratios["train_step_speedup"] = (
        tiled[train]["seconds_per_batch"] / saccade[train]["seconds_per_batch"]
    )
    big = f"infer_{args.batches[-1]}"
    ratios["inference_memory_ratio"] = saccade[big]["working_mib"] / tiled[big]["working_mib"]
    ratios["train_memory_ratio"] = saccade[train]["working_mib"] / tiled[train]["working_mib"]
    speedups = ", ".join(
        f"inference {ratios[f'speedup_b{b}']:.1f}× faster at batch {b}" for b in args.batches
    )
    print(
        f"\nsaccade model against the tiled ResNet-18: {speedups}, a training step "
        f"{ratios['train_step_speedup']:.1f}× faster; working memory "
        f"{100 * ratios['inference_memory_ratio']:.1f} % of the baseline's in inference, "
        f"{100 * ratios['train_memory_ratio']:.1f} % in training"
    )
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k not in ("json", "worker")}
        document = {"settings": settings, "measured": rows, "ratios": ratios, "paper": PAPER}
        args.json.write_text(json.dumps(document, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
