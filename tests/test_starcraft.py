"""StarCraft II marine counting: the datamodule over predictions.csv, its balanced sampler, the
counting metrics, and the CLI (``varsac data starcraft``, ``varsac fit experiment=starcraft``)."""

import csv
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import varsac
from varsac.data.starcraft.dataset import StarCraftDataModule
from varsac.metrics import BalancedAccuracy
from varsac.pyramid import PyramidTIFF
from varsac.tasks import Counting


def write_frames(
    root: Path, counts: list[int], size: int = 96, split: list[str] | None = None
) -> Path:
    """A recorded-style folder: frame and minimap PNGs (noise whose mean encodes the row) and
    predictions.csv with marine counts ``counts`` and a marauder_count column."""
    rng = np.random.default_rng(0)
    (root / "fullscreen").mkdir(parents=True)
    (root / "minimap").mkdir()
    rows = []
    for index, count in enumerate(counts):
        frame = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(frame).save(root / "fullscreen" / f"{index:06d}.png")
        minimap = np.full((64, 64, 3), index % 256, np.uint8)
        Image.fromarray(minimap).save(root / "minimap" / f"{index:06d}.png")
        row = {
            "fullscreen_img": f"fullscreen/{index:06d}.png",
            "minimap_img": f"minimap/{index:06d}.png",
            "marine_count": count,
            "marauder_count": index % 5,
        }
        if split is not None:
            row["split"] = split[index]
        rows.append(row)
    with (root / "predictions.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def skewed_counts(n: int, seed: int = 0) -> list[int]:
    """Counts 0..22 with frequencies falling like a recorded game's (many small, few large)."""
    rng = np.random.default_rng(seed)
    return [min(22, int(c)) for c in rng.geometric(0.15, n) - 1]


def datamodule(root: Path, tmp_path: Path, **kwargs: object) -> StarCraftDataModule:
    data = StarCraftDataModule(str(root), str(tmp_path / "pyramids"), batch_size=8, **kwargs)
    data.prepare_data()
    return data


def test_frames_over_22_marines_are_dropped_and_the_other_counts_kept(tmp_path: Path) -> None:
    root = write_frames(tmp_path / "sc2", [0, 5, 22, 23, 40, 3, 1, 2, 4, 6])
    data = datamodule(root, tmp_path, val=0.2, test=0.2)
    data.setup(None)
    kept = torch.cat([data.datasets[s].targets for s in ("train", "val", "test")])
    assert kept.tolist() == [0, 5, 22, 3, 1, 2, 4, 6] and data.num_classes == 23
    assert data.datasets["train"].unit_counts["marauder_count"].tolist() == [0, 1, 2, 0]


def test_without_a_split_column_the_split_is_contiguous_in_csv_order(tmp_path: Path) -> None:
    root = write_frames(tmp_path / "sc2", [1] * 20)
    data = datamodule(root, tmp_path, val=0.1, test=0.2)
    data.setup(None)
    numbers = {
        split: [int(image.path.stem) for image in data.datasets[split].images]
        for split in ("train", "val", "test")
    }
    assert numbers == {"train": list(range(14)), "val": [14, 15], "test": list(range(16, 20))}


def test_a_split_column_is_used(tmp_path: Path) -> None:
    splits = ["test", "train", "val", "train", "train", "test"]
    root = write_frames(tmp_path / "sc2", [1, 2, 3, 4, 5, 6], split=splits)
    data = datamodule(root, tmp_path)
    data.setup(None)
    assert data.datasets["test"].targets.tolist() == [1, 6]
    assert data.datasets["val"].targets.tolist() == [3]


def test_batches_hold_pyramids_minimaps_and_counts(tmp_path: Path) -> None:
    root = write_frames(tmp_path / "sc2", list(range(10)))
    data = datamodule(root, tmp_path, val=0.2, test=0.2)
    data.setup("fit")
    batch = next(iter(data.val_dataloader()))
    first, _ = batch["image"]
    assert isinstance(first, PyramidTIFF) and first.levels[0] == (96, 96)
    assert batch["proxy"].shape == (2, 3, 64, 64)
    assert torch.allclose(batch["proxy"][:, 0, 0, 0], torch.tensor([6, 7]) / 255)
    assert batch["target"].tolist() == [6, 7]


def test_the_training_sampler_balances_the_counts(tmp_path: Path) -> None:
    counts = skewed_counts(600)
    root = write_frames(tmp_path / "sc2", counts, size=32)
    data = datamodule(root, tmp_path)
    data.setup("fit")
    targets = data.datasets["train"].targets
    natural = Counter(targets.tolist())
    assert natural[0] > 2 * natural[10]  # the data are skewed
    loader, drawn = data.train_dataloader(), Counter()
    for _ in range(40):  # epochs
        drawn.update(torch.cat([batch["target"] for batch in loader]).tolist())
    frequencies = np.array([drawn[k] for k in sorted(natural)]) / sum(drawn.values())
    uniform = 1 / len(natural)
    assert np.abs(frequencies / uniform - 1).max() < 0.25


def test_validation_and_test_keep_the_natural_distribution(tmp_path: Path) -> None:
    root = write_frames(tmp_path / "sc2", skewed_counts(120), size=32)
    data = datamodule(root, tmp_path)
    data.setup(None)
    for split, loader in (("val", data.val_dataloader()), ("test", data.test_dataloader())):
        seen = torch.cat([batch["target"] for batch in loader])
        assert seen.tolist() == data.datasets[split].targets.tolist()  # each frame once, in order


def test_without_balancing_training_shuffles_uniformly(tmp_path: Path) -> None:
    root = write_frames(tmp_path / "sc2", skewed_counts(40), size=32)
    data = datamodule(root, tmp_path, balance_train=False)
    data.setup("fit")
    seen = torch.cat([batch["target"] for batch in data.train_dataloader()])
    assert sorted(seen.tolist()) == sorted(data.datasets["train"].targets.tolist())


def test_frames_are_converted_once_and_again_when_they_change(tmp_path: Path) -> None:
    root = write_frames(tmp_path / "sc2", [1, 2, 3, 4])
    data = datamodule(root, tmp_path, val=0.25, test=0.25)
    pyramids = sorted(data.cache_dir.rglob("*.tif"))
    assert len(pyramids) == 4
    before = {p: p.stat().st_mtime_ns for p in pyramids}
    data.prepare_data()
    assert {p: p.stat().st_mtime_ns for p in pyramids} == before
    changed = root / "fullscreen" / "000002.png"
    os.utime(changed, ns=(before[pyramids[2]] + 10**9, before[pyramids[2]] + 10**9))
    data.prepare_data()
    after = {p: p.stat().st_mtime_ns for p in pyramids}
    assert [after[p] != before[p] for p in pyramids] == [False, False, True, False]


def test_an_unreadable_frame_is_left_out(tmp_path: Path) -> None:
    root = write_frames(tmp_path / "sc2", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    (root / "fullscreen" / "000001.png").write_bytes(b"not a png")
    data = datamodule(root, tmp_path, val=0.2, test=0.2)
    data.setup("fit")
    assert data.datasets["train"].targets.tolist() == [1, 3, 4, 5, 6]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "no predictions.csv in"),
        ("fullscreen_img,marine_count\na.png,1\n", r"lacks the column\(s\) \['minimap_img'\]"),
        ("fullscreen_img,minimap_img,marine_count\na.png,b.png,many\n", "line 2"),
    ],
)
def test_a_bad_folder_is_named(tmp_path: Path, text: str | None, message: str) -> None:
    if text is not None:
        (tmp_path / "predictions.csv").write_text(text)
    with pytest.raises((FileNotFoundError, ValueError), match=message):
        StarCraftDataModule(str(tmp_path), str(tmp_path / "pyramids"))


