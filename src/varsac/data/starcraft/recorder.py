"""Record StarCraft II marine-counting frames from the game itself, through DeepMind's pysc2.

Each frame: the camera moves to a random spot of the map, random numbers of Terran marines,
marauders and siege tanks (0..max_count of each, mostly few) are spawned for the agent around
the camera centre with the game's debug interface, the game steps so that they show, and the
rendered screen (frame_size², RGB) and minimap (minimap_size², RGB) are saved as PNGs. The
labels are the units of each type that the game reports on screen (pysc2's ``feature_units``),
not the numbers asked for: units that landed off screen or died do not count. The units are
then killed before the next frame. The agent plays Terran against a very easy Zerg bot (alone
on single-player maps); fog of war is off so that the whole map shows.

The layout is the one ``varsac.data.starcraft.dataset`` reads (and ``varsac data starcraft`` draws
without the game)::

    DST/predictions.csv          fullscreen_img,minimap_img,marine_count,marauder_count,
                                 siegetank_count (paths relative to DST)
    DST/fullscreen/000000.png    the rendered screen
    DST/minimap/000000.png       the rendered minimap

A recording resumes: frames whose two PNGs exist and that have a row in predictions.csv are
kept, the others are recorded; the CSV is rewritten (atomically) every ``CSV_EVERY`` frames and
at the end.

Needs pysc2 (``pip install 'varsac[sc2]'``), StarCraft II (``SC2PATH`` pointing at the install)
and the map in its ``Maps`` folder; pysc2 is imported only when recording, so this module
imports without it. Written against pysc2 4.0.0's source; debug commands and camera moves go
through SC2Env's private controllers, as SC2Env has no public way to send them. It was not run
with the game (the development machine has none).
"""

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from varsac.data.starcraft.layout import (
    CSV_COLUMNS,
    CSV_NAME,
    FRAME_COLUMN,
    MAX_COUNT,
    MINIMAP_COLUMN,
    UNIT_COLUMNS,
    frame_paths,
    write_frames_csv,
)
from varsac.errors import ConfigError, check_at_least
from varsac.files import write_png_atomically

# Count column → the pysc2 ``units.Terran`` member spawned and counted for it.
PYSC2_UNITS = dict(zip(UNIT_COLUMNS, ("Marine", "Marauder", "SiegeTank"), strict=True))
CSV_EVERY = 50  # frames recorded between rewrites of predictions.csv

_COUNT_P = 0.12  # counts are geometric(p) - 1, capped at max_count: mostly few units
# pysc2 takes the game camera to be 24 world units wide; units are spawned well inside it.
_CAMERA_HALF_SIZE = (12.0, 9.0)  # world units kept between the camera centre and the map edge
_SPAWN_HALF_SIZE = (7.0, 5.0)  # world units around the camera centre where units are spawned
_SETTLE_STEPS = 2  # agent steps between spawning and capturing, so the units render
_MAX_CLEAR_STEPS = 10  # agent steps to wait for killed units to leave the observation
_MAX_TRIES = 3  # tries per frame when the game ends (defeat, time limit) while recording it

_PYSC2_MISSING = (
    "recording from StarCraft II needs pysc2, which is not installed: pip install 'varsac[sc2]' "
    "(and StarCraft II itself, see README); without the game use "
    "`varsac data starcraft dst=DIR n=N` to generate scenes"
)
_MAP_PACKS = "https://github.com/Blizzard/s2client-proto#map-packs"


def record_scenes(
    dst: str | Path,
    n: int,
    seed: int = 0,
    *,
    map_name: str = "Simple64",
    frame_size: int = 1024,
    minimap_size: int = 64,
    max_count: int = MAX_COUNT,
    step_mul: int = 8,
) -> int:
    """Record n labelled frames from StarCraft II into dst; return the number recorded.

    Frames already in ``dst`` (both PNGs and a CSV row) are kept and not counted; frame
    ``index`` draws its unit counts and camera spot from ``np.random.default_rng([seed,
    index])``. Raises ``ConfigError`` for bad arguments, when pysc2 is missing, and when
    the game or the map is not found; nothing is written before the game is found.
    """
    check_arguments(n, max_count, frame_size, minimap_size, step_mul)
    require_pysc2()
    map_players = _find_game(map_name)
    dst = Path(dst)
    rows = read_recorded(dst, n)
    todo = [index for index in range(n) if index not in rows]
    if not todo:
        return 0
    recorded = 0
    with (
        _open_game(map_name, map_players, frame_size, minimap_size, step_mul, seed) as game,
        tqdm(total=n, initial=n - len(todo), desc="recording", unit="frame") as progress,
    ):
        try:
            for index in todo:
                frame, minimap, counts = game.record(
                    np.random.default_rng([seed, index]), max_count
                )
                rows[index] = _save_frame(dst, index, frame, minimap, counts)
                recorded += 1
                progress.update()
                if recorded % CSV_EVERY == 0:
                    write_frames_csv(dst, (rows[i] for i in sorted(rows)))
        finally:
            if recorded % CSV_EVERY:
                write_frames_csv(dst, (rows[i] for i in sorted(rows)))
    return recorded


