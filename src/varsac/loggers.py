"""Logger factories that need more than a ``_target_``."""

import logging
import netrc
import os
from typing import Any

from lightning.pytorch.loggers import WandbLogger

log = logging.getLogger(__name__)


def wandb_credentials_found() -> bool:
    """Whether W&B can log in: an API key in the environment or in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_logger(**kwargs: Any) -> WandbLogger:
    """Lightning's WandbLogger, offline when no credentials are configured.

    An explicit ``offline`` or WANDB_MODE wins; otherwise a missing key means
    offline mode and a one-line hint on how to upload the run later.
    """
    if "offline" not in kwargs and "WANDB_MODE" not in os.environ and not wandb_credentials_found():
        kwargs["offline"] = True
        log.warning(
            "wandb: no credentials found, logging offline under %s/wandb; "
            "upload later with `wandb sync %s/wandb/offline-run-*`",
            kwargs.get("save_dir", "."),
            kwargs.get("save_dir", "."),
        )
    return WandbLogger(**kwargs)
