"""Build WebDataset shards (48 kHz mono FLAC + JSON) from a manifest or a directory of captioned audio.

    python -m data_pipelines.make_shards --manifest M.jsonl --out DIR [--split train]
        [--samples-per-shard 512] [--workers 4] [--seed 0] [--resume] [--num-tasks N --task-index I]
    python -m data_pipelines.make_shards --audio-dir D --out DIR ...

Rows are shuffled deterministically by `--seed`, decoded in worker processes (forkserver/spawn:
audio libraries can deadlock in forked children) and written in shuffled order, so the shards do
not depend on `--workers`. Rows naming the same audio file are one clip with all their captions
(tags united; the report counts the merged rows). Unreadable or empty audio, missing files, rows
without caption or tags and repeated keys are skipped and listed in `DIR/report.json`, never fatal. A non-empty `DIR` is
refused unless `--resume`, which keeps the completed shards, skips their keys and refuses when the
manifest, split, seed or shard size differ from the first run (recorded in `DIR/make_shards.json`).
With `--num-tasks` (or inside a Slurm array job) the run is one task of several sharing `DIR`
(data_pipelines.tasks); `python -m data_pipelines.merge_shards DIR` joins them.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import random
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from clap_train.cli import ArgumentParser, run_tool
from data_pipelines.dedup import HASHES_FILE, HashLog
from data_pipelines.encode import CODECS, encode_row
from data_pipelines.fingerprint import Exclusions, read_exclusions
from data_pipelines.manifest import merge_rows, read_manifest, scan_audio_dir
from data_pipelines.shards import SIZES_FILE, ShardWriter, tar_keys
from data_pipelines.tasks import Task, resolve_task

RUN_FILE = "make_shards.json"
REPORT_FILE = "report.json"


def _init_worker() -> None:
    torch.set_num_threads(1)


def _existing_shards(out_dir: Path, prefix: str) -> tuple[set[str], int, list[Path]]:
    """Keys already written to `prefix` shards in `out_dir`, the next free shard index, the shards."""
    for leftover in out_dir.glob(f"{prefix}-*.tmp"):
        leftover.unlink()  # an interrupted write: its samples are not in any completed shard
    keys, next_index, shards = set(), 0, []
    for shard in sorted(out_dir.glob(f"{prefix}-*.tar")):
        stem, _, index = shard.stem.rpartition("-")
        if stem != prefix or not index.isdigit():
            continue  # e.g. `train-t0001-000000.tar` when looking for `train-000003.tar`
        keys.update(tar_keys(shard))
        next_index = max(next_index, int(index) + 1)
        shards.append(shard)
    return keys, next_index, shards


def _check_output_dir(out_dir: Path, run: dict, resume: bool, task: Task | None) -> None:
    """Refuse to mix runs: a non-empty dir needs --resume and the same run settings.

    In a multi-task run the folder is shared: a task refuses only when it already ran there
    (without --resume) or when another task's settings differ from its own.
    """
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return
    run_file = out_dir / (task.file(RUN_FILE) if task else RUN_FILE)
    if task is None and not resume:
        raise SystemExit(f"make_shards: output dir {out_dir} is not empty; pass --resume to continue that run")
    if task is not None and run_file.is_file() and not resume:
        raise SystemExit(f"make_shards: task {task.index} already ran in {out_dir}; pass --resume to continue it")
    if task is None and not run_file.is_file():
        raise SystemExit(f"make_shards: {out_dir} holds no {RUN_FILE}: it was not written by make_shards")
    shared = {k: v for k, v in run.items() if k != "task_index"}
    for other in sorted(out_dir.glob("make_shards*.json")):
        previous = json.loads(other.read_text())
        if {k: v for k, v in previous.items() if k != "task_index"} != shared:
            raise SystemExit(f"make_shards: {other.name} in {out_dir} has different settings: {previous}, now {run}")


def select_rows(
    rows: list[dict], seed: int, exclude: Exclusions | None = None
) -> tuple[list[dict], list[dict], int]:
    """Merge rows sharing an audio file, drop rows without caption or tags, repeated keys and keys
    or file names in `exclude`, then shuffle by `seed`.

    Returns:
        (rows to encode, skipped `{"key", "audio", "reason"}`, number of rows merged into another).
    """
    rows, num_merged = merge_rows(rows)
    kept, skipped, seen = [], [], set()
    for row in rows:
        excluded = exclude.row_reason(row) if exclude is not None else None
        if excluded:
            skipped.append({"key": row["key"], "audio": row["audio"], "reason": excluded})
        elif row["key"] in seen:
            skipped.append({"key": row["key"], "audio": row["audio"], "reason": "repeated key"})
        elif not row["text"] and not row["tags"]:
            skipped.append({"key": row["key"], "audio": row["audio"], "reason": "no caption or tags"})
        else:
            seen.add(row["key"])
            kept.append(row)
    random.Random(seed).shuffle(kept)
    return kept, skipped, num_merged


def make_shards(
    rows: list[dict],
    out_dir: str | Path,
    split: str = "train",
    samples_per_shard: int = 512,
    num_workers: int = 0,
    seed: int = 0,
    resume: bool = False,
    run: dict | None = None,
    skipped: list[dict] | None = None,
    task: Task | None = None,
    exclude: Exclusions | None = None,
    codec: str = "flac",
) -> dict:
    """Encode `rows` (see data_pipelines.manifest) into shards in `out_dir`; returns the report.

    Args:
        num_workers: worker processes; 0 or 1 encodes in this process.
        run: settings recorded in `make_shards.json` and compared on --resume (defaults to
            split, seed, samples_per_shard and codec).
        skipped: rows already rejected upstream (e.g. audio without a sidecar), copied to the report.
        task: encode only this task's part of the rows, into its own files (data_pipelines.tasks);
            task 0 reports the rows skipped or merged before the split.
        exclude: keys, file names and fingerprints to leave out (data_pipelines.fingerprint).
        codec: audio member format, one of `encode.CODECS`.
    Raises:
        SystemExit when `out_dir` is not empty and `resume` is false, or settings differ on resume.
        ValueError naming `samples_per_shard`, `num_workers` or `codec` when out of range.
    """
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard: must be >= 1, got {samples_per_shard}")
    if num_workers < 0:
        raise ValueError(f"num_workers: must be >= 0, got {num_workers}")
    if codec not in CODECS:
        raise ValueError(f"codec: must be one of {CODECS}, got {codec!r}")
    out_dir = Path(out_dir)
    run = {"split": split, "seed": seed, "samples_per_shard": samples_per_shard, "codec": codec, **(run or {})}
    if task is not None:
        run.update(num_tasks=task.count, task_index=task.index)
    _check_output_dir(out_dir, run, resume, task)
    out_dir.mkdir(parents=True, exist_ok=True)
    own = task.file if task is not None else str
    (out_dir / own(RUN_FILE)).write_text(json.dumps(run, indent=1) + "\n")
    prefix = task.prefix(split) if task is not None else split
    done_keys, start_index, done_shards = _existing_shards(out_dir, prefix)

    selected, skipped_here, num_merged = select_rows(rows, seed, exclude)
    skipped = list(skipped or []) + skipped_here
    num_excluded = sum(item["reason"].startswith("excluded") for item in skipped_here)
    order = {row["key"]: position for position, row in enumerate(selected)}  # run-wide, for cross-task duplicates
    if task is not None:
        selected = task.take(selected)
        if task.index != 0:
            skipped, num_merged, num_excluded = [], 0, 0
    todo = [row for row in selected if row["key"] not in done_keys]
    hash_log = HashLog(out_dir / own(HASHES_FILE), done_keys, done_shards, order)
    written, seconds, num_duplicates = 0, 0.0, 0
    writer = ShardWriter(out_dir, prefix, samples_per_shard, start_index=start_index, audio_extension=codec,
                         sizes_file=own(SIZES_FILE))
    with writer:
        encode = functools.partial(encode_row, codec=codec)
        if num_workers <= 1:
            results = map(encode, todo)
            pool = None
        else:
            method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
            pool = multiprocessing.get_context(method).Pool(num_workers, initializer=_init_worker)
            results = pool.imap(encode, todo, chunksize=4)
        try:
            for result in tqdm(results, total=len(todo), desc=f"make_shards {prefix}", unit="clip", disable=None):
                if "reason" not in result:
                    first = hash_log.duplicate_of(result["pcm_sha1"])
                    excluded = exclude.hash_reason(result["pcm_sha1"]) if exclude is not None else None
                    if excluded:
                        result = {"key": result["key"], "audio": result["audio"], "reason": excluded}
                        num_excluded += 1
                    elif first is not None:
                        result = {"key": result["key"], "audio": result["audio"],
                                  "reason": f"duplicate of {first} (same decoded PCM)"}
                        num_duplicates += 1
                if "reason" in result:
                    skipped.append(result)
                    continue
                writer.write(result["key"], result["data"], result["meta"])
                hash_log.add(result["key"], result["pcm_sha1"], order[result["key"]])
                written += 1
                seconds += result["seconds"]
        finally:
            hash_log.close()
            if pool is not None:
                pool.terminate()
    report = {
        "split": split,
        "written": written,
        "already_present": len(selected) - len(todo),
        "num_merged_rows": num_merged,
        "num_duplicates": num_duplicates,
        "num_excluded": num_excluded,
        "num_skipped": len(skipped),
        "hours": round(seconds / 3600, 6),
        "shards": writer.sizes,
        "skipped": skipped,
    }
    if task is not None:
        report.update(task_index=task.index, num_tasks=task.count)
    write_report(out_dir / own(REPORT_FILE), report)
    return report


def write_report(path: Path, report: dict) -> None:
    tmp_path = path.with_name(path.name + ".tmp")
    tmp_path.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp_path, path)  # a task's report appears whole: merge_shards reads it as "finished"


def print_report(report: dict, file=sys.stderr) -> None:
    print(
        f"make_shards: wrote {report['written']} samples ({report['hours']:.3f} h) into {len(report['shards'])} "
        f"shards; {report['already_present']} already present; {report['num_merged_rows']} rows merged into "
        f"the row of the same audio file; skipped {report['num_skipped']} (of which {report['num_duplicates']} "
        f"duplicates, {report['num_excluded']} excluded)",
        file=file,
    )
    for item in report["skipped"][:20]:
        print(f"  skipped {item.get('audio')}: {item['reason']}", file=file)
    if report["num_skipped"] > 20:
        print(f"  ... {report['num_skipped'] - 20} more in report.json", file=file)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m data_pipelines.make_shards", description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--manifest", help="CSV or JSONL manifest (audio paths relative to it)")
    source.add_argument("--audio-dir", help="directory of audio files with .txt/.json caption sidecars")
    parser.add_argument("--out", required=True, help="output directory for the shards")
    parser.add_argument("--split", default="train", help="shard name prefix (default: train)")
    parser.add_argument("--samples-per-shard", type=int, default=512)
    parser.add_argument("--workers", type=int, default=4, help="worker processes (0: in this process)")
    parser.add_argument("--seed", type=int, default=0, help="shuffle seed")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    parser.add_argument("--codec", default="flac", help=f"audio member format, one of {', '.join(CODECS)}")
    parser.add_argument("--exclude", action="append", default=[], metavar="FILE",
                        help="leave out the clips in FILE: fingerprint hash lists, keys or file names (repeatable)")
    parser.add_argument("--num-tasks", type=int, help="split the run into N tasks (default: SLURM_ARRAY_TASK_COUNT)")
    parser.add_argument("--task-index", type=int, help="this task, 0..N-1 (default: from SLURM_ARRAY_TASK_ID)")
    args = parser.parse_args(argv)
    task = resolve_task(args.num_tasks, args.task_index)
    if args.codec not in CODECS:
        raise SystemExit(f"make_shards: --codec must be one of {', '.join(CODECS)}, got {args.codec!r}")
    for name, value, low in (("--samples-per-shard", args.samples_per_shard, 1), ("--workers", args.workers, 0)):
        if value < low:
            raise SystemExit(f"make_shards: {name} must be >= {low}, got {value}")
    exclude = read_exclusions(args.exclude) if args.exclude else None

    try:
        if args.manifest:
            rows, skipped = read_manifest(args.manifest), []
            source_name = {"manifest": str(Path(args.manifest).resolve())}
        else:
            rows, skipped = scan_audio_dir(args.audio_dir)
            source_name = {"audio_dir": str(Path(args.audio_dir).resolve())}
    except (OSError, ValueError, KeyError) as error:
        raise SystemExit(f"make_shards: {'--manifest' if args.manifest else '--audio-dir'}: {error}") from None
    if args.exclude:
        source_name["exclude"] = [str(Path(path).resolve()) for path in args.exclude]
    report = make_shards(
        rows, args.out, args.split, args.samples_per_shard, args.workers, args.seed, args.resume, source_name, skipped,
        task, exclude, args.codec,
    )
    print_report(report)
    return 0


if __name__ == "__main__":
    run_tool(main)
