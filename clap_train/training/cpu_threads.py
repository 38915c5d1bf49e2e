"""CPU thread counts that leave room for the data workers (and for other jobs on a shared machine).

torch starts one intra-op thread per core. A CPU training process that also runs `data.num_workers`
loader processes then has more busy threads than cores, and OpenMP threads that wait for work spin:
on a loaded 2-core machine the demo burned ~4x the CPU of a quiet run. So on the CPU each training
process uses `max(1, cores per process - data workers)` intra-op threads and 1 inter-op thread, unless
`OMP_NUM_THREADS` or the `cpu_threads` config key says otherwise; data workers stay single-threaded
(torch's DataLoader sets 1 thread in each). `set_spin_policy` runs before torch is imported. Measured
in `bench/cpu_contention.py` (figures in the README).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)
# Wait policy of idle OpenMP threads: GNU libgomp (torch's Linux wheels) reads OMP_WAIT_POLICY, Intel's
# runtime KMP_BLOCKTIME. PASSIVE / 0 ms: sleep instead of spinning. Only set when the user did not.
SPIN_POLICY = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}


def set_spin_policy(environ: dict | None = None) -> None:
    """Set `SPIN_POLICY` in the environment where unset; effective only before torch (OpenMP) is loaded.
    Data workers and DDP ranks inherit it."""
    environ = os.environ if environ is None else environ
    for key, value in SPIN_POLICY.items():
        environ.setdefault(key, value)


def available_cores() -> int:
    """Cores this process may run on (its affinity mask: Slurm, taskset and containers restrict it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def main_process_threads(num_cores: int, num_workers: int, processes_per_machine: int = 1) -> int:
    """Intra-op threads of one training process: its share of the cores minus its data workers, at least 1."""
    return max(1, num_cores // max(1, processes_per_machine) - max(0, num_workers))


def configure_cpu_threads(cpu_threads: int | None, num_workers: int, processes_per_machine: int = 1,
                          environ: dict | None = None) -> int:
    """Set torch's intra-op (and inter-op: 1) thread counts of a CPU training process; log the choice once.

    Args:
        cpu_threads: the config's `cpu_threads`; None chooses `main_process_threads`, unless OMP_NUM_THREADS
            is set, which torch already follows and is left alone.
        num_workers: the process's training data workers (`data.num_workers`).
        processes_per_machine: training processes sharing the machine (CPU DDP ranks on one node).
    Returns the intra-op thread count in effect.
    Raises:
        ValueError naming `cpu_threads` when it is < 1.
    """
    import torch

    environ = os.environ if environ is None else environ
    if cpu_threads is not None and cpu_threads < 1:
        raise ValueError(f"cpu_threads must be >= 1 or null (automatic), got {cpu_threads}")
    cores = available_cores()
    if cpu_threads is None and environ.get("OMP_NUM_THREADS"):
        threads, reason = torch.get_num_threads(), f"OMP_NUM_THREADS={environ['OMP_NUM_THREADS']}"
    else:
        threads = cpu_threads or main_process_threads(cores, num_workers, processes_per_machine)
        reason = "cpu_threads" if cpu_threads else (f"{cores} cores / {processes_per_machine} process(es) - "
                                                    f"{num_workers} data worker(s)")
        torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)  # the inter-op pool serves torch.jit.fork only; CPU autograd uses its own
    except RuntimeError:  # already started (a second run in the same process): keep it
        pass
    log.info("CPU threads: %d intra-op per process (%s); data workers 1 each; OMP_WAIT_POLICY=%s",
             threads, reason, environ.get("OMP_WAIT_POLICY", "unset"))
    return threads
