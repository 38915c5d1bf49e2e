"""Atomic checkpoint writes: a kill during a save never leaves a corrupt file behind."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to `<path>.tmp`, fsync, then `os.replace` onto the final name (atomic on POSIX)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        # Lightning checkpoints hold plain containers, tensors and the resolved config (as a dict)
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)
