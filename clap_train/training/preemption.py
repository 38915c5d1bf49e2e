"""Stop signals: save at the next step boundary instead of dying mid-step (docs/operations.md).

SIGTERM (plain `scancel`, Kubernetes, cloud spot reclaim: all give a grace period), SIGINT (Ctrl-C)
and SIGUSR1 (Slurm's `--signal=USR1@N` warning before the time limit, or a manual
`scancel --signal=USR1`) only set a flag here; `LastCheckpoint` acts on it after the current
optimizer step: every rank saves `last.ckpt` together, under Slurm a USR1 requeues the job, and
the process exits with 128 + the signal number. Data loader workers ignore these signals, so a
signal sent to the whole process group (a terminal's Ctrl-C, `scancel`) does not kill them under
the main process mid-save; they end with it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys

log = logging.getLogger(__name__)
STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1")


def parse_signals(names, field: str) -> list[signal.Signals]:
    """`["SIGTERM", "INT", ...]` -> signals, raising ValueError naming `field` for anything else."""
    signals = []
    for name in names or []:
        full = str(name).upper() if str(name).upper().startswith("SIG") else f"SIG{str(name).upper()}"
        if full not in STOP_SIGNALS:
            raise ValueError(f"{field}: {name!r} is not one of {list(STOP_SIGNALS)}")
        signals.append(signal.Signals[full])
    return signals


class StopFlag:
    """Handlers for `signals` that record the first one received. After a SIGINT the default handler is
    back, so a second Ctrl-C interrupts at once (without a checkpoint). Install from the main thread."""

    def __init__(self, signals: list[signal.Signals]):
        self.signals = list(signals)
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, object] = {}

    def install(self) -> None:
        for signum in self.signals:
            self._previous.setdefault(signum, signal.getsignal(signum))
            signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def _handle(self, signum: int, frame) -> None:
        if self.received is None:
            self.received = signal.Signals(signum)
            sys.stderr.write(f"clap_train: received {self.received.name}: saving last.ckpt after this step"
                             f"{'; press Ctrl-C again to quit without saving' if signum == signal.SIGINT else ''}\n")
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: the main process decides when workers end (module docstring)."""
    for name in STOP_SIGNALS:
        signal.signal(signal.Signals[name], signal.SIG_IGN)


def slurm_job_id() -> str | None:
    """The id `scontrol requeue` takes (`<array job>_<task>` for array jobs), None outside a Slurm job."""
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def requeue_slurm_job(job_id: str) -> bool:
    """`scontrol requeue <job_id>`; True when it succeeded (failures are logged, not raised)."""
    try:
        result = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60,
                                check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("scontrol requeue %s failed: %s", job_id, exc)
        return False
    if result.returncode != 0:
        log.warning("scontrol requeue %s failed (exit %d): %s", job_id, result.returncode, result.stderr.strip())
        return False
    log.info("requeued Slurm job %s", job_id)
    return True
