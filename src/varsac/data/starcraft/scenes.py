"""Synthetic StarCraft II scenes for the marine-counting task, in the layout of the game recorder.

The game itself is not available here, so this module draws frames that look the part:

- terrain: fields of smooth value noise (several octaves each) lay patches of one earthy or
  green material on another and raise a plateau of a third, with a dark cliff face and a lit
  rim; then shading, scattered pebbles and a fine sandy grain; different in every frame;
- units of three types, each with its own shape, size and colours: marines (≈14–18 px
  across at 1024², a humanoid with shoulder pads, a gun and a bright visor, in the player
  colour), marauders (≈22–26 px, bulky, two grenade launchers) and siege tanks (≈36–44 px,
  a hull on two treads, a turret with a barrel). Unit sizes scale with the frame
  (``frame_size / 1024``). Each unit is drawn 4× larger with Pillow and box-downsampled
  (anti-aliasing), casts a soft shadow and has a bloom: its bright parts, blurred, are
  added back as a halo;
- how many of each type: independently, 0..``max_count`` with P(k) ∝ 0.88^k (many frames
  with few units, a few with many);
- where: units gather in 1–3 squads, as armies do in the battles the recorder captured;
  a squad's centre is uniform in the middle 70 % of the frame and its units are spread
  around it normally (standard deviation 40–90 px at 1024²). A unit that finds no free
  place near its squad goes anywhere free. Every unit is wholly visible and no two
  centres are closer than 0.8 × the sum of their radii;
- the minimap: the terrain downsampled and darkened, every unit (whatever its type) the
  same 2×2 square of ``MINIMAP_UNIT_COLOUR`` at its scaled position. So the minimap says
  where units are but not which are marines.

The counts written are always those of the units drawn. A frame is a function of
``(seed, index)`` alone, whichever process draws it and whatever other frames are drawn.

On disk (``generate_scenes(dst, n)``)::

    DST/predictions.csv          one row per frame, in frame order; columns CSV_COLUMNS
    DST/fullscreen/000000.png    the frame, RGB, frame_size²
    DST/minimap/000000.png       the minimap, RGB, minimap_size²
    DST/scenes.json              the settings the frames were drawn with

CSV paths are relative to DST. Every file is written atomically; a rerun draws only the
frames not on disk yet. Workers are spawned, not forked, so libvips (which encodes the
PNGs) never runs in a child forked from a parent that used its threads.
"""

import logging
import math
import os
import time
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pyvips
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from varsac.data.generation import Generated, draw_on_processes
from varsac.data.starcraft.layout import (
    CSV_NAME,
    FRAME_COLUMN,
    MAX_COUNT,
    MINIMAP_COLUMN,
    UNIT_COLUMNS,
    UNIT_TYPES,
    frame_paths,
    write_frames_csv,
)
from varsac.errors import ConfigError, check_at_least
from varsac.files import atomic_path, resume_folder

log = logging.getLogger(__name__)

# Every unit on the minimap; the darkened terrain never reaches 255 in any channel.
MINIMAP_UNIT_COLOUR = (0, 255, 0)
# Bump when the generator draws other pixels or counts for the same settings.
FORMAT_VERSION = 2  # 2: units gather in squads

SETTINGS_NAME = "scenes.json"

_REFERENCE_FRAME_SIZE = 1024  # unit sizes below are in pixels of a frame this large
_DIAMETER_RANGES = {"marine": (14.0, 18.0), "marauder": (22.0, 26.0), "siegetank": (36.0, 44.0)}
_PLACEMENT_ORDER = ("siegetank", "marauder", "marine")  # largest first: they are drawn below
_COUNT_DECAY = 0.88  # P(count = k) ∝ _COUNT_DECAY^k
_MIN_GAP = 0.8  # centres at least this × the sum of the two radii apart
_PLACEMENT_TRIES = 100  # positions tried per unit near its squad, then as many anywhere
_MAX_SQUADS = 3  # units gather in 1..3 squads, as armies do in the game's battles
_SQUAD_SPREAD = (40.0, 90.0)  # standard deviation of a squad's unit positions, px at 1024²

