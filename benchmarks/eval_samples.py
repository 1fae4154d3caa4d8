"""Accuracy and cost of averaging K posterior samples at evaluation (``model.eval_samples=K``).

A trained saccade model classifies, by default, from the one rollout of the posterior mean.
With ``eval_samples`` = K it averages the class probabilities of K sampled rollouts: K times
the glimpses, for an ensemble of where to look. This script evaluates one checkpoint, as
trained, on its validation and test splits for each K, and times each pass, so the choice of
K can be made on the validation split and its price read as a ratio to the mean's.

    python benchmarks/eval_samples.py CKPT --samples 0 2 4 8 16 --json docs/eval_samples_100.json

K = 0 is the posterior mean (the default). Rows are merged into ``--json`` by checkpoint
and K, each with the machine that measured it. Prints the table.
"""

import argparse
import time
from pathlib import Path

import lightning as L

from records import machine, merge_rows  # benchmarks/, on the path of a script run from it
from varsac.checkpoint import load_varsac_checkpoint, stored_config
from varsac.train import instantiate_data_and_model

# split: the trainer method that evaluates it, and the attribute that holds its loader
SPLITS = {"val": ("validate", "val_dataloaders"), "test": ("test", "test_dataloaders")}


def evaluate(checkpoint: Path, samples: list[int], splits: list[str]) -> list[dict]:
    """One row per K: each split's accuracy, per-class recall, NLL and seconds per image."""
    stored = load_varsac_checkpoint(checkpoint)
    cfg = stored_config(stored)
    L.seed_everything(cfg.seed, workers=True)
    datamodule, model = instantiate_data_and_model(cfg)
    model.load_state_dict(stored["state_dict"])
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    rows = []
    for k in samples:
        model.hparams.eval_samples = k
        row = {"checkpoint": str(checkpoint), "eval_samples": k}
        for split in splits:
            L.seed_everything(cfg.seed, workers=True)  # the same draws for every K's first looks
            start = time.perf_counter()
            method, loaders = SPLITS[split]
            (metrics,) = getattr(trainer, method)(model, datamodule=datamodule, verbose=False)
            seconds = time.perf_counter() - start
            size = len(getattr(trainer, loaders).dataset)
            figures = {key.split("/", 1)[1]: float(v) for key, v in metrics.items()}
            row[split] = {**figures, "images": size, "ms_per_image": 1000 * seconds / size}
        rows.append(row)
        print(row_line(row, splits), flush=True)
    return rows


def row_line(row: dict, splits: list[str]) -> str:
    cells = [f"{row['eval_samples']:>4}"]
    for split in splits:
        figures = row[split]
        cells.append(f"{figures['accuracy']:>10.4f}{figures['ms_per_image']:>10.2f}")
    return "".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--samples", type=int, nargs="+", default=[0, 2, 4, 8, 16])
    parser.add_argument("--splits", nargs="+", choices=sorted(SPLITS), default=["val", "test"])
    parser.add_argument("--json", type=Path, help="merge the rows into this file")
    args = parser.parse_args()
    measured_on = machine()
    print(f"checkpoint {args.checkpoint} ({measured_on})")
    print("   K" + "".join(f"{split + ' acc.':>10}{'ms/image':>10}" for split in args.splits))
    rows = evaluate(args.checkpoint, args.samples, args.splits)
    base = next((r for r in rows if r["eval_samples"] == 0), None)
    for row in rows:
        for split in args.splits:
            if base is not None:
                row[split]["cost_ratio"] = row[split]["ms_per_image"] / base[split]["ms_per_image"]
        row["machine"] = measured_on
    if args.json:
        merge_rows(
            args.json, "rows", rows, key=lambda row: (row["checkpoint"], row["eval_samples"])
        )
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
