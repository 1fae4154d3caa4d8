"""What ``varsac data <dataset>`` does with a composed config."""

import logging
from pathlib import Path

from omegaconf import DictConfig

from varsac.data.photo_conversion import convert_photos, summary

log = logging.getLogger(__name__)


def mit5k(cfg: DictConfig) -> None:
    """Convert the photos of ``cfg.src`` into ``cfg.dst`` and index them.

    Exits with status 1 when some photos could not be converted (each is
    listed); the index then holds the others.
    """
    conversion = convert_photos(
        cfg.src,
        cfg.dst,
        size=cfg.size,
        fit=cfg.fit,
        val=cfg.val,
        test=cfg.test,
        seed=cfg.seed,
        workers=cfg.workers,
        compression=cfg.compression,
        quality=cfg.quality,
    )
    dst = Path(cfg.dst).expanduser()
    log.info("varsac data mit5k finished\n%s", summary(conversion, dst))
    if conversion.failures:
        raise SystemExit(
            f"varsac data mit5k: {len(conversion.failures)} photo(s) could not be converted "
            f"(listed above); {dst / 'index.csv'} lists the {len(conversion.rows)} that were. "
            "Fix or remove them and run the same command again: only what is missing converts."
        )