_MINIMAP_SQUARE = 2  # side of a unit's square on the minimap, pixels
_MINIMAP_DARKENING = 0.6  # minimap terrain = terrain × this, so at most 153 per channel
_SUPERSAMPLING = 4  # units are drawn this many times larger, then box-downsampled
_SHADOW_TABLE = [round(level * 0.6) for level in range(256)]  # shadows: 60 % dark at most
_TEAM_GLOW = 0.25  # team-coloured armour shines this much of its colour

Colour = tuple[int, int, int]
_METAL: Colour = (58, 60, 66)
_DARK_METAL: Colour = (36, 37, 40)
_PLAYER_COLOURS: tuple[Colour, ...] = (
    (225, 40, 35),  # red
    (40, 110, 255),  # blue
    (30, 200, 195),  # teal
    (150, 65, 225),  # purple
    (255, 140, 25),  # orange
    (235, 215, 40),  # yellow
    (240, 105, 200),  # pink
)
# Terrain materials (RGB, 0..1): ground, patches on it, and the plateau; each frame picks a
# biome and jitters its colours.
_BIOMES = (
    ((0.30, 0.38, 0.18), (0.46, 0.38, 0.24), (0.52, 0.47, 0.34)),  # grass, dirt, dry plateau
    ((0.50, 0.40, 0.27), (0.62, 0.54, 0.38), (0.42, 0.36, 0.30)),  # dirt, sand, rock
    ((0.22, 0.31, 0.16), (0.32, 0.36, 0.18), (0.40, 0.40, 0.34)),  # jungle, moss, stone
    ((0.34, 0.31, 0.28), (0.25, 0.23, 0.22), (0.50, 0.48, 0.44)),  # ash, basalt, stone
)
_GRAIN_DEPTH = 48  # the sandy grain darkens each pixel by up to this of 255


@dataclass(frozen=True)
class Unit:
    """One unit drawn in a frame."""

    kind: str  # one of UNIT_TYPES
    x: float  # centre, pixels of the frame
    y: float
    radius: float  # pixels; the whole sprite lies within it (its shadow and halo may not)


@dataclass(frozen=True)
class SceneLayout:
    """What frame ``index`` shows: its units, in drawing order."""

    index: int
    units: tuple[Unit, ...]

    def count(self, kind: str) -> int:
        """How many units of ``kind`` (one of UNIT_TYPES) the frame shows."""
        if kind not in UNIT_TYPES:
            raise ValueError(f"kind must be one of {UNIT_TYPES}, got {kind!r}")
        return sum(unit.kind == kind for unit in self.units)


# ---------------------------------------------------------------------- layout


def count_probabilities(max_count: int = MAX_COUNT) -> np.ndarray:
    """float64 (max_count + 1,): the probability of each count of one unit type in a frame."""
    weights = _COUNT_DECAY ** np.arange(max_count + 1)
    return weights / weights.sum()