def test_counting_metrics() -> None:
    predicted, true = torch.tensor([0, 3, 5, 3, 9]), torch.tensor([1, 3, 9, 3, 9])
    metrics = Counting(23).metrics()
    metrics.update(predicted, true)
    values = {k: float(v) for k, v in metrics.compute().items()}
    # recall per true class: 1 → 0/1, 3 → 2/2, 9 → 1/2
    assert values == pytest.approx(
        {"accuracy": 3 / 5, "balanced_accuracy": (0 + 1 + 0.5) / 3, "count_mae": (1 + 4) / 5}
    )
    balanced = BalancedAccuracy(4)
    balanced.update(torch.tensor([0, 0, 0]), torch.tensor([0, 0, 1]))
    assert float(balanced.compute()) == pytest.approx(0.5)  # classes 2, 3 absent: not averaged


@pytest.mark.slow
def test_generate_then_fit_starcraft_from_the_command_line(tmp_path: Path) -> None:
    scenes = tmp_path / "scenes"
    made = varsac(
        "data", "starcraft", f"dst={scenes}", "n=24", "frame_size=256", "seed=3", cwd=tmp_path
    )
    assert "varsac data starcraft finished" in made.stdout + made.stderr
    assert len((scenes / "predictions.csv").read_text().splitlines()) == 25
    fit = varsac(
        "fit", "experiment=starcraft", f"data.root={scenes}", "data.batch_size=4",
        "model.crop_classifier.channels=[8,16]", "trainer.fast_dev_run=true", cwd=tmp_path,
    )  # fmt: skip
    assert "val/count_mae" in fit.stdout and "val/balanced_accuracy" in fit.stdout


@pytest.mark.slow
def test_recording_without_the_game_says_what_is_missing(tmp_path: Path) -> None:
    result = varsac(
        "data", "starcraft", "source=game", f"dst={tmp_path / 'rec'}", "n=2", cwd=tmp_path,
        check=False,
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "pip install 'varsac[sc2]'" in result.stderr
