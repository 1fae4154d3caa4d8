"""Logger factories that need more than a ``_target_``."""

import logging
import netrc
import os
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def wandb_credentials_found() -> bool:
    """Whether W&B can log in: an API key in the environment or in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def run_fields(hydra: DictConfig, name: str | None) -> dict[str, Any]:
    """W&B's tags, job type, and in a multirun group and name, for this Hydra job.

    Tags: the chosen experiment and sweep (where there are), and ``name``. Job type: the
    command (``fit``, ``test``). In a multirun the group is ``<name>/<sweep dir's name>``,
    the same for every job of the sweep, and the name gets the job's overrides.
    """
    choices = hydra.runtime.choices
    labels = [choices.get("experiment"), choices.get("sweep"), name]
    fields: dict[str, Any] = {
        "tags": list(dict.fromkeys(label for label in labels if label)),
        "job_type": hydra.job.name,
    }
    if hydra.mode == RunMode.MULTIRUN:
        fields["group"] = "/".join(filter(None, [name, Path(hydra.sweep.dir).name]))
        fields["name"] = " ".join(filter(None, [name, hydra.job.override_dirname])) or None
    return fields


def wandb_logger(**kwargs: Any) -> WandbLogger:
    """Lightning's WandbLogger, grouped and tagged from Hydra's runtime config, offline when
    no credentials are configured.

    Under Hydra, ``run_fields`` gives the tags and the job type, and in a multirun the group
    and the name; a ``group``, ``tags`` or ``job_type`` set in the config wins. An explicit
    ``offline`` or WANDB_MODE wins; otherwise a missing key means offline mode and a one-line
    hint on how to upload the run later.
    """
    if HydraConfig.initialized():
        for key, value in run_fields(HydraConfig.get(), kwargs.get("name")).items():
            if key == "name" or kwargs.get(key) is None:
                kwargs[key] = value
    if "offline" not in kwargs and "WANDB_MODE" not in os.environ and not wandb_credentials_found():
        kwargs["offline"] = True
        log.warning(
            "wandb: no credentials found, logging offline under %s/wandb; "
            "upload later with `wandb sync %s/wandb/offline-run-*`",
            kwargs.get("save_dir", "."),
            kwargs.get("save_dir", "."),
        )
    return WandbLogger(**kwargs)