def check_arguments(
    n: int, max_count: int, frame_size: int, minimap_size: int, step_mul: int
) -> None:
    """Raise ``ConfigError`` naming the first argument that cannot work."""
    check_at_least(n=(n, 1))
    if not 0 <= max_count <= MAX_COUNT:
        raise ConfigError(f"max_count={max_count} must be in 0..{MAX_COUNT}")
    check_at_least(minimap_size=(minimap_size, 1))
    if frame_size < minimap_size:
        raise ConfigError(
            f"frame_size={frame_size} must be at least minimap_size={minimap_size} "
            "(the game renders the screen no smaller than the minimap)"
        )
    check_at_least(step_mul=(step_mul, 1))  # game steps per agent step


def require_pysc2() -> None:
    """Raise ``ConfigError`` saying what to install when pysc2 cannot be imported."""
    try:
        from pysc2.env import sc2_env  # noqa: F401
    except ModuleNotFoundError as error:
        if error.name is not None and error.name.split(".")[0] == "pysc2":
            raise ConfigError(_PYSC2_MISSING) from None
        raise ConfigError(f"pysc2 is installed but lacks a dependency: {error}") from error
    except Exception as error:
        # pysc2 4.0.0 from PyPI fails to import on Python ≥ 3.11 (random.shuffle lost an
        # argument; fixed in pysc2's GitHub master) and s2clientprotocol's generated code
        # with protobuf ≥ 4 ("Descriptors cannot be created directly").
        raise ConfigError(
            f"pysc2 is installed but does not import ({type(error).__name__}: {error}); "
            "pysc2 4.0.0 needs Python ≤ 3.10 (or pysc2 from GitHub) and protobuf ≤ 3.20"
        ) from error


def draw_counts(rng: np.random.Generator, max_count: int) -> dict[str, int]:
    """How many of each unit type to spawn: 0..max_count, mostly few."""
    return {column: min(max_count, int(rng.geometric(_COUNT_P)) - 1) for column in UNIT_COLUMNS}


def read_recorded(dst: Path, n: int) -> dict[int, dict[str, object]]:
    """The CSV rows, by frame index below ``n``, of frames in ``dst`` whose two PNGs exist."""
    path = dst / CSV_NAME
    if not path.is_file():
        return {}
    with path.open(newline="") as handle:
        by_frame = {row[FRAME_COLUMN]: row for row in csv.DictReader(handle)}
    rows = {}
    for index in range(n):
        frame, minimap = frame_paths(index)
        row = by_frame.get(frame)
        if row and row.get(MINIMAP_COLUMN) == minimap and _all_files(dst, frame, minimap):
            rows[index] = {column: row[column] for column in CSV_COLUMNS}
    return rows


def _all_files(dst: Path, *relative: str) -> bool:
    return all((dst / path).is_file() for path in relative)


def _save_frame(
    dst: Path, index: int, frame: np.ndarray, minimap: np.ndarray, counts: Mapping[str, int]
) -> dict[str, object]:
    """Write the frame's two PNGs atomically; return its CSV row."""
    frame_path, minimap_path = frame_paths(index)
    for relative, image in ((frame_path, frame), (minimap_path, minimap)):
        write_png_atomically(dst / relative, Image.fromarray(image))
    return {FRAME_COLUMN: frame_path, MINIMAP_COLUMN: minimap_path, **counts}


