"""Suite-wide setup: one intra-op thread per test process and per subprocess it starts.

The suite runs many small processes side by side (DDP ranks, data workers, entry-point runs); with torch's
default of one thread per core each of them spins on every core. Set before torch is imported, so OpenMP
reads it too; subprocesses inherit it. A value set by the caller is kept. Tests of the automatic thread
choice remove it from the subprocess environment themselves.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import clap_train.config_sets  # noqa: F401  (registers the `open_sets` node conf/train.yaml lists)
