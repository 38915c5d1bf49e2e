"""Join the tasks of a multi-task make_shards run: one `sizes.json` and one `report.json`.

    python -m data_pipelines.merge_shards DIR

Refuses (exit 1, one line) when a task of the run is missing or has not finished (no
`report.tNNNN.json` yet), when the tasks' settings differ, or when a shard listed by a task is
not on disk. Clips that several tasks kept as the same fingerprint are cut to the one a single
process keeps (data_pipelines.dedup): their shards are rewritten. Shards keep their task names (`train-t0000-000000.tar`, ...); train on
`DIR/train-*.tar`. Running it again gives the same files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from clap_train.cli import ArgumentParser, run_tool
from data_pipelines.dedup import HASHES_FILE, drop_cross_task_duplicates
from data_pipelines.make_shards import REPORT_FILE, RUN_FILE, print_report, write_report
from data_pipelines.shards import SIZES_FILE, read_sizes, update_sizes
from data_pipelines.tasks import Task

SUMMED = ("written", "already_present", "num_merged_rows", "num_skipped", "num_duplicates", "num_excluded")


def _refuse(message: str) -> None:
    raise SystemExit(f"merge_shards: {message}")


def merge_shards(out_dir: str | Path) -> dict:
    """Check that every task of the run in `out_dir` finished, then write `sizes.json` and
    `report.json` (counts summed, shards and skipped rows of all tasks); returns the report.

    Raises:
        SystemExit naming the folder and the missing or unfinished task.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        _refuse(f"{out_dir} is not a directory")
    run_files = sorted(out_dir.glob("make_shards.t*.json"))
    if not run_files:
        _refuse(f"{out_dir} holds no make_shards.tNNNN.json: not a multi-task make_shards run (--num-tasks)")
    runs = [json.loads(path.read_text()) for path in run_files]
    num_tasks = runs[0]["num_tasks"]
    shared = {k: v for k, v in runs[0].items() if k != "task_index"}
    for path, run in zip(run_files, runs):
        if {k: v for k, v in run.items() if k != "task_index"} != shared:
            _refuse(f"{path.name} in {out_dir} has other settings than {run_files[0].name}: {run} vs {runs[0]}")
    reports = []
    for index in range(num_tasks):
        task = Task(index, num_tasks)
        if not (out_dir / task.file(RUN_FILE)).is_file():
            _refuse(f"{out_dir}: task {index} of {num_tasks} is missing (no {task.file(RUN_FILE)})")
        report_path = out_dir / task.file(REPORT_FILE)
        if not report_path.is_file():
            _refuse(f"{out_dir}: task {index} of {num_tasks} has not finished (no {report_path.name})")
        reports.append(json.loads(report_path.read_text()))
        missing = [name for name in read_sizes(out_dir, task.file(SIZES_FILE)) if not (out_dir / name).is_file()]
        if missing:
            _refuse(f"{out_dir}: shard {missing[0]} of task {index} is listed in {task.file(SIZES_FILE)} but missing")
    tasks = [Task(index, num_tasks) for index in range(num_tasks)]
    removed = drop_cross_task_duplicates(out_dir, [(t.file(HASHES_FILE), t.file(SIZES_FILE)) for t in tasks])
    sizes = {name: n for t in tasks for name, n in read_sizes(out_dir, t.file(SIZES_FILE)).items()}
    (out_dir / SIZES_FILE).unlink(missing_ok=True)
    update_sizes(out_dir, sizes)
    report = {"split": shared["split"], "num_tasks": num_tasks}
    report.update({field: sum(r[field] for r in reports) for field in SUMMED})
    report["written"] -= len(removed)
    report["num_skipped"] += len(removed)
    report["num_duplicates"] += len(removed)
    report["hours"] = round(sum(r["hours"] for r in reports) - sum(item["seconds"] for item in removed) / 3600, 6)
    report["shards"] = dict(sorted(sizes.items()))
    report["skipped"] = [item for r in reports for item in r["skipped"]] + removed
    write_report(out_dir / REPORT_FILE, report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m data_pipelines.merge_shards", description=__doc__.split("\n")[0])
    parser.add_argument("dir", help="the --out folder of the make_shards tasks")
    args = parser.parse_args(argv)
    report = merge_shards(args.dir)
    print(f"merge_shards: {report['num_tasks']} tasks", file=sys.stderr)
    print_report(report)
    return 0


if __name__ == "__main__":
    run_tool(main)