def scene_layout(
    seed: int, index: int, frame_size: int = 1024, max_count: int = MAX_COUNT
) -> SceneLayout:
    """The units of frame ``index``, drawn from ``np.random.default_rng([seed, index])`` only,
    so a frame depends neither on which process draws it nor on the other frames.

    A unit that finds no free place in ``_PLACEMENT_TRIES`` tries is left out (only in
    frames far too small for their units), so the counts are always those of the units.
    """
    rng = np.random.default_rng([seed, index])
    counts = rng.choice(max_count + 1, size=len(UNIT_TYPES), p=count_probabilities(max_count))
    scale = frame_size / _REFERENCE_FRAME_SIZE
    squads = rng.integers(1, _MAX_SQUADS + 1)
    squad_centres = rng.uniform(0.15, 0.85, size=(squads, 2)) * frame_size
    squad_spreads = rng.uniform(*_SQUAD_SPREAD, size=squads) * scale
    centres = np.empty((0, 2))
    radii = np.empty(0)
    units = []
    for kind in _PLACEMENT_ORDER:
        low, high = _DIAMETER_RANGES[kind]
        count = counts[UNIT_TYPES.index(kind)]
        for radius in rng.uniform(low, high, size=count) * scale / 2:
            squad = rng.integers(squads)
            near = rng.normal(squad_centres[squad], squad_spreads[squad], (_PLACEMENT_TRIES, 2))
            anywhere = rng.uniform(0, frame_size, size=(_PLACEMENT_TRIES, 2))
            candidates = np.concatenate([near, anywhere]).clip(radius, frame_size - radius)
            distances = np.linalg.norm(candidates[:, None, :] - centres[None, :, :], axis=-1)
            free = (distances >= _MIN_GAP * (radius + radii)).all(axis=1)
            if not free.any():
                continue
            x, y = candidates[np.argmax(free)]
            centres = np.vstack([centres, [x, y]])
            radii = np.append(radii, radius)
            units.append(Unit(kind, float(x), float(y), float(radius)))
    return SceneLayout(index, tuple(units))


# ---------------------------------------------------------------------- terrain


def _value_noise(rng: np.random.Generator, size: int, cells: tuple[int, ...]) -> np.ndarray:
    """float32 (size, size) in [0, 1]: octaves of random grids of ``cells``² values, each
    upsampled (bicubic) to size² and weighted by 1 / its cell count, normalised."""
    total = np.zeros((size, size), np.float32)
    for octave in cells:
        grid = Image.fromarray(rng.random((octave, octave), dtype=np.float32), mode="F")
        total += np.asarray(grid.resize((size, size), Image.Resampling.BICUBIC)) / octave
    low, high = total.min(), total.max()
    return (total - low) / max(high - low, 1e-6)


