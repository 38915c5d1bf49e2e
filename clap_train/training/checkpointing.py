"""Checkpoints that survive kills: atomic writes, step/time-triggered `last.ckpt`, top-k by a metric,
and the metadata (code version, data sources, RNG states) an exact resume needs.

Every checkpoint written through a Trainer built by `clap_train.train.build` holds, besides
Lightning's own state (weights, optimizer, scheduler, loops, callbacks):
  - `clap_train_config`: the resolved run config (stored by `CLAPModule`),
  - `clap_train_data`: the train/val shard patterns and mixing weights (`RunMetadata`),
  - `clap_train_version`: `clap_train.__version__` and `git describe` of the source tree (`RunMetadata`),
  - the Python/NumPy/torch RNG states, restored on resume (`RunMetadata` callback state).
"""

from __future__ import annotations

import functools
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

import clap_train
from clap_train.training.preemption import STOP_SIGNALS, StopFlag, parse_signals, requeue_slurm_job, slurm_job_id

log = logging.getLogger(__name__)

# Test-only hook: seconds to sleep between the fsync of `<path>.tmp` and the `os.replace` onto an
# *existing* `<path>`. A test sets it so it can SIGKILL a process deterministically in the middle of
# a checkpoint write (the .tmp is complete on disk, the old file not yet replaced). Never set it in
# real runs: it only slows saving down.
SLOW_REPLACE_ENV = "CLAP_TEST_SLOW_CHECKPOINT_REPLACE_S"


def remove_path(path: Path) -> None:
    """Delete a file or a directory tree (a sharded checkpoint is a directory); nothing if absent."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def swap_in_directory(new: Path, path: Path) -> None:
    """Replace the directory (or file) `path` by the complete directory `new` with two renames.

    `path` -> `path.old`, `new` -> `path`, then `path.old` is deleted. A kill between the renames
    leaves the previous checkpoint complete at `path.old`; `recover_swapped(path)` puts it back.
    """
    old = path.with_name(path.name + ".old")
    remove_path(old)
    if path.exists():
        os.replace(path, old)
    os.replace(new, path)
    remove_path(old)


def recover_swapped(path: Path) -> None:
    """Undo a `swap_in_directory` interrupted between its two renames."""
    old = path.with_name(path.name + ".old")
    if old.exists() and not path.exists():
        os.replace(old, path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to `<path>.tmp`, fsync, then `os.replace` onto the final name (atomic on POSIX).

    A process killed at any point leaves either the previous checkpoint or the new one under
    `<path>`, never a truncated file; a stale `<path>.tmp` may remain and is overwritten next time.
    """

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        delay = float(os.environ.get(SLOW_REPLACE_ENV, "0"))
        if delay > 0 and path.exists():
            time.sleep(delay)
        os.replace(tmp, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        # Lightning checkpoints hold plain containers, tensors and the resolved config (as a dict)
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)


class LastCheckpoint(ModelCheckpoint):
    """`<dirpath>/last.ckpt` every `every_n_steps` optimizer steps or every `every_n_minutes`, whichever
    comes first, once more when training ends (so relaunching a finished run does not retrain), and
    after the step during which one of `stop_signals` arrived (`clap_train.training.preemption`): then
    every rank saves, a SIGUSR1 under Slurm requeues the job, and the process exits with 128 + the
    signal number (SIGTERM 143, SIGINT 130, SIGUSR1 138). Each save removes the older pre-emption
    checkpoints `hpc_ckpt_*.ckpt` (see `remove_superseded_hpc_checkpoints`).

    The time trigger is decided on rank 0 and broadcast, and a signal on any rank stops all ranks
    (one boolean all-reduce per step under DDP/FSDP), so all ranks save together. A signal that
    arrives during validation is acted on after the next training step.

    Raises:
        ValueError: `every_n_steps` < 1, `every_n_minutes` <= 0 or an unknown name in `stop_signals`.
    """

    def __init__(self, dirpath: str, every_n_steps: int = 1000, every_n_minutes: float | None = None,
                 stop_signals: list[str] | None = STOP_SIGNALS):
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        if every_n_minutes is not None and every_n_minutes <= 0:
            raise ValueError(f"every_n_minutes must be > 0 or None, got {every_n_minutes}")
        super().__init__(dirpath=dirpath, save_top_k=0, save_last=True, every_n_train_steps=every_n_steps,
                         enable_version_counter=False)
        # ModelCheckpoint's constructor rejects a step and a time trigger together, yet its
        # on_train_batch_end saves when either fires: set the time trigger after construction.
        if every_n_minutes is not None:
            self._train_time_interval = timedelta(minutes=every_n_minutes)
        self.stop = StopFlag(parse_signals(stop_signals, "callbacks.last.stop_signals"))
        self._exit_code: int | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        # before Lightning's signal connector: it then leaves SIGUSR1 to us (no mid-step hpc_ckpt save)
        if stage == "fit" and threading.current_thread() is threading.main_thread():
            self.stop.install()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        # Lightning wrapped SIGTERM with its own handler (which broadcasts inside the handler): take it back
        if threading.current_thread() is threading.main_thread():
            self.stop.install()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if not self.stop.signals or not trainer.strategy.reduce_boolean_decision(self.stop.received is not None,
                                                                                 all=False):
            return
        signum = self.stop.received or signal.SIGTERM  # another rank got it
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        requeued = signum == signal.SIGUSR1 and (job := slurm_job_id()) is not None
        if requeued and trainer.is_global_zero:
            requeue_slurm_job(job)
        if trainer.is_global_zero:
            print(f"clap_train: {signum.name} at step {trainer.global_step}: saved {self.last_model_path}; "
                  + ("the Slurm job is requeued and resumes there" if requeued
                     else "relaunch the same command to resume"), file=sys.stderr, flush=True)
        self._exit_code = 128 + int(signum)

    # Exit at the first hook after the step's own logging (Lightning logs the step's metrics after
    # on_train_batch_end), before any more training or validation.
    def _exit_if_stopped(self) -> None:
        if self._exit_code is not None:
            raise SystemExit(self._exit_code)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._exit_if_stopped()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_start(trainer, pl_module)
        self._exit_if_stopped()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._exit_if_stopped()
        super().on_train_epoch_end(trainer, pl_module)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        super().on_exception(trainer, pl_module, exception)
        self.stop.restore()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().teardown(trainer, pl_module, stage)
        if stage == "fit":
            self.stop.restore()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._exit_if_stopped()
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        if trainer.is_global_zero:
            remove_superseded_hpc_checkpoints(Path(trainer.default_root_dir), Path(filepath))