def _allow_absl_flags() -> None:
    """pysc2 reads absl flags (``--sc2_run_config`` …), which must count as parsed first.

    Outside ``absl.app.run`` nobody parses them; their defaults are what we want.
    """
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _game_not_found(error: Exception) -> ConfigError:
    return ConfigError(
        f"StarCraft II was not found ({error}): install it (on Linux the headless build from "
        "https://github.com/Blizzard/s2client-proto#downloads) and set SC2PATH to the install "
        "folder (default ~/StarCraftII on Linux); maps such as Simple64 (Blizzard's map packs, "
        f"{_MAP_PACKS}, or pysc2's mini-games) must be in its Maps folder"
    )


def _find_game(map_name: str) -> int | None:
    """Check that StarCraft II and the map are installed; return the map's player count."""
    from pysc2 import maps, run_configs
    from pysc2.lib import sc_process

    _allow_absl_flags()
    try:
        run_config = run_configs.get()
    except (OSError, sc_process.SC2LaunchError) as error:
        raise _game_not_found(error) from error
    try:
        game_map = maps.get(map_name)
    except maps.lib.NoMapError:
        raise ConfigError(
            f"map={map_name!r} is not a map pysc2 knows; `python -m pysc2.bin.map_list` "
            "lists them (e.g. Simple64, Simple96, Flat64)"
        ) from None
    try:
        game_map.data(run_config)
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"map={map_name!r}: {game_map.path} is not in {run_config.data_dir}/Maps; "
            f"download the map pack from {game_map.download or _MAP_PACKS} and unzip it there "
            "(Blizzard's packs ask for the password iagreetotheeula)"
        ) from error
    return game_map.players


def _open_game(
    map_name: str,
    map_players: int | None,
    frame_size: int,
    minimap_size: int,
    step_mul: int,
    seed: int,
) -> "_Game":
    from pysc2.env import sc2_env
    from pysc2.lib import actions, features, sc_process

    interface = features.AgentInterfaceFormat(
        rgb_dimensions=features.Dimensions(screen=frame_size, minimap=minimap_size),
        # feature_units (the on-screen units) are computed in feature-screen coordinates,
        # so pysc2 needs feature layers too; small ones cost little.
        feature_dimensions=features.Dimensions(screen=64, minimap=64),
        # With both rgb and feature dimensions pysc2 requires the action space to be named.
        action_space=actions.ActionSpace.RGB,
        use_feature_units=True,
        # Every unit with its tag and the camera position, to kill units and spawn on screen.
        send_observation_proto=True,
    )
    players = [sc2_env.Agent(sc2_env.Race.terran)]
    if map_players != 1:
        players.append(sc2_env.Bot(sc2_env.Race.zerg, sc2_env.Difficulty.very_easy))
    try:
        env = sc2_env.SC2Env(
            map_name=map_name,
            players=players,
            agent_interface_format=interface,
            step_mul=step_mul,
            realtime=False,
            visualize=False,
            disable_fog=True,
            random_seed=seed,
        )
    except (OSError, sc_process.SC2LaunchError) as error:
        raise _game_not_found(error) from error
    return _Game(env)


