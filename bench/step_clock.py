"""Lightning callback for the benches: wall and process-tree CPU time of the last training steps.

Added to a real `python -m clap_train` run with `+callbacks.clock._target_=bench.step_clock.StepClock
+callbacks.clock.out=FILE +callbacks.clock.skip=N`; writes {"steps", "seconds", "cpu_seconds"} to FILE.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of `pid` and its live descendants (all threads), from /proc."""
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
            for task in Path(f"/proc/{current}/task").iterdir():
                stack += [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


class StepClock(Callback):
    """Times steps `skip`..end of training; CPU of the training process, its live data workers and the
    workers already waited for (os.times children)."""

    def __init__(self, out: str, skip: int = 5):
        self.out, self.skip, self.start = out, skip, None

    def _now(self) -> tuple[float, float]:
        times = os.times()
        return time.perf_counter(), tree_cpu_seconds(os.getpid()) + times.children_user + times.children_system

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.skip:
            self.start = (trainer.global_step, *self._now())

    def on_train_end(self, trainer, pl_module) -> None:
        step0, wall0, cpu0 = self.start
        wall, cpu = self._now()
        steps = trainer.global_step - step0
        Path(self.out).write_text(json.dumps({"steps": steps, "seconds": wall - wall0, "cpu_seconds": cpu - cpu0}))
