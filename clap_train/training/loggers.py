"""Logger factories that need a decision at run time."""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path

from lightning.pytorch.loggers import WandbLogger

log = logging.getLogger(__name__)


def has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc(Path.home() / ".netrc").authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_logger(project: str, name: str, save_dir: str, run_id: str | None = None, entity: str | None = None,
                 offline: bool | None = None, log_model: bool | str = False, **kwargs) -> WandbLogger:
    """W&B logger resuming the run `run_id` (stable across restarts); offline when no credentials."""
    if offline is None:
        offline = os.environ.get("WANDB_MODE") == "offline" or not has_wandb_credentials()
        if offline:
            log.warning("no W&B credentials found: logging offline to %s/wandb (sync later with `wandb sync`)", save_dir)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(project=project, name=name, save_dir=save_dir, id=run_id, entity=entity, offline=offline,
                       log_model=log_model, resume="allow", **kwargs)
