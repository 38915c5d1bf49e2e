"""Read the records of an offline W&B run file (`run-<id>.wandb`) for assertions in tests.

The file is W&B's LevelDB-style log: a 7-byte header (`:W&B`, magic 0xBEE1, version 0), then 32 KiB
blocks of chunks, each `<crc32 u32><length u16><type u8>` + data; FULL (1) chunks hold one record,
FIRST (2) / MIDDLE (3) / LAST (4) chunks one record split across blocks. Records are
`wandb_internal_pb2.Record` protobufs. wandb 0.31 ships no reader for it.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK, HEADER, CHUNK_HEADER = 32768, 7, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> list[wandb_internal_pb2.Record]:
    data = Path(path).read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:HEADER])
    if ident != b":W&B" or magic != 0xBEE1 or version != 0:
        raise ValueError(f"{path}: not a W&B run file (header {ident!r}, {magic:#x}, {version})")
    records, pending, pos = [], b"", HEADER
    while pos + CHUNK_HEADER <= len(data):
        space = BLOCK - pos % BLOCK
        if space < CHUNK_HEADER:  # block tail too short for a chunk header: zero padding
            pos += space
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + CHUNK_HEADER])
        chunk = data[pos + CHUNK_HEADER:pos + CHUNK_HEADER + length]
        pos += CHUNK_HEADER + length
        if kind in (FULL, FIRST):
            pending = chunk
        elif kind in (MIDDLE, LAST):
            pending += chunk
        else:
            break  # zero padding at the end of the file
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def history_keys(records) -> set[str]:
    return {item.key or "/".join(item.nested_key) for r in records if r.WhichOneof("record_type") == "history"
            for item in r.history.item}


def config_keys(records) -> set[str]:
    return {item.key or "/".join(item.nested_key) for r in records if r.WhichOneof("record_type") == "config"
            for item in r.config.update}


def artifacts(records) -> list:
    return [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]


def read_finished_records(path: Path, timeout_s: float = 60.0) -> list[wandb_internal_pb2.Record]:
    """`read_records` once the run's `exit` record is on disk (wandb-core writes asynchronously,
    so the file may still grow for a moment after `wandb.finish()` returns)."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = read_records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)