def _smoothstep(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """0 below ``low``, 1 above ``high``, a smooth S between."""
    t = np.clip((values - low) / (high - low), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _terrain(rng: np.random.Generator, frame_size: int) -> tuple[Image.Image, Image.Image]:
    """The ground of a frame: RGB frame_size², and the same without grain at a quarter size.

    Colours and shading are worked out at a quarter size, upsampled (bilinear) and
    multiplied by a grain drawn at half size.
    """
    size = max(frame_size // 4, 32)
    brightness = rng.uniform(0.85, 1.15)
    ground, patch, plateau = (
        np.array(colour, np.float32) * brightness * rng.uniform(0.95, 1.05, 3).astype(np.float32)
        for colour in _BIOMES[rng.integers(len(_BIOMES))]
    )
    height = _value_noise(rng, size, (3, 5, 9))
    patches = _value_noise(rng, size, (6, 11, 21))
    detail = _value_noise(rng, size, (size // 8 + 1, size // 4 + 1, size // 2 + 1))
    level = rng.uniform(0.6, 0.75)  # the plateau: where height is above this
    raised = _smoothstep(height, level - 0.004, level + 0.004)[..., None]
    cliff_face = _smoothstep(height, level - 0.035, level) * (1 - raised[..., 0])
    rim = _smoothstep(height, level, level + 0.012) * (
        1 - _smoothstep(height, level + 0.012, level + 0.03)
    )
    low_colour = ground + (patch - ground) * _smoothstep(patches, 0.45, 0.6)[..., None]
    colour = low_colour + (plateau - low_colour) * raised
    shade = 0.7 + 0.5 * detail - 0.45 * cliff_face + 0.25 * rim
    pebbles = rng.random((size, size), dtype=np.float32)
    shade -= 0.35 * (pebbles > 0.99) - 0.15 * (pebbles < 0.006)
    quarter = Image.fromarray(np.clip(colour * shade[..., None] * 255, 0, 255).astype(np.uint8))
    frame = quarter.resize((frame_size, frame_size), Image.Resampling.BILINEAR)
    half = frame_size // 2
    grain = rng.integers(255 - _GRAIN_DEPTH, 256, (half, half), dtype=np.uint8)
    grain_image = Image.fromarray(grain).resize((frame_size, frame_size), Image.Resampling.BILINEAR)
    grain_rgb = Image.merge("RGB", (grain_image, grain_image, grain_image))
    return ImageChops.multiply(frame, grain_rgb), quarter


# ---------------------------------------------------------------------- units


class _Sprite:
    """One unit drawn ``_SUPERSAMPLING``× larger in a square canvas around its centre.

    Shapes are given in the unit's own frame: u forward, v to its right, both in units of
    its radius, turned by ``heading`` (or another angle). Two layers: ``body`` (RGBA) and
    ``glow`` (RGB, what shines: the bright parts, and dimly the team colour).
    """

    def __init__(self, unit: Unit, heading: float) -> None:
        self.half = math.ceil(unit.radius * 1.6) + 2  # room for the shadow and the halo
        self.corner = (math.floor(unit.x) - self.half, math.floor(unit.y) - self.half)
        side = 2 * self.half * _SUPERSAMPLING
        self.body = Image.new("RGBA", (side, side))
        self.glow = Image.new("RGB", (side, side))
        self.centre = (
            (self.half + unit.x - math.floor(unit.x)) * _SUPERSAMPLING,
            (self.half + unit.y - math.floor(unit.y)) * _SUPERSAMPLING,
        )
        self.radius = unit.radius
        self.heading = heading

    def _polygon(
        self,
        u: np.ndarray,
        v: np.ndarray,
        fill: Colour,
        glow: Colour | None,
        angle: float | None,
    ) -> None:
        """Fill the polygon of points (u, v) of the unit's frame turned by ``angle``."""
        angle = self.heading if angle is None else angle
        cos, sin = math.cos(angle), math.sin(angle)
        scale = self.radius * _SUPERSAMPLING
        x = self.centre[0] + scale * (u * cos - v * sin)
        y = self.centre[1] + scale * (u * sin + v * cos)
        outline = list(zip(x.tolist(), y.tolist(), strict=True))
        ImageDraw.Draw(self.body).polygon(outline, fill=(*fill, 255))
        if glow is not None:
            ImageDraw.Draw(self.glow).polygon(outline, fill=glow)

    def ellipse(
        self,
        u: float,
        v: float,
        radii: tuple[float, float],
        fill: Colour,
        glow: Colour | None = None,
        angle: float | None = None,
    ) -> None:
        """An ellipse centred at (u, v) with half-axes ``radii`` along u and v."""
        turn = np.linspace(0, 2 * math.pi, 24, endpoint=False)
        self._polygon(u + radii[0] * np.cos(turn), v + radii[1] * np.sin(turn), fill, glow, angle)

    def box(
        self,
        u: tuple[float, float],
        v: tuple[float, float],
        fill: Colour,
        glow: Colour | None = None,
        angle: float | None = None,
    ) -> None:
        """A rectangle spanning ``u`` = (back, front) and ``v`` = (left, right)."""
        corners_u, corners_v = (
            np.array([u[0], u[1], u[1], u[0]]),
            np.array([v[0], v[0], v[1], v[1]]),
        )
        self._polygon(corners_u, corners_v, fill, glow, angle)

    def paint(self, frame: Image.Image) -> None:
        """Downsample the layers and put them on ``frame`` (in place): the shadow (the
        body's outline, shifted down-right and blurred), the body, then the halo (the glow,
        blurred), added twice."""
        body = self.body.reduce(_SUPERSAMPLING)
        glow = self.glow.reduce(_SUPERSAMPLING)
        blur = ImageFilter.GaussianBlur(max(0.25 * self.radius, 0.6))
        side = 2 * self.half
        area = (*self.corner, self.corner[0] + side, self.corner[1] + side)
        shift = round(0.3 * self.radius)
        shadow_area = (area[0] + shift, area[1] + shift, area[2] + shift, area[3] + shift)
        shadow = body.getchannel("A").filter(blur).point(_SHADOW_TABLE)
        frame.paste((0, 0, 0), shadow_area, shadow)
        frame.paste(body, area, body)
        halo = glow.filter(blur)
        frame.paste(ImageChops.add(ImageChops.add(frame.crop(area), halo), halo), area)


def _tint(colour: Colour, factor: float, grey: float = 0.0) -> Colour:
    """``colour`` mixed with ``grey`` (0..1) of mid-grey, times ``factor``."""
    r, g, b = (min(255, round(((1 - grey) * c + grey * 128) * factor)) for c in colour)
    return r, g, b


def _draw_marine(sprite: _Sprite, player: Colour) -> None:
    """A marine facing +u: backpack, gun, torso, two shoulder pads, helmet, visor."""
    sprite.box((-0.75, -0.4), (-0.3, 0.3), _METAL)  # backpack
    sprite.box((0.1, 0.9), (0.15, 0.35), _DARK_METAL)  # gun
    sprite.ellipse(-0.1, 0.0, (0.5, 0.55), _tint(player, 0.55, 0.35))  # torso
    for side in (-1, 1):
        sprite.ellipse(-0.05, 0.5 * side, (0.3, 0.32), player, _tint(player, _TEAM_GLOW))
    sprite.ellipse(0.08, 0.0, (0.3, 0.3), _tint(player, 0.8, 0.3))  # helmet
    visor = (255, 205, 90)
    sprite.ellipse(0.28, 0.0, (0.1, 0.22), visor, visor)


def _draw_marauder(sprite: _Sprite, player: Colour) -> None:
    """A marauder facing +u: two grenade launchers, torso, backpack, big shoulder pads,
    helmet with a visor slit, exhaust lights."""
    for side in (-1, 1):
        sprite.box((-0.1, 0.7), (0.44 * side, 0.68 * side), _DARK_METAL)  # launcher
        sprite.box((0.56, 0.7), (0.44 * side, 0.68 * side), _METAL)  # its muzzle
    sprite.ellipse(-0.15, 0.0, (0.62, 0.66), (128, 128, 136))  # torso
    sprite.box((-0.8, -0.5), (-0.35, 0.35), _METAL)  # backpack
    for side in (-1, 1):
        sprite.ellipse(-0.78, 0.22 * side, (0.07, 0.07), (255, 150, 60), (255, 150, 60))
        pad = _tint(player, 0.9)
        sprite.ellipse(-0.1, 0.58 * side, (0.38, 0.34), pad, _tint(player, _TEAM_GLOW))
    sprite.ellipse(0.1, 0.0, (0.26, 0.26), _tint(player, 0.6, 0.4))  # helmet
    visor = (255, 95, 45)
    sprite.box((0.24, 0.34), (-0.16, 0.16), visor, visor)


def _draw_siegetank(sprite: _Sprite, player: Colour, turret: float) -> None:
    """A siege tank facing +u: two treads, hull, engine deck, headlights; the turret and
    its barrel turned by ``turret`` from the hull."""
    for side in (-1, 1):
        sprite.box((-0.7, 0.7), (0.4 * side, 0.7 * side), _DARK_METAL)  # tread
        for step in np.linspace(-0.6, 0.6, 7):
            sprite.box((step - 0.04, step + 0.04), (0.42 * side, 0.68 * side), _METAL)
    sprite.box((-0.62, 0.62), (-0.44, 0.44), (120, 118, 100))  # hull
    sprite.box((-0.62, -0.3), (-0.44, 0.44), _tint(player, 0.75), _tint(player, _TEAM_GLOW))
    for side in (-1, 1):
        sprite.ellipse(0.6, 0.3 * side, (0.05, 0.07), (255, 240, 190), (255, 240, 190))
    aim = sprite.heading + turret
    sprite.box((0.15, 0.97), (-0.07, 0.07), _DARK_METAL, angle=aim)  # barrel
    sprite.box((0.85, 0.97), (-0.1, 0.1), _METAL, angle=aim)  # muzzle brake
    sprite.ellipse(-0.05, 0.0, (0.36, 0.3), _tint(player, 0.95, 0.15), angle=aim)
    sprite.ellipse(-0.12, 0.0, (0.12, 0.12), _METAL, angle=aim)  # hatch


def _draw_unit(frame: Image.Image, unit: Unit, player: Colour, rng: np.random.Generator) -> None:
    """Draw ``unit`` on ``frame`` (in place), facing a random way."""
    sprite = _Sprite(unit, heading=rng.uniform(0, 2 * math.pi))
    if unit.kind == "marine":
        _draw_marine(sprite, player)
    elif unit.kind == "marauder":
        _draw_marauder(sprite, player)
    else:
        _draw_siegetank(sprite, player, turret=rng.uniform(-1.2, 1.2))
    sprite.paint(frame)


# ---------------------------------------------------------------------- frames


def _minimap(
    ground: Image.Image, units: tuple[Unit, ...], frame_size: int, minimap_size: int
) -> np.ndarray:
    """uint8 (minimap_size, minimap_size, 3): the ground (RGB, any size) resized and darkened,
    and a ``_MINIMAP_SQUARE``² square of ``MINIMAP_UNIT_COLOUR`` on each unit's centre
    (the pixel the centre falls in is always one of the square's)."""
    small = ground.resize((minimap_size, minimap_size), Image.Resampling.BOX)
    pixels = (np.asarray(small) * _MINIMAP_DARKENING).astype(np.uint8)
    for unit in units:
        column, row = (
            min(
                max(round(position * minimap_size / frame_size - _MINIMAP_SQUARE / 2), 0),
                minimap_size - _MINIMAP_SQUARE,
            )
            for position in (unit.x, unit.y)
        )
        pixels[row : row + _MINIMAP_SQUARE, column : column + _MINIMAP_SQUARE] = MINIMAP_UNIT_COLOUR
    return pixels


def render_scene(
    layout: SceneLayout, seed: int, frame_size: int = 1024, minimap_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """The frame, uint8 (frame_size, frame_size, 3), and the minimap, uint8 (minimap_size,
    minimap_size, 3), of ``layout`` (drawn for this ``frame_size``).

    Deterministic: the terrain comes from ``default_rng([seed, index, 1])``, the units'
    looks (player colour, headings) from ``default_rng([seed, index, 2])``.
    """
    frame, ground = _terrain(np.random.default_rng([seed, layout.index, 1]), frame_size)
    minimap = _minimap(ground, layout.units, frame_size, minimap_size)
    looks = np.random.default_rng([seed, layout.index, 2])
    player = _PLAYER_COLOURS[looks.integers(len(_PLAYER_COLOURS))]
    for unit in layout.units:
        _draw_unit(frame, unit, player, looks)
    return np.asarray(frame), minimap


def _write_png(path: Path, pixels: np.ndarray) -> None:
    """Write uint8 (H, W, 3) ``pixels`` to ``path`` as a PNG, atomically.

    libvips with the "up" row filter and light compression: about 23 ms for a 1024²
    frame, where Pillow (which tries every filter on every row) takes about 50.
    """
    png = pyvips.Image.new_from_array(pixels).pngsave_buffer(compression=2, filter="up")
    with atomic_path(path) as partial:
        partial.write_bytes(png)


# ---------------------------------------------------------------------- the set


def _csv_row(index: int, counts: tuple[int, ...]) -> dict[str, str | int]:
    fullscreen, minimap = frame_paths(index)
    return {
        FRAME_COLUMN: fullscreen,
        MINIMAP_COLUMN: minimap,
        **dict(zip(UNIT_COLUMNS, counts, strict=True)),
    }


def _layout_counts(layout: SceneLayout) -> tuple[int, ...]:
    return tuple(layout.count(kind) for kind in UNIT_TYPES)


def _render_frames(
    dst: Path, seed: int, frame_size: int, minimap_size: int, max_count: int, indices: list[int]
) -> list[tuple[int, tuple[int, ...]]]:
    """Draw frames ``indices`` (in a worker process) and write those of their PNGs that are
    missing; return their unit counts."""
    done = []
    for index in indices:
        layout = scene_layout(seed, index, frame_size, max_count)
        images = render_scene(layout, seed, frame_size, minimap_size)
        for path, pixels in zip(frame_paths(index), images, strict=True):
            if not (dst / path).is_file():
                _write_png(dst / path, pixels)
        done.append((index, _layout_counts(layout)))
    return done


def _check_arguments(
    n: int, workers: int | None, frame_size: int, minimap_size: int, max_count: int
) -> None:
    """Raise ``ConfigError`` naming the first argument ``generate_scenes`` cannot work with."""
    check_at_least(n=(n, 1), workers=(1 if workers is None else workers, 1))
    check_at_least(frame_size=(frame_size, 128))
    if not 8 <= minimap_size <= frame_size:
        raise ConfigError(
            f"minimap_size must be between 8 and frame_size={frame_size} pixels, got {minimap_size}"
        )
    if not 0 <= max_count <= MAX_COUNT:
        raise ConfigError(f"max_count must be between 0 and {MAX_COUNT}, got {max_count}")


def generate_scenes(
    dst: str | os.PathLike[str],
    n: int,
    seed: int = 0,
    *,
    workers: int | None = None,
    frame_size: int = 1024,
    minimap_size: int = 64,
    max_count: int = MAX_COUNT,
) -> Generated[dict[str, str | int]]:
    """Draw frames 0..n-1 into ``dst`` (see the module docstring) and write predictions.csv.

    Frames whose two PNGs exist already are kept (their rows come from ``scene_layout``),
    so an interrupted run resumes, and a later run with a larger ``n`` adds frames. The
    others are drawn on ``workers`` processes (None: one per core), started by spawning.
    """
    _check_arguments(n, workers, frame_size, minimap_size, max_count)
    dst = Path(dst).expanduser()
    settings = {
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "frame_size": frame_size,
        "minimap_size": minimap_size,
        "max_count": max_count,
    }
    resume_folder(dst, SETTINGS_NAME, settings, "scenes")
    todo = [
        index
        for index in range(n)
        if not all((dst / path).is_file() for path in frame_paths(index))
    ]
    log.info(
        "StarCraft scenes in %s: %d of %d frames to draw at %d² (minimap %d²), %d drawn before",
        dst, len(todo), n, frame_size, minimap_size, n - len(todo),
    )  # fmt: skip
    start = time.perf_counter()
    draw = partial(_render_frames, dst, seed, frame_size, minimap_size, max_count)
    counts = dict(draw_on_processes(draw, todo, workers, unit="frame", desc="scenes"))
    for index in range(n):
        if index not in counts:
            counts[index] = _layout_counts(scene_layout(seed, index, frame_size, max_count))
    rows = [_csv_row(index, counts[index]) for index in range(n)]
    write_frames_csv(dst, rows)
    return Generated(
        rows=rows,
        generated=len(todo),
        already_done=n - len(todo),
        seconds=time.perf_counter() - start,
    )


def summary(scenes: Generated[dict[str, str | int]], dst: str | os.PathLike[str]) -> str:
    """What was drawn, how fast, and how the counts are spread, as a few lines of text."""
    frames = len(scenes.rows)
    marines = Counter(int(row["marine_count"]) for row in scenes.rows)
    histogram = " ".join(f"{count}:{marines[count]}" for count in sorted(marines))
    means = ", ".join(
        f"{kind} {sum(int(row[f'{kind}_count']) for row in scenes.rows) / frames:.2f}"
        for kind in UNIT_TYPES
    )
    return "\n".join(
        [
            f"{scenes.drawn('frame')}; {frames} listed in {Path(dst) / CSV_NAME}",
            f"marine_count → frames: {histogram}",
            f"mean units per frame: {means}",
        ]
    )
