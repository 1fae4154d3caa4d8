"""The ablation sweeps and the launchers: what they compose to, and real runs where they can run."""

from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_module
from hydra.utils import get_class
from omegaconf import OmegaConf

from conftest import SMALL, varsac


def composed(*overrides: str) -> OmegaConf:
    with initialize_config_module("varsac.conf", version_base="1.3"):
        return compose("fit", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize(
    ("sweep", "swept", "runs"),
    [
        ("proxy_noise", "data.proxy_noise", 6 * 5),
        ("variance_ablation", "model.vrnn.fixed_variance", 8 * 5),
    ],
)
def test_each_ablation_is_a_sweep_of_five_seeds(sweep: str, swept: str, runs: int) -> None:
    cfg = composed(f"sweep={sweep}")
    params = cfg.hydra.sweeper.params
    assert params.seed == "range(5)" and params.experiment == "cluttered_mnist"
    values = str(params[swept]).split(",")
    assert len(values) * 5 == runs
    assert cfg.name == sweep  # the sweep goes to outputs/<sweep>/multirun/<time>


def test_the_variance_ablation_uses_the_noisiest_proxy_of_the_noise_sweep() -> None:
    noise_levels = composed("sweep=proxy_noise").hydra.sweeper.params["data.proxy_noise"]
    ablation = composed("sweep=variance_ablation").hydra.sweeper.params
    assert float(ablation["data.proxy_noise"]) == max(map(float, noise_levels.split(",")))
    # the learnt variance first, as the reference, then fixed variances from small to large
    learnt, *fixed = ablation["model.vrnn.fixed_variance"].split(",")
    variances = [float(v) for v in fixed]
    assert learnt == "null" and variances == sorted(set(variances)) and variances[0] > 0


@pytest.mark.slow
def test_a_sweep_runs_with_overrides_on_top(tmp_path: Path, mnist_dir: Path) -> None:
    """Command-line values replace the sweep's: one seed, two variances, two runs."""
    varsac(
        "fit", "-m", "sweep=variance_ablation", *SMALL[1:], "seed=3",
        "model.vrnn.fixed_variance=null,0.9", "trainer.fast_dev_run=true",
        cwd=tmp_path, data_dir=mnist_dir,
    )  # fmt: skip
    (sweep,) = (tmp_path / "outputs" / "variance_ablation" / "multirun").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    overrides = [yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()) for job in jobs]
    assert len(overrides) == 2
    for job_overrides, variance in zip(overrides, ["null", "0.9"], strict=True):
        assert {"experiment=cluttered_mnist", "data.proxy_noise=0.5", "seed=3"} <= set(
            job_overrides
        )
        assert f"model.vrnn.fixed_variance={variance}" in job_overrides
    config = yaml.safe_load((jobs[1] / ".hydra" / "config.yaml").read_text())
    assert config["model"]["vrnn"]["fixed_variance"] == 0.9
    assert config["data"]["proxy_noise"] == 0.5 and config["data"]["train_size"] == 200


def test_the_slurm_launcher_composes_with_nodes_gpus_partition_and_time() -> None:
    cfg = composed(
        "launcher=slurm", "slurm.partition=gpu", "slurm.nodes=2", "slurm.gpus_per_node=4",
        "slurm.time_minutes=720",
    )  # fmt: skip
    launcher = cfg.hydra.launcher
    assert get_class(launcher._target_).__name__ == "SlurmLauncher"  # the plugin is installed
    assert (launcher.partition, launcher.nodes, launcher.timeout_min) == ("gpu", 2, 720)
    assert launcher.gpus_per_node == launcher.tasks_per_node == 4  # one rank per GPU
    trainer = cfg.trainer
    assert (trainer.strategy, trainer.accelerator, trainer.devices, trainer.num_nodes) == (
        "ddp", "gpu", 4, 2,
    )  # fmt: skip


@pytest.mark.slow
def test_the_parallel_launcher_runs_jobs_in_separate_processes(
    tmp_path: Path, mnist_dir: Path
) -> None:
    result = varsac(
        "fit", "-m", "launcher=parallel", *SMALL, "trainer.fast_dev_run=true", "seed=0,1",
        cwd=tmp_path, data_dir=mnist_dir,
    )  # fmt: skip
    assert "Joblib.Parallel" in result.stdout + result.stderr
    (sweep,) = (tmp_path / "outputs" / "cluttered_mnist" / "multirun").iterdir()
    for job in ("0", "1"):
        assert (sweep / job / "results.json").is_file()
