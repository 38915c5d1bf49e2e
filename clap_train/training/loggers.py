"""Logger factories that need a decision at run time, and W&B checkpoint download for `resume=wandb://...`."""

from __future__ import annotations

import logging
import netrc
import os
import time
from pathlib import Path

from lightning.pytorch.loggers import WandbLogger

log = logging.getLogger(__name__)
WANDB_SCHEME = "wandb://"
DOWNLOAD_DONE = "DOWNLOAD_COMPLETE"  # written after an artifact download, so other ranks never read a partial file


def has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc(Path.home() / ".netrc").authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_logger(project: str, name: str, save_dir: str, run_id: str | None = None, entity: str | None = None,
                 offline: bool | None = None, log_model: bool | str = False, **kwargs) -> WandbLogger:
    """W&B logger resuming the run `run_id` (stable across restarts); offline when no credentials.

    `log_model='all'` uploads every checkpoint as a version of the artifact `model-<run_id>` (alias
    `latest` on the newest), which is what `resume=wandb://...` downloads; `True` uploads only at the
    end of a successful run.
    """
    if offline is None:
        offline = os.environ.get("WANDB_MODE") == "offline" or not has_wandb_credentials()
        if offline:
            log.warning("no W&B credentials found: logging offline to %s/wandb (sync later with `wandb sync`)", save_dir)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    if offline:
        # wandb's own offline mode, not WandbLogger(offline=True): the latter refuses log_model, while
        # offline wandb records the checkpoint artifacts for a later `wandb sync`
        kwargs["mode"] = "offline"
    return WandbLogger(project=project, name=name, save_dir=save_dir, id=run_id, entity=entity, log_model=log_model,
                       resume="allow", **kwargs)


def parse_wandb_url(url: str) -> tuple[str, str, str]:
    """`wandb://ENTITY/PROJECT/RUN_ID` -> (entity, project, run_id).

    Raises:
        ValueError: not of that form (names the `resume` key).
    """
    parts = url[len(WANDB_SCHEME):].strip("/").split("/") if url.startswith(WANDB_SCHEME) else []
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"resume={url!r}: expected wandb://ENTITY/PROJECT/RUN_ID")
    entity, project, run_id = parts
    return entity, project, run_id


def _is_first_process() -> bool:
    # the trainer does not exist yet: read the rank from what launchers (torchrun, srun, Lightning) export
    return all(os.environ.get(var, "0") == "0" for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK"))


def download_wandb_checkpoint(url: str, dest_dir: Path, timeout_s: float = 3600.0) -> Path:
    """Download the newest checkpoint artifact (`model-<run_id>:latest`) of a W&B run into `dest_dir`.

    The first process downloads; the other ranks wait for its completion marker (up to `timeout_s`).
    Returns the path of the downloaded `.ckpt`.

    Raises:
        ValueError: malformed `url`. FileNotFoundError: the artifact holds no `.ckpt`.
        TimeoutError: a non-first rank waited `timeout_s` for the download.
    """
    import wandb

    entity, project, run_id = parse_wandb_url(url)
    dest_dir = Path(dest_dir)
    done = dest_dir / DOWNLOAD_DONE
    if _is_first_process():
        done.unlink(missing_ok=True)
        name = f"{entity}/{project}/model-{run_id}:latest"
        log.info("downloading checkpoint artifact %s into %s", name, dest_dir)
        root = Path(wandb.Api().artifact(name, type="model").download(root=str(dest_dir)))
        checkpoints = sorted(root.glob("*.ckpt"))
        if not checkpoints:
            raise FileNotFoundError(f"resume={url}: artifact {name} holds no .ckpt file")
        done.write_text(checkpoints[0].name)
        return checkpoints[0]
    deadline = time.monotonic() + timeout_s
    while not done.is_file():
        if time.monotonic() > deadline:
            raise TimeoutError(f"resume={url}: waited {timeout_s:.0f} s for rank 0 to download into {dest_dir}")
        time.sleep(1.0)
    return dest_dir / done.read_text().strip()
