"""The StarCraft II recorder without the game: pysc2 is not installed here, so it must say so."""

import importlib.util

import numpy as np
import pytest

from varsac.data.starcraft.layout import CSV_COLUMNS, CSV_NAME, frame_paths, write_frames_csv
from varsac.data.starcraft.recorder import draw_counts, read_recorded, record_scenes
from varsac.errors import ConfigError

needs_no_pysc2 = pytest.mark.skipif(
    importlib.util.find_spec("pysc2") is not None, reason="pysc2 is installed"
)


@needs_no_pysc2
def test_without_pysc2_says_what_to_install_and_writes_nothing(tmp_path):
    dst = tmp_path / "recorded"
    with pytest.raises(ConfigError) as raised:
        record_scenes(dst, 2)
    message = str(raised.value)
    assert "pip install 'varsac[sc2]'" in message
    assert "varsac data starcraft" in message
    assert not dst.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"n": 0}, "^n must be at least 1, got 0"),
        ({"max_count": -1}, "max_count=-1"),
        ({"max_count": 23}, "max_count=23"),
        ({"minimap_size": 0}, "minimap_size must be at least 1, got 0"),
        ({"frame_size": 32}, "frame_size=32"),
        ({"step_mul": 0}, "step_mul must be at least 1, got 0"),
    ],
)
def test_bad_arguments_are_named(tmp_path, arguments, named):
    arguments = {"n": 2} | arguments
    with pytest.raises(ConfigError, match=named):
        record_scenes(tmp_path, **arguments)
    assert list(tmp_path.iterdir()) == []


def test_counts_are_reproducible_and_within_range():
    drawn = [draw_counts(np.random.default_rng([0, index]), 22) for index in range(200)]
    again = [draw_counts(np.random.default_rng([0, index]), 22) for index in range(200)]
    assert drawn == again
    marines = np.array([counts["marine_count"] for counts in drawn])
    assert marines.min() >= 0 and marines.max() <= 22
    assert np.median(marines) < 11  # skewed towards few units
    none = [draw_counts(np.random.default_rng([0, index]), 0) for index in range(5)]
    assert all(set(counts.values()) == {0} for counts in none)


def test_resume_keeps_rows_of_frames_whose_images_exist(tmp_path):
    rows = {}
    for index in range(3):
        frame, minimap = frame_paths(index)
        rows[index] = {
            "fullscreen_img": frame,
            "minimap_img": minimap,
            "marine_count": index,
            "marauder_count": 0,
            "siegetank_count": 1,
        }
        if index != 1:  # frame 1 lost its images: it is recorded again
            for path in (frame, minimap):
                (tmp_path / path).parent.mkdir(exist_ok=True)
                (tmp_path / path).write_bytes(b"png")
    write_frames_csv(tmp_path, (rows[i] for i in sorted(rows)))

    header = (tmp_path / CSV_NAME).read_text().splitlines()[0]
    assert header == ",".join(CSV_COLUMNS)
    assert frame_paths(7) == ("fullscreen/000007.png", "minimap/000007.png")
    kept = read_recorded(tmp_path, 3)
    assert sorted(kept) == [0, 2]
    assert kept[2]["marine_count"] == "2"
    assert sorted(read_recorded(tmp_path, 1)) == [0]
    assert read_recorded(tmp_path / "empty", 3) == {}
