"""Suite-wide setup: one intra-op thread per test process and per subprocess it starts, and the grouping of
tests onto pytest-xdist workers.

The suite runs many small processes side by side (DDP ranks, data workers, entry-point runs); with torch's
default of one thread per core each of them spins on every core. Set before torch is imported, so OpenMP
reads it too; subprocesses inherit it. A value set by the caller is kept. Tests of the automatic thread
choice remove it from the subprocess environment themselves.

`python -m pytest` runs on up to 4 xdist workers (`-n auto --maxprocesses 4 --dist loadfile` in
pyproject.toml; `-n 0` runs in one process). Most tests use one core (one thread, subprocesses that
wait), so two workers on two cores nearly halve the wall time. A test file stays on one worker, so its
module fixtures are built once. The Slurm requeue file, the longest and mostly waiting on Slurm's clock,
goes first so that it overlaps with the rest; the Slurm clusters themselves take a lock
(`tests/ops/test_slurm_requeue.py::cluster`), so two never run at once.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import clap_train.config_sets  # noqa: F401  (registers the `open_sets` node conf/train.yaml lists)

FIRST, LAST = "test_slurm_requeue.py", "test_slurm_make_shards.py"  # the two files that start a Slurm cluster


def pytest_collection_modifyitems(config, items):
    """Slurm requeue tests first, the Slurm make_shards test last (stable: the order within files is kept)."""
    items.sort(key=lambda item: {FIRST: 0, LAST: 2}.get(item.path.name, 1))
