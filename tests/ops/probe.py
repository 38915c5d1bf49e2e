"""Test-only callback, added through the real entry point with `+callbacks.probe=...` overrides."""

from __future__ import annotations

import json
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class RecordBatches(Callback):
    """Appends `{"step", "keys"}` of every training batch to `path` (JSON lines), then sleeps `sleep_s`
    so a test can act while the run is still going."""

    def __init__(self, path: str, sleep_s: float = 0.0):
        self.path, self.sleep_s = Path(path), sleep_s

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.is_global_zero:
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": trainer.global_step, "keys": list(batch["key"])}) + "\n")
        time.sleep(self.sleep_s)
