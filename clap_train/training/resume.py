"""Which checkpoint a launch resumes from (see docs/operations.md).

A run directory is named by the run (`run_name`, or the Slurm job under slurm/*.sbatch), so every
restart of the same run finds it. The newest of these wins:
  - `<run_dir>/checkpoints/last.ckpt`: written every N steps / M minutes and at the end (`LastCheckpoint`),
  - `<run_dir>/hpc_ckpt_<k>.ckpt`: written by Lightning on Slurm's pre-emption signal before requeueing.
Only when the run directory has neither does the `resume` config key seed the run: a checkpoint
path, or `wandb://ENTITY/PROJECT/RUN_ID` (that run's latest checkpoint artifact is downloaded).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from clap_train.training.checkpointing import recover_swapped
from clap_train.training.loggers import WANDB_SCHEME, download_wandb_checkpoint, parse_wandb_url

log = logging.getLogger(__name__)
WANDB_LOGGER_TARGET = "clap_train.training.loggers.wandb_logger"


def local_checkpoints(run_dir: Path) -> list[Path]:
    """`last.ckpt` and Lightning's `hpc_ckpt_*.ckpt` of a run directory (files, or sharded DCP
    directories under FSDP), oldest first (by mtime)."""
    recover_swapped(run_dir / "checkpoints" / "last.ckpt")  # a sharded save killed mid-swap
    candidates = [run_dir / "checkpoints" / "last.ckpt", *run_dir.glob("hpc_ckpt_*.ckpt")]
    return sorted((p for p in candidates if p.exists()), key=lambda p: p.stat().st_mtime_ns)


def checkpoint_step(path: Path) -> int:
    """The global step stored in a Lightning checkpoint: a file (memory-mapped, cheap for large ones)
    or a sharded DCP directory (its `meta.pt` holds everything but the tensors)."""
    path = Path(path)
    source = path / "meta.pt" if path.is_dir() else path
    return int(torch.load(source, map_location="cpu", weights_only=True, mmap=not path.is_dir())["global_step"])


def wandb_resume_overrides(cfg: DictConfig) -> dict:
    """For `resume=wandb://E/P/ID` with the W&B logger: the logger arguments that log into that run
    ({'entity', 'project', 'run_id'}), passed by the build at instantiation; {} otherwise. The config
    itself is left as written.

    Raises ValueError for a malformed `resume` URL.
    """
    resume = cfg.get("resume")
    if not (isinstance(resume, str) and resume.startswith(WANDB_SCHEME)):
        return {}
    entity, project, run_id = parse_wandb_url(resume)
    logger = cfg.get("logger")
    if logger is None or logger.get("_target_") != WANDB_LOGGER_TARGET:
        return {}
    return {"entity": entity, "project": project, "run_id": run_id}


def resolve_resume_checkpoint(cfg: DictConfig, run_dir: Path) -> Path | None:
    """The checkpoint this launch resumes from, or None for a fresh start (module docstring).

    Raises:
        FileNotFoundError: `resume` is a path that does not exist, or the W&B artifact has no checkpoint.
        ValueError: malformed `resume=wandb://...`.
    """
    found = local_checkpoints(run_dir)
    resume = cfg.get("resume")
    if found:
        if resume:
            log.info("run directory %s already has checkpoints: resume=%s is ignored", run_dir, resume)
        return found[-1]
    if not resume:
        return None
    if str(resume).startswith(WANDB_SCHEME):
        return download_wandb_checkpoint(str(resume), run_dir / "checkpoints" / "wandb")
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"resume={resume}: no such checkpoint file")
    return path
