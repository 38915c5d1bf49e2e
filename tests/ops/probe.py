"""Test-only callback, added through the real entry point with `+callbacks.probe=...` overrides."""

from __future__ import annotations

import json
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class RecordBatches(Callback):
    """Appends `{"step", "keys", "rank", "world_size"}` of every training batch to `path` (JSON lines), then
    sleeps `sleep_s` so a test can act while the run is still going. Rank 0 only, unless `path` holds
    `{rank}`: then every rank writes its own file."""

    def __init__(self, path: str, sleep_s: float = 0.0):
        self.path, self.sleep_s = path, sleep_s

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.is_global_zero or "{rank}" in self.path:
            record = {"step": trainer.global_step, "keys": list(batch["key"]), "rank": trainer.global_rank,
                      "world_size": trainer.world_size}
            with open(Path(self.path.format(rank=trainer.global_rank)), "a") as f:
                f.write(json.dumps(record) + "\n")
        time.sleep(self.sleep_s)
