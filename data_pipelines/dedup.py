"""Exact duplicates within one make_shards run, across its tasks too (fingerprints: data_pipelines.fingerprint).

make_shards keeps, of clips with equal fingerprints, the one first in the shuffled order and skips
the others ("duplicate of KEY"). Each run (or task) logs its written samples in `hashes.jsonl`
(`hashes.tIIII.jsonl`): one `{"key", "pcm_sha1", "order"}` per line, `order` being the position
in the run-wide shuffled order. A task only sees its own rows, so `merge_shards` drops the
copies that several tasks kept: all but the lowest `order`, which is what one process keeps.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from data_pipelines.encode import member_seconds
from data_pipelines.fingerprint import audio_hash
from data_pipelines.shards import AUDIO_MEMBERS, iter_tar, read_meta, read_sizes, tar_keys, write_tar

HASHES_FILE = "hashes.jsonl"
MERGE_DUPLICATES_FILE = "merge_duplicates.json"


def read_hash_log(path: Path) -> dict[str, dict]:
    """{key: entry} of a hash log; a torn last line (a crash mid-write) is ignored."""
    entries = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            entries[entry["key"]] = entry
    return entries


class HashLog:
    """The fingerprints of the samples a run has written, and the first key of each fingerprint.

    On a resumed run the log is cut to the samples of completed shards (`done_keys`); samples
    missing from it are fingerprinted again from `shards`.
    """

    def __init__(self, path: Path, done_keys: set[str], shards: list[Path], order: dict[str, int]):
        self.path = path
        entries = {key: entry for key, entry in read_hash_log(path).items() if key in done_keys}
        missing = done_keys - set(entries)
        for shard in shards if missing else []:
            for key, members in iter_tar(shard):
                ext = next((e for e in AUDIO_MEMBERS if e in members), None)
                if key in missing and ext is not None:
                    entries[key] = {"key": key, "pcm_sha1": audio_hash(members[ext], ext), "order": order.get(key, -1)}
        self.first = {}
        for entry in sorted(entries.values(), key=lambda e: e["order"]):
            self.first.setdefault(entry["pcm_sha1"], entry["key"])
        tmp_path = path.with_name(path.name + ".tmp")
        tmp_path.write_text("".join(json.dumps(e) + "\n" for e in entries.values()), encoding="utf-8")
        os.replace(tmp_path, path)
        self._file = path.open("a", encoding="utf-8")

    def duplicate_of(self, digest: str) -> str | None:
        return self.first.get(digest)

    def add(self, key: str, digest: str, order: int) -> None:
        self.first.setdefault(digest, key)
        self._file.write(json.dumps({"key": key, "pcm_sha1": digest, "order": order}) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def drop_cross_task_duplicates(out_dir: Path, task_files: list[tuple[str, str]]) -> list[dict]:
    """Remove from the shards every clip that an earlier-ordered clip of another task duplicates.

    Args:
        task_files: per task, (its hash log file name, its sizes file name); the sizes file is
            updated for each rewritten shard (a shard left empty is dropped from it, then deleted).
    Returns:
        every clip removed by this and earlier merges of `out_dir`, as report rows
        `{"key", "audio", "reason", "at_merge": true, "seconds"}`, recorded in `merge_duplicates.json`.
    """
    located = {}  # key -> (order, sha1, shard name, task position)
    for position, (log_name, sizes_name) in enumerate(task_files):
        entries = read_hash_log(out_dir / log_name)
        for shard in read_sizes(out_dir, sizes_name):
            for key in tar_keys(out_dir / shard):
                if key in entries:
                    located[key] = (entries[key]["order"], entries[key]["pcm_sha1"], shard, position)
    first, drops = {}, {}  # sha1 -> key; shard -> {key: reason}
    for key, (_, digest, shard, _) in sorted(located.items(), key=lambda item: item[1][0]):
        if digest in first:
            drops.setdefault(shard, {})[key] = f"duplicate of {first[digest]} (same decoded PCM)"
        else:
            first[digest] = key
    removed_path = out_dir / MERGE_DUPLICATES_FILE
    removed = json.loads(removed_path.read_text()) if removed_path.is_file() else []
    for shard, reasons in sorted(drops.items()):  # one shard in memory at a time
        kept = []
        for key, members in iter_tar(out_dir / shard):
            if key not in reasons:
                kept.append((key, members))
            elif key not in {item["key"] for item in removed}:  # a rerun after a crash mid-merge
                audio = read_meta(members).get("original_data", {}).get("source_audio", "")
                ext = next(e for e in AUDIO_MEMBERS if e in members)
                removed.append({"key": key, "audio": audio, "reason": reasons[key], "at_merge": True,
                                "seconds": member_seconds(members[ext], ext)})
        _write_json(removed_path, removed)  # before the shard: a crash in between is found again
        sizes_name = task_files[located[next(iter(reasons))][3]][1]
        sizes = read_sizes(out_dir, sizes_name)
        if kept:
            sizes[shard] = write_tar(out_dir / shard, kept)
            _write_json(out_dir / sizes_name, sizes)
        else:
            del sizes[shard]
            _write_json(out_dir / sizes_name, sizes)
            (out_dir / shard).unlink()
    return removed


def _write_json(path: Path, value) -> None:
    tmp_path = path.with_name(path.name + ".tmp")
    tmp_path.write_text(json.dumps(value, indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp_path, path)