class _Game:
    """A running SC2Env that records frames; a context manager that closes the game."""

    def __init__(self, env: Any) -> None:
        from pysc2.lib import actions, features, units
        from s2clientprotocol import common_pb2, debug_pb2, raw_pb2, sc2api_pb2

        self._env = env
        # Debug commands and camera moves go straight to the game: SC2Env has no public
        # way to send them, so this uses its private controllers (pysc2 ≥ 3).
        self._controller = env._controllers[0]
        self._no_op = actions.FUNCTIONS.no_op()
        self._feature_unit = features.FeatureUnit
        self._self = features.PlayerRelative.SELF
        self._unit_types = {column: units.Terran[name] for column, name in PYSC2_UNITS.items()}
        self._common, self._debug, self._raw, self._sc2api = (
            common_pb2,
            debug_pb2,
            raw_pb2,
            sc2api_pb2,
        )
        self._camera_low = self._camera_high = (0.0, 0.0)

    def __enter__(self) -> "_Game":
        try:
            area = self._controller.game_info().start_raw.playable_area
            self._camera_low = (area.p0.x + _CAMERA_HALF_SIZE[0], area.p0.y + _CAMERA_HALF_SIZE[1])
            self._camera_high = (area.p1.x - _CAMERA_HALF_SIZE[0], area.p1.y - _CAMERA_HALF_SIZE[1])
            self._reset()
        except BaseException:
            self._env.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._env.close()

    def record(
        self, rng: np.random.Generator, max_count: int
    ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
        """Spawn units as ``rng`` draws, capture; return (screen, minimap, on-screen counts)."""
        for _ in range(_MAX_TRIES):
            state = rng.bit_generator.state
            try:
                return self._record_once(rng, max_count)
            except _EpisodeOver:
                rng.bit_generator.state = state  # the same scene in the next game
                self._reset()
        raise RuntimeError(f"the game ended {_MAX_TRIES} times while recording one frame")

    def _record_once(
        self, rng: np.random.Generator, max_count: int
    ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
        requested = draw_counts(rng, max_count)
        camera = [
            rng.uniform(low, high) if low < high else (low + high) / 2
            for low, high in zip(self._camera_low, self._camera_high, strict=True)
        ]
        self._move_camera(camera)
        # The game may clamp the camera: spawn around where it is.
        centre = self._response(self._step()).raw_data.player.camera
        self._spawn(rng, requested, (centre.x, centre.y))
        for _ in range(_SETTLE_STEPS):
            timestep = self._step()
        observation = timestep.observation
        screen = np.asarray(observation["rgb_screen"], dtype=np.uint8)
        minimap = np.asarray(observation["rgb_minimap"], dtype=np.uint8)
        counts = self._count_on_screen(observation["feature_units"])
        self._clear(timestep)
        return screen, minimap, counts

    def _reset(self) -> None:
        try:
            self._env.reset()
        except AssertionError as error:  # pysc2 asserts 24-bit render data
            raise ConfigError(
                f"StarCraft II sent no rendered frames ({error}): on Linux the game renders "
                "through EGL or OSMesa (e.g. apt install libosmesa6); without either pysc2 "
                "starts it with -headlessNoRender"
            ) from error

    def _step(self) -> Any:
        timestep = self._env.step([self._no_op])[0]
        if timestep.last():
            raise _EpisodeOver
        return timestep

    @staticmethod
    def _response(timestep: Any) -> Any:
        """The game's observation proto (``send_observation_proto``)."""
        return timestep.observation["_response_observation"]().observation

    def _move_camera(self, centre: list[float]) -> None:
        move = self._raw.ActionRawCameraMove(
            center_world_space=self._common.Point(x=float(centre[0]), y=float(centre[1]))
        )
        self._controller.act(self._sc2api.Action(action_raw=self._raw.ActionRaw(camera_move=move)))

    def _spawn(
        self, rng: np.random.Generator, counts: Mapping[str, int], centre: tuple[float, float]
    ) -> None:
        commands = []
        for column, count in counts.items():
            offsets = rng.uniform(-1, 1, size=(count, 2)) * _SPAWN_HALF_SIZE
            for dx, dy in offsets:
                position = self._common.Point2D(x=float(centre[0] + dx), y=float(centre[1] + dy))
                create = self._debug.DebugCreateUnit(
                    unit_type=self._unit_types[column], owner=1, pos=position, quantity=1
                )
                commands.append(self._debug.DebugCommand(create_unit=create))
        if commands:
            self._controller.debug(commands)

    def _count_on_screen(self, feature_units: np.ndarray) -> dict[str, int]:
        """Own units of each type on screen (pysc2 lists only on-screen units there)."""
        table = np.asarray(feature_units).reshape(-1, len(self._feature_unit))
        own = table[table[:, self._feature_unit.alliance] == self._self]
        types = own[:, self._feature_unit.unit_type]
        return {column: int(np.sum(types == kind)) for column, kind in self._unit_types.items()}

    def _own_spawned_tags(self, timestep: Any) -> list[int]:
        """Tags of the agent's units of the spawned types, anywhere on the map."""
        kinds = set(self._unit_types.values())
        return [
            unit.tag
            for unit in self._response(timestep).raw_data.units
            if unit.alliance == self._self and unit.unit_type in kinds
        ]

    def _clear(self, timestep: Any) -> None:
        """Kill the spawned units and step until the game no longer lists them.

        Units that outlive this are killed with the next frame's; until then they count
        wherever they show, so the labels stay right.
        """
        try:
            for _ in range(_MAX_CLEAR_STEPS):
                tags = self._own_spawned_tags(timestep)
                if not tags:
                    return
                kill = self._debug.DebugKillUnit(tag=tags)
                self._controller.debug(self._debug.DebugCommand(kill_unit=kill))
                timestep = self._step()
        except _EpisodeOver:
            self._reset()  # a new game starts without them


class _EpisodeOver(Exception):
    """The game ended (defeat or time limit) in the middle of a frame."""
