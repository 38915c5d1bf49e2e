"""One make_shards run split over N independent tasks (a Slurm array job, or N machines by hand).

Every task reads the whole manifest, merges, filters and shuffles it exactly as a single-process
run does, then encodes every N-th row starting at its index, so the union of the tasks' samples is
the single-process run's samples. Task I writes, beside the other tasks' files in the same folder,

| file | meaning |
|---|---|
| `{split}-t{I:04d}-{index:06d}.tar` | its shards (names carry the task, so tasks never collide) |
| `sizes.t{I:04d}.json` | its shard sizes, updated as each shard completes |
| `make_shards.t{I:04d}.json` | its settings (compared on `--resume` and against the other tasks) |
| `report.t{I:04d}.json` | its report, written last: the task has finished |

`python -m data_pipelines.merge_shards DIR` then writes the one `sizes.json` and `report.json`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    """Task `index` of `count` (0 <= index < count)."""

    index: int
    count: int

    @property
    def tag(self) -> str:
        return f"t{self.index:04d}"

    def file(self, name: str) -> str:
        """`report.json` -> `report.t0002.json`: the task's own copy of a per-run file."""
        stem, dot, extension = name.rpartition(".")
        return f"{stem}.{self.tag}.{extension}" if dot else f"{name}.{self.tag}"

    def prefix(self, split: str) -> str:
        """The shard name prefix of this task: `train` -> `train-t0002` (shards `train-t0002-000000.tar`)."""
        return f"{split}-{self.tag}"

    def take(self, rows: list) -> list:
        return rows[self.index :: self.count]


def _int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"make_shards: {name} must be an integer, got {value!r}") from None


def resolve_task(num_tasks: int | None, task_index: int | None, environ: Mapping[str, str] = os.environ) -> Task | None:
    """The task of this process from `--num-tasks` / `--task-index`, each defaulting to a Slurm array
    job's `SLURM_ARRAY_TASK_COUNT` / `SLURM_ARRAY_TASK_ID` (so submit `--array=0-(N-1)`); None for a
    single-process run. Rerunning one failed task of 16 as its own array job: `sbatch --array=3
    ... --num-tasks 16 --resume` (the index still comes from the array).

    Raises:
        SystemExit with one line naming the flag (or variable) whose value is out of range.
    """
    count_name, index_name = "--num-tasks", "--task-index"
    if num_tasks is None and "SLURM_ARRAY_TASK_COUNT" in environ:
        count_name = "SLURM_ARRAY_TASK_COUNT"
        num_tasks = _int(environ[count_name], count_name)
    if task_index is None and num_tasks is not None and "SLURM_ARRAY_TASK_ID" in environ:
        index_name = "SLURM_ARRAY_TASK_ID"
        task_index = _int(environ[index_name], index_name)
    if num_tasks is None:
        if task_index is not None:
            raise SystemExit("make_shards: --task-index needs --num-tasks (or a Slurm array job)")
        return None
    if num_tasks < 1:
        raise SystemExit(f"make_shards: {count_name} must be >= 1, got {num_tasks}")
    if task_index is None:
        raise SystemExit("make_shards: --num-tasks needs --task-index (or a Slurm array job)")
    if not 0 <= task_index < num_tasks:
        raise SystemExit(f"make_shards: {index_name} must be in [0, {num_tasks - 1}] for {num_tasks} tasks, "
                         f"got {task_index} (Slurm arrays: --array=0-{num_tasks - 1})")
    return Task(task_index, num_tasks)
