"""Learning curve: test accuracy (and the task's other metrics) against training wall-clock time.

Trains each experiment for a fixed wall-clock budget on this machine and
evaluates on the whole test split at regular intervals of training time (the
evaluations themselves are not counted). A run is the experiment's own: its
``trainer.max_epochs`` (which a learning-rate schedule spans) ends it if the
budget does not first. Prints a table, writes JSON; with ``--pictures DIR``, where
a saccade model looked on the first test samples at each evaluation
(``DIR/<experiment>_step<step>.png``, as ``varsac fit`` draws them each epoch).

    python benchmarks/learning_curve.py --minutes 30 --every 2.5 \
        --experiments cluttered_mnist cnn_cluttered_mnist --json curve.json
"""

import argparse
import json
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import lightning as L
import torch
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback

from records import machine  # benchmarks/, on the path of a script run from it
from varsac.callbacks import PICTURED_SAMPLES, first_samples, saccade_pictures
from varsac.files import write_png_atomically
from varsac.models.saccades import Saccading
from varsac.train import instantiate_data_and_model
from varsac.viz import draw_saccades


class EvaluateOnTheClock(Callback):
    """Every ``every`` seconds of training, test on the whole test split (and draw the
    saccades of its first samples into ``pictures``, ``name``'d); stop at ``budget``.
    Each point of ``curve`` records the training minutes before it and the minutes its
    test took, so a model's cost at inference is measured beside its accuracy."""

    def __init__(
        self,
        datamodule: L.LightningDataModule,
        every: float,
        budget: float,
        pictures: Path | None = None,
        name: str = "",
    ) -> None:
        self.datamodule, self.every, self.budget = datamodule, every, budget
        self.pictures, self.name = pictures, name
        self.trained = 0.0  # seconds spent training, evaluations excluded
        self.curve: list[dict[str, float]] = []

    def on_train_batch_start(
        self, trainer: L.Trainer, module: L.LightningModule, batch: dict, batch_idx: int
    ) -> None:
        self.started = time.perf_counter()

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        module: L.LightningModule,
        outputs: object,
        batch: dict,
        batch_idx: int,
    ) -> None:
        before = self.trained
        self.trained += time.perf_counter() - self.started
        if self.trained // self.every > before // self.every or self.trained >= self.budget:
            step, evaluating = trainer.global_step, time.perf_counter()
            metrics = self.evaluate(module, step)
            point = {
                "minutes": self.trained / 60,
                "step": step,
                **metrics,
                "test_minutes": (time.perf_counter() - evaluating) / 60,
            }
            self.curve.append(point)
            print(
                f"  {point['minutes']:6.2f} min  step {point['step']:6d}  "
                f"test accuracy {point['accuracy']:.4f}  "
                f"({point['test_minutes']:.2f} min to test)",
                flush=True,
            )
        if self.trained >= self.budget:
            trainer.should_stop = True

    @torch.no_grad()
    def evaluate(self, module: L.LightningModule, step: int) -> dict[str, float]:
        was_training = module.training
        module.eval()
        metrics = module.task.metrics().to(module.device)
        for index, batch in enumerate(self.datamodule.test_dataloader()):
            if index == 0 and self.pictures is not None and isinstance(module, Saccading):
                self.draw(module, first_samples(batch, PICTURED_SAMPLES), step)
            batch = {
                k: v.to(module.device) if isinstance(v, torch.Tensor) else v
                for k, v in batch.items()
            }  # pyramid TIFFs stay as they are
            _, log_probs, _ = module.objective(batch, sample=False)
            metrics.update(module.task.predict(log_probs), batch["target"].long())
        module.train(was_training)
        return {k: float(v) for k, v in metrics.compute().items()}

    def draw(self, module: Saccading, samples: dict, step: int) -> None:
        """Where ``module`` looks on ``samples`` at ``step``, to
        ``pictures/<name>_step<step>.png``."""
        names = getattr(self.datamodule, "class_names", None)
        sheet = draw_saccades(saccade_pictures(module, samples, names))
        path = self.pictures / f"{self.name}_step{step:06d}.png"
        write_png_atomically(path, sheet)
        print(f"  {self.trained / 60:6.2f} min  saccades: {path}", flush=True)


def run(
    experiment: str, minutes: float, every: float, overrides: list[str], pictures: Path | None
) -> dict:
    with initialize_config_module("varsac.conf", version_base="1.3"):
        cfg = compose(
            "fit", overrides=[f"experiment={experiment}", *overrides], return_hydra_config=True
        )
    with TemporaryDirectory() as run_dir:
        cfg.hydra.runtime.output_dir = run_dir
        HydraConfig.instance().set_config(cfg)
        L.seed_everything(cfg.seed, workers=True)
        datamodule, model = instantiate_data_and_model(cfg)
        datamodule.prepare_data()
        datamodule.setup("test")
        clock = EvaluateOnTheClock(datamodule, every * 60, minutes * 60, pictures, experiment)
        trainer = instantiate(
            cfg.trainer,
            callbacks=[clock],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
        )
        print(
            f"{experiment}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M "
            f"parameters, {minutes} min of training",
            flush=True,
        )
        trainer.fit(model, datamodule=datamodule)
    return {
        "experiment": experiment,
        "overrides": overrides,
        "parameters": sum(p.numel() for p in model.parameters()),
        "curve": clock.curve,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiments", nargs="+", default=["cluttered_mnist"])
    parser.add_argument("--minutes", type=float, default=30.0, help="training budget per run")
    parser.add_argument("--every", type=float, default=2.5, help="minutes between evaluations")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--pictures", type=Path, help="draw the saccades here at each evaluation")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every experiment")
    args = parser.parse_args()
    measured_on = machine()
    runs = [
        run(e, args.minutes, args.every, args.overrides, args.pictures) for e in args.experiments
    ]
    print(f"\ntest accuracy against training time ({measured_on})")
    width = max(len(r["experiment"]) for r in runs) + 2
    header = "minutes".rjust(8) + "".join(f"{r['experiment']:>{width}}" for r in runs)
    print(header)
    for i in range(max(len(r["curve"]) for r in runs)):
        cells = [
            f"{r['curve'][i]['accuracy']:>{width}.4f}" if i < len(r["curve"]) else " " * width
            for r in runs
        ]
        minutes = next(r["curve"][i]["minutes"] for r in runs if i < len(r["curve"]))
        print(f"{minutes:8.1f}" + "".join(cells))
    if args.json:
        args.json.write_text(json.dumps({"machine": measured_on, "runs": runs}, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
