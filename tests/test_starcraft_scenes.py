"""Synthetic StarCraft scenes: the files on disk, the labels against what is drawn, resuming."""

import csv
import itertools
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import rerun_after_a_kill
from varsac.data.generation import Generated
from varsac.data.starcraft.layout import CSV_COLUMNS, MAX_COUNT, UNIT_TYPES
from varsac.data.starcraft.scenes import (
    MINIMAP_UNIT_COLOUR,
    SceneLayout,
    Unit,
    generate_scenes,
    render_scene,
    scene_layout,
    summary,
)
from varsac.errors import ConfigError

FRAME = 256  # frame side in these tests (1024 in the paper)
N = 6
DIAMETERS_AT_1024 = {"marine": (14, 18), "marauder": (22, 26), "siegetank": (36, 44)}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Generated]:
    """N frames of FRAME² (minimaps 64²) from seed 0, drawn by two processes."""
    dst = tmp_path_factory.mktemp("scenes")
    return dst, generate_scenes(dst, N, seed=0, workers=2, frame_size=FRAME)


def read_csv(dst: Path) -> tuple[list[str], list[dict[str, str]]]:
    with (dst / "predictions.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def files_of(dst: Path) -> dict[str, bytes]:
    """Every file under ``dst`` but the settings, by path relative to it."""
    return {
        path.relative_to(dst).as_posix(): path.read_bytes()
        for path in sorted(dst.rglob("*"))
        if path.is_file() and path.name != "scenes.json"
    }


def minimap_pixel(unit: Unit, frame_size: int, minimap_size: int) -> tuple[int, int]:
    """(row, column) of the minimap pixel that ``unit``'s centre falls in."""
    scale = minimap_size / frame_size
    return int(unit.y * scale), int(unit.x * scale)


def unit_pixels(minimap: np.ndarray) -> np.ndarray:
    """bool (m, m): where the minimap shows a unit."""
    return (minimap == MINIMAP_UNIT_COLOUR).all(axis=-1)


def test_the_csv_lists_every_frame_and_its_two_images(
    generated: tuple[Path, Generated],
) -> None:
    dst, scenes = generated
    assert (scenes.generated, scenes.already_done) == (N, 0)
    columns, rows = read_csv(dst)
    assert tuple(columns) == CSV_COLUMNS
    assert len(rows) == N
    for index, row in enumerate(rows):
        assert row["fullscreen_img"] == f"fullscreen/{index:06d}.png"
        assert row["minimap_img"] == f"minimap/{index:06d}.png"
        for column, size in (("fullscreen_img", FRAME), ("minimap_img", 64)):
            with Image.open(dst / row[column]) as image:
                assert image.format == "PNG" and image.mode == "RGB"
                assert image.size == (size, size)
    assert [{k: str(v) for k, v in row.items()} for row in scenes.rows] == rows


def test_the_same_seed_gives_the_same_files_whatever_the_workers(
    generated: tuple[Path, Generated], tmp_path: Path
) -> None:
    dst, _ = generated
    generate_scenes(tmp_path / "again", N, seed=0, workers=1, frame_size=FRAME)
    assert files_of(tmp_path / "again") == files_of(dst)
    generate_scenes(tmp_path / "other", 2, seed=1, workers=1, frame_size=FRAME)
    for path, content in files_of(tmp_path / "other").items():
        if path.endswith(".png"):
            assert content != (dst / path).read_bytes(), path


def test_the_csv_counts_are_the_units_of_each_layout(
    generated: tuple[Path, Generated],
) -> None:
    dst, _ = generated
    _, rows = read_csv(dst)
    for index, row in enumerate(rows):
        layout = scene_layout(0, index, FRAME)
        for kind in UNIT_TYPES:
            drawn = sum(unit.kind == kind for unit in layout.units)
            assert int(row[f"{kind}_count"]) == layout.count(kind) == drawn


@pytest.mark.parametrize("frame_size", [FRAME, 1024])
def test_units_lie_inside_the_frame_apart_and_of_their_size(frame_size: int) -> None:
    scale = frame_size / 1024
    for index in range(20):
        units = scene_layout(3, index, frame_size).units
        for unit in units:
            low, high = DIAMETERS_AT_1024[unit.kind]
            assert low * scale / 2 <= unit.radius <= high * scale / 2
            assert unit.radius <= unit.x <= frame_size - unit.radius
            assert unit.radius <= unit.y <= frame_size - unit.radius
        for first, second in itertools.combinations(units, 2):
            gap = np.hypot(first.x - second.x, first.y - second.y)
            assert gap >= 0.8 * (first.radius + second.radius)


def test_count_of_an_unknown_kind_is_an_error() -> None:
    with pytest.raises(ValueError, match="marines"):
        scene_layout(0, 0).count("marines")


def test_every_unit_counted_is_drawn() -> None:
    frame_size = 512
    layout = next(
        layout
        for layout in (scene_layout(1, index, frame_size) for index in range(100))
        if all(0 < layout.count(kind) < 6 for kind in UNIT_TYPES)
    )
    frame, _ = render_scene(layout, seed=1, frame_size=frame_size)
    for removed, unit in enumerate(layout.units):
        others = layout.units[:removed] + layout.units[removed + 1 :]
        without, _ = render_scene(SceneLayout(layout.index, others), seed=1, frame_size=frame_size)
        reach = max(1, int(unit.radius / 2))
        rows = slice(int(unit.y) - reach, int(unit.y) + reach + 1)
        columns = slice(int(unit.x) - reach, int(unit.x) + reach + 1)
        changed = (frame[rows, columns] != without[rows, columns]).any(axis=-1)
        assert changed.mean() > 0.5, unit


def test_the_minimap_shows_every_unit_and_nothing_else() -> None:
    for frame_size, minimap_size in ((FRAME, 64), (1024, 64), (FRAME, 32)):
        for index in range(8):
            layout = scene_layout(4, index, frame_size)
            frame, minimap = render_scene(layout, 4, frame_size, minimap_size)
            assert frame.shape == (frame_size, frame_size, 3) and frame.dtype == np.uint8
            assert minimap.shape == (minimap_size, minimap_size, 3) and minimap.dtype == np.uint8
            marked = unit_pixels(minimap)
            centres = [minimap_pixel(unit, frame_size, minimap_size) for unit in layout.units]
            for row, column in centres:
                assert marked[row, column]
            # Every marked pixel is next to some unit's centre pixel (a 2×2 square at most).
            for row, column in zip(*np.nonzero(marked), strict=True):
                assert any(abs(row - r) <= 1 and abs(column - c) <= 1 for r, c in centres)


def test_a_frame_without_units_has_no_unit_on_its_minimap() -> None:
    empty = SceneLayout(7, ())
    assert all(empty.count(kind) == 0 for kind in UNIT_TYPES)
    _, minimap = render_scene(empty, seed=0, frame_size=FRAME)
    assert unit_pixels(minimap).sum() == 0
    assert minimap.max() < 255  # the darkened terrain never reaches the units' colour


def test_counts_are_skewed_towards_few_units() -> None:
    layouts = [scene_layout(11, index, FRAME) for index in range(2000)]
    counts = np.array([[layout.count(kind) for kind in UNIT_TYPES] for layout in layouts])
    assert counts.min() >= 0 and counts.max() <= MAX_COUNT
    frequency = np.bincount(counts.ravel(), minlength=MAX_COUNT + 1)
    assert frequency.argmax() == 0
    assert (counts >= 15).any(axis=0).all()  # many units still occur, for every type
    by_range = [frequency[low : low + 5].sum() for low in range(0, 20, 5)]
    assert by_range == sorted(by_range, reverse=True)
    capped = [scene_layout(0, index, FRAME, max_count=3) for index in range(200)]
    assert max(len(layout.units) for layout in capped) <= 3 * len(UNIT_TYPES)
    assert all(layout.count(kind) <= 3 for layout in capped for kind in UNIT_TYPES)


def test_a_rerun_draws_only_the_missing_frames(
    generated: tuple[Path, Generated], tmp_path: Path
) -> None:
    dst = tmp_path / "scenes"
    scenes = rerun_after_a_kill(
        generated[0],
        dst,
        "fullscreen/000002.png",
        lambda dst: generate_scenes(dst, N, seed=0, workers=2, frame_size=FRAME),
    )
    assert (scenes.generated, scenes.already_done) == (1, N - 1)

    more = generate_scenes(dst, N + 2, seed=0, workers=2, frame_size=FRAME)
    assert (more.generated, more.already_done) == (2, N)
    _, rows = read_csv(dst)
    assert len(rows) == N + 2 and all((dst / row["fullscreen_img"]).is_file() for row in rows)


@pytest.mark.parametrize(
    ("setting", "value"),
    [("seed", 1), ("frame_size", 512), ("minimap_size", 32), ("max_count", 10)],
)
def test_frames_are_not_mixed_with_other_settings(
    generated: tuple[Path, Generated], tmp_path: Path, setting: str, value: int
) -> None:
    dst = tmp_path / "scenes"
    shutil.copytree(generated[0], dst)
    arguments = {"seed": 0, "frame_size": FRAME, setting: value}
    with pytest.raises(ConfigError, match=rf"{setting}: .* → {value}.*another dst"):
        generate_scenes(dst, N, **arguments)


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"n": 0}, r"^n must be at least 1"),
        ({"workers": 0}, "workers"),
        ({"frame_size": 64}, "frame_size"),
        ({"minimap_size": 4}, "minimap_size"),
        ({"frame_size": 128, "minimap_size": 256}, "minimap_size"),
        ({"max_count": 23}, "max_count"),
        ({"max_count": -1}, "max_count"),
    ],
)
def test_bad_arguments_are_named(tmp_path: Path, arguments: dict[str, int], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        generate_scenes(tmp_path / "scenes", **{"n": 1, **arguments})
    assert not (tmp_path / "scenes").exists()


def test_summary_reports_speed_and_the_marine_histogram(
    generated: tuple[Path, Generated],
) -> None:
    dst, scenes = generated
    text = summary(scenes, dst)
    marines = Counter(int(row["marine_count"]) for row in scenes.rows)
    assert f"drew {N} frame(s)" in text and "0 drawn before" in text
    assert " ".join(f"{count}:{marines[count]}" for count in sorted(marines)) in text
    for kind in UNIT_TYPES:
        assert kind in text
    assert str(dst / "predictions.csv") in text
