"""What ``varsac data <dataset>`` does with a composed config."""

import logging
from pathlib import Path

from omegaconf import DictConfig

from varsac.config_check import checked_arguments
from varsac.data import megapixel_mnist as megapixel_mnist_set
from varsac.data import photo_conversion, slide_index
from varsac.data import synthetic_slides as synthetic_slides_set
from varsac.data.starcraft import recorder, scenes
from varsac.errors import ConfigError

log = logging.getLogger(__name__)


def mit5k(cfg: DictConfig) -> None:
    """Convert the photos of ``cfg.src`` into ``cfg.dst`` and index them.

    Exits with status 1 when some photos could not be converted (each is
    listed); the index then holds the others.
    """
    conversion = photo_conversion.convert_photos(
        **checked_arguments(photo_conversion.convert_photos, cfg)
    )
    dst = Path(cfg.dst).expanduser()
    log.info("varsac data mit5k finished\n%s", photo_conversion.summary(conversion, dst))
    if conversion.failures:
        raise SystemExit(
            f"varsac data mit5k: {len(conversion.failures)} photo(s) could not be converted "
            f"(listed above); {dst / 'index.csv'} lists the {len(conversion.rows)} that were. "
            "Fix or remove them and run the same command again: only what is missing converts."
        )


def starcraft(cfg: DictConfig) -> None:
    """Draw (``source=generator``) or record (``source=game``) ``cfg.n`` StarCraft II frames."""
    dst = Path(cfg.dst).expanduser()
    if cfg.source == "generator":
        drawn = scenes.generate_scenes(**checked_arguments(scenes.generate_scenes, cfg))
        log.info("varsac data starcraft finished\n%s", scenes.summary(drawn, dst))
    elif cfg.source == "game":
        recorded = recorder.record_scenes(
            **checked_arguments(recorder.record_scenes, cfg), map_name=cfg.map
        )
        log.info("varsac data starcraft finished: %d frames recorded into %s", recorded, dst)
    else:
        raise ConfigError(f"source must be generator or game, got {cfg.source!r}")


def megapixel_mnist(cfg: DictConfig) -> None:
    """Draw the Megapixel MNIST images of ``cfg`` into ``cfg.dst`` and index them."""
    generated = megapixel_mnist_set.generate_megapixel_mnist(
        **checked_arguments(megapixel_mnist_set.generate_megapixel_mnist, cfg)
    )
    dst = Path(cfg.dst).expanduser()
    log.info(
        "varsac data megapixel_mnist finished\n%s", megapixel_mnist_set.summary(generated, dst)
    )


def slides(cfg: DictConfig) -> None:
    """Index the whole-slide images that ``cfg.src`` lists into ``cfg.dst``.

    Exits with status 1 when some slides could not be read (each is listed); the index
    then holds the others.
    """
    indexing = slide_index.index_slides(**checked_arguments(slide_index.index_slides, cfg))
    dst = Path(cfg.dst).expanduser()
    log.info("varsac data slides finished\n%s", slide_index.summary(indexing, dst))
    if indexing.failures:
        raise SystemExit(
            f"varsac data slides: {len(indexing.failures)} slide(s) could not be read (listed "
            f"above and in {dst / slide_index.NOT_INDEXED_NAME}); {dst / 'index.csv'} lists "
            f"the {len(indexing.rows)} that were. Fix or remove them and run it again."
        )


def synthetic_slides(cfg: DictConfig) -> None:
    """Draw the synthetic whole-slide images of ``cfg`` into ``cfg.dst`` with their labels."""
    generated = synthetic_slides_set.generate_synthetic_slides(
        **checked_arguments(synthetic_slides_set.generate_synthetic_slides, cfg)
    )
    dst = Path(cfg.dst).expanduser()
    log.info(
        "varsac data synthetic_slides finished\n%s", synthetic_slides_set.summary(generated, dst)
    )