def remove_superseded_hpc_checkpoints(hpc_dir: Path, newer: Path) -> list[Path]:
    """Delete Lightning's pre-emption checkpoints `hpc_dir/hpc_ckpt_*.ckpt` older than `newer`.

    Each Slurm pre-emption writes one more full-size `hpc_ckpt_<k>.ckpt`; once `last.ckpt` is newer
    they are never resumed from again. Removing them also keeps Lightning from loading a stale one
    into a later `trainer.validate(ckpt_path=None)` under Slurm. Returns the removed paths.
    """
    newer_mtime = newer.stat().st_mtime_ns
    removed = [p for p in hpc_dir.glob("hpc_ckpt_*.ckpt") if p.stat().st_mtime_ns < newer_mtime]
    for path in removed:
        remove_path(path)  # a file, or a sharded (DCP) checkpoint directory under FSDP
        log.info("removed %s: superseded by %s", path, newer)
    return removed


class BestCheckpoints(ModelCheckpoint):
    """The `save_top_k` best checkpoints by `val/<val_set>/<metric>` (e.g. `val/audiocaps/t2a_R@1`),
    saved after each validation as `best-step<step>.ckpt`.

    `val_set=None` monitors the datamodule's first validation set; with no validation set nothing
    is saved. The set is checked at the start of fitting, so a typo fails at once instead of after
    the first validation.

    Raises:
        ValueError: `save_top_k` < 1, or (at setup) `val_set` is not a validation set of the datamodule.
    """

    def __init__(self, dirpath: str, metric: str = "t2a_R@1", val_set: str | None = None, mode: str = "max",
                 save_top_k: int = 1):
        if save_top_k < 1:
            raise ValueError(f"save_top_k must be >= 1, got {save_top_k}")
        self.metric, self.val_set = metric, val_set
        # the monitored key is final once the datamodule's sets are known (setup)
        super().__init__(dirpath=dirpath, monitor=f"val/{val_set or '<first>'}/{metric}", mode=mode,
                         save_top_k=save_top_k, save_last=False, filename="best-step{step:07d}",
                         auto_insert_metric_name=False, enable_version_counter=False, save_on_train_epoch_end=False)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        val_names = list(getattr(trainer.datamodule, "val_names", None) or [])
        if not val_names:
            log.info("no validation set: callbacks.best saves no checkpoint")
            self.save_top_k = 0
        elif self.val_set is None:
            self.monitor = f"val/{val_names[0]}/{self.metric}"
        elif self.val_set not in val_names:
            raise ValueError(f"callbacks.best.val_set={self.val_set!r} is not a validation set; "
                             f"the sets are {val_names}")


@functools.lru_cache(maxsize=1)
def code_version() -> dict:
    """`{'clap_train': __version__, 'git': 'git describe --always --dirty' of the source tree or None}`."""
    source_root = Path(clap_train.__file__).resolve().parent.parent
    git = None
    if (source_root / ".git").exists():
        try:
            result = subprocess.run(["git", "-C", str(source_root), "describe", "--always", "--dirty", "--tags"],
                                    check=False, capture_output=True, text=True, timeout=10)
            git = (result.stdout.strip() or None) if result.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired):
            git = None
    return {"clap_train": clap_train.__version__, "git": git}


def data_sources(datamodule) -> dict:
    """The shard patterns a datamodule reads: {'train': [...], 'train_weights': [...] | None, 'val': {...}}."""
    return {
        "train": list(getattr(datamodule, "train_sources", []) or []),
        "train_weights": getattr(datamodule, "train_weights", None),
        "val": dict(getattr(datamodule, "val_shards", {}) or {}),
    }


def capture_rng_states() -> dict:
    """Python, NumPy and torch (CPU and, when present, CUDA) RNG states as tensors and plain types."""
    np_state = np.random.get_state()
    states = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["torch_cuda"] = torch.cuda.get_rng_state()
    return states


def restore_rng_states(states: dict) -> None:
    """Inverse of `capture_rng_states`."""
    random.setstate(_as_tuples(states["python"]))
    np_state = states["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(states["torch"])
    if "torch_cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["torch_cuda"])


def _as_tuples(value):
    # random.setstate wants nested tuples; a round trip through some serialisers yields lists
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


class RunMetadata(Callback):
    """Adds code version and data sources to every checkpoint; saves and restores the RNG states.

    The RNG states are this process's (rank 0's when written by a multi-rank job); every rank
    restores them, matching a fresh run in which `seed_everything` gives all ranks the same seed.
    """

    def state_dict(self) -> dict:
        return {"rng": capture_rng_states()}

    def load_state_dict(self, state_dict: dict) -> None:
        restore_rng_states(state_dict["rng"])

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint["clap_train_version"] = code_version()
        checkpoint["clap_train_data"] = data_sources(trainer.datamodule)
