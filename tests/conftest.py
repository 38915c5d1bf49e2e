"""Suite-wide setup: one intra-op thread per test process and per subprocess it starts, and the grouping of
tests onto pytest-xdist workers.

The suite runs many small processes side by side (DDP ranks, data workers, entry-point runs); with torch's
default of one thread per core each of them spins on every core. Set before torch is imported, so OpenMP
reads it too; subprocesses inherit it. A value set by the caller is kept. Tests of the automatic thread
choice remove it from the subprocess environment themselves.

`python -m pytest` runs on up to 4 xdist workers (`-n auto --maxprocesses 4 --dist loadgroup` in
pyproject.toml; `-p no:xdist` or `-n 0` runs in one process). Most tests use one core (one thread,
subprocesses that wait), so two workers on two cores nearly halve the wall time. Each test file is one
group, so its module fixtures are built once; the files that start a Slurm cluster share a group, so two
clusters never run at once.
"""

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

import clap_train.config_sets  # noqa: F401  (registers the `open_sets` node conf/train.yaml lists)

SLURM_FILES = {"test_slurm_requeue.py", "test_slurm_make_shards.py"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        group = "slurm" if item.path.name in SLURM_FILES else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))
