"""``varsac.Predictor``: the same answers as ``varsac predict``, images in memory, batches,
bad images named, and a start-up that imports no Lightning."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import varsac, write_images_to_predict
from test_predict import damaged_pyramid
from varsac import Predictor
from varsac.models.saccades import SaccadeNetwork
from varsac.predictor import ImageError
from varsac.pyramid import PyramidTIFF, write_pyramid
from varsac.viz import draw_saccades

# every test predicts with a model that a whole (small) training made first
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The images of ``write_images_to_predict``, sorted by name."""
    return write_images_to_predict(tmp_path_factory.mktemp("images"))


def boxes(glimpses: list[dict[str, float]]) -> list[float]:
    """The glimpse boxes (pixels, rounded to 0.1) as one flat list, to compare."""
    return [value for box in glimpses for value in box.values()]


@pytest.fixture(scope="module")
def predictor(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    cache = tmp_path_factory.mktemp("cache")
    return Predictor.from_checkpoint(checkpoint, device="cpu", samples=4, cache_dir=cache)


def test_the_same_answers_as_the_command_line(
    checkpoint: Path, predictor: Predictor, images: Path, tmp_path: Path
) -> None:
    varsac(
        "predict", f"ckpt_path={checkpoint}", f"input={images}", "samples=4", "batch_size=2",
        "pictures=false", "device=cpu", cwd=tmp_path, data_dir=tmp_path / "cache",
    )  # fmt: skip
    (run,) = (tmp_path / "outputs" / "predict").iterdir()
    expected = json.loads((run / "predictions.json").read_text())["predictions"]
    files = sorted(str(path) for path in images.iterdir())  # the command's order
    predicted = predictor(files, batch_size=2)
    assert [p.path for p in predicted] == files == [p["path"] for p in expected]
    for mine, theirs in zip(predicted, expected, strict=True):
        assert mine.prediction == theirs["prediction"]
        assert mine.probabilities == pytest.approx(theirs["probabilities"], abs=1e-5)
        assert mine.spreads == pytest.approx(theirs["spreads"], abs=1e-5)
        assert max(mine.spreads.values()) > 0  # four samples that differ
        assert boxes(mine.glimpses) == pytest.approx(boxes(theirs["glimpses"]), abs=0.11)
    # seeded: again the same, and the caller's random state is left alone
    torch.manual_seed(7)
    before = torch.get_rng_state()
    assert [p.probabilities for p in predictor(files, batch_size=2)] == [
        p.probabilities for p in predicted
    ]
    assert torch.equal(torch.get_rng_state(), before)


def test_an_image_in_memory_as_an_array_a_tensor_or_a_pyramid(
    predictor: Predictor, tmp_path: Path
) -> None:
    pixels = np.random.default_rng(2).integers(0, 256, (700, 500), dtype=np.uint8)
    pyramid = PyramidTIFF(write_pyramid(pixels, tmp_path / "lossless.tif"))  # deflate
    tensor = torch.from_numpy(pixels).float().div(255)[None]  # (1, H, W) in [0, 1]
    # each alone: the first of its batch, so with the same posterior samples
    (by_array,), (by_tensor,), (by_pyramid,) = (predictor(x) for x in (pixels, tensor, pyramid))
    assert by_array.path is None and by_tensor.path is None
    assert by_pyramid.path == str(tmp_path / "lossless.tif")
    for other in (by_tensor, by_pyramid):
        assert other.probabilities == pytest.approx(by_array.probabilities, abs=1e-6)
        assert other.glimpses == by_array.glimpses
    # boxes in pixels of the 500 × 700 original, one per glimpse
    assert len(by_array.glimpses) == 4
    for box in by_array.glimpses:
        assert box["left"] >= 0 and box["left"] + box["width"] <= 500.1
        assert box["top"] >= 0 and box["top"] + box["height"] <= 700.1


def test_batches_change_nothing_but_the_time(predictor: Predictor, images: Path) -> None:
    mean = Predictor(
        predictor.model, predictor.class_names, predictor.proxy_size, predictor.channels,
        device="cpu", samples=0, cache_dir=predictor.cache_dir,
    )  # fmt: skip
    files = sorted(images.iterdir())
    alone = mean(files, batch_size=1)
    together = mean(files, batch_size=3)
    for a, b in zip(alone, together, strict=True):
        assert b.probabilities == pytest.approx(a.probabilities, abs=1e-5)
        assert boxes(b.glimpses) == pytest.approx(boxes(a.glimpses), abs=0.11)
        assert a.spread == b.spread == 0  # the posterior mean alone


def test_pictures_on_request(predictor: Predictor, images: Path) -> None:
    (plain,) = predictor(images / "a.jpg")
    (drawn,) = predictor(images / "a.jpg", pictures=True)
    assert plain.picture is None and drawn.picture is not None
    window = predictor.model.cropper.window  # the trained experiment's
    assert drawn.picture.glimpses.shape == (4, 1, window, window)
    assert draw_saccades([drawn.picture]).width > 0
    assert "picture" not in drawn.record() and drawn.record()["path"] == str(images / "a.jpg")


def test_bad_images_are_named(predictor: Predictor, images: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes((images / "a.jpg").read_bytes()[:1500])
    with pytest.raises(ImageError, match=r"broken\.jpg: ") as raised:
        predictor([images / "b.png", broken])
    assert "\n" not in str(raised.value)
    with pytest.raises(ImageError, match=r"nope\.png: no such file"):
        predictor(tmp_path / "nope.png")
    with pytest.raises(ImageError, match=r"image 1 \(ndarray in memory\): .*uint8"):
        predictor([np.zeros((64, 64), np.uint8), np.zeros((64, 64), np.float32)])
    damaged = damaged_pyramid(tmp_path / "damaged.tif")
    with pytest.raises(ImageError, match=r"damaged\.tif: .*reading level"):
        predictor([images / "c.tif", damaged], batch_size=2)


def test_the_saccade_model_loads_without_lightning(checkpoint: Path) -> None:
    """A fresh process: Predictor.from_checkpoint and a prediction import neither Lightning
    nor torchmetrics, W&B or matplotlib."""
    program = (
        "import sys, numpy as np\n"
        "from varsac import Predictor\n"
        f"p = Predictor.from_checkpoint({str(checkpoint)!r}, device='cpu', samples=2)\n"
        "p(np.zeros((200, 200), np.uint8))\n"
        "print(type(p.model).__name__, *sorted(m for m in "
        "('lightning', 'torchmetrics', 'wandb', 'matplotlib') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == [SaccadeNetwork.__name__]
