"""Parquet / Arrow tables as Hugging Face `datasets` writes them (`to_parquet`, `save_to_disk`) -> manifest.

The table is read with pyarrow in record batches (a table larger than memory works): one
`.parquet` file, one `.arrow` file (IPC stream, as `save_to_disk` writes, or IPC file), or a
directory of them (read in name order). Columns, chosen by flags:

- audio (`--audio-column`, default `audio`): a `datasets.Audio` struct `{bytes, path}` or a path
  string. Bytes are written once per clip to `--extract-dir` (the manifest then points there);
  a struct without bytes, or a string, is a path, relative to `--audio-dir` (default: the table's
  folder) unless absolute.
- captions (`--text-columns`, comma-separated): strings or lists of strings.
- tags (`--tag-columns`): lists of strings, or strings joined by `;` or `,`.
- key (`--key-column`): else the audio path's stem, else `row<index>`.
Every other scalar column goes to `original_data`. pyarrow is the `table` extra.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from data_pipelines.captions import split_list
from data_pipelines.manifest import make_key

_MAGIC = ((b"fLaC", ".flac"), (b"RIFF", ".wav"), (b"OggS", ".ogg"), (b"ID3", ".mp3"), (b"\xff\xfb", ".mp3"),
          (b"\x1aE\xdf\xa3", ".webm"))


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.ipc
        import pyarrow.parquet
    except ImportError:
        raise SystemExit("import_dataset table: reading Parquet/Arrow needs pyarrow: pip install 'clap_train[table]'") \
            from None
    return pyarrow


def table_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".parquet", ".arrow"))
        if not files:
            raise SystemExit(f"import_dataset table: --root {path} holds no .parquet or .arrow files")
        return files
    if path.suffix not in (".parquet", ".arrow") or not path.is_file():
        raise SystemExit(f"import_dataset table: --root {path} is not a .parquet/.arrow file or a folder of them")
    return [path]


def iter_batches(path: Path, batch_size: int = 256) -> Iterator:
    """pyarrow RecordBatches of every file of the table, in order."""
    pa = _pyarrow()
    for file in table_files(path):
        if file.suffix == ".parquet":
            yield from pa.parquet.ParquetFile(file).iter_batches(batch_size=batch_size)
            continue
        source = pa.memory_map(str(file))
        try:
            reader = pa.ipc.open_stream(source)
        except pa.ArrowInvalid:
            reader = pa.ipc.open_file(source)
            yield from (reader.get_batch(i) for i in range(reader.num_record_batches))
            continue
        yield from reader


def _strings(value, separators: str | None, column: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return split_list(value, separators) if separators else [value.strip()] if value.strip() else []
    if isinstance(value, list):
        return [str(v).strip() for v in value if v is not None and str(v).strip()]
    raise SystemExit(f"import_dataset table: column {column!r} holds {type(value).__name__}, not text")


def _check_columns(schema, audio_column: str, text_columns: list[str], tag_columns: list[str],
                   key_column: str | None) -> None:
    names = set(schema.names)
    for flag, columns in (("--audio-column", [audio_column]), ("--text-columns", text_columns),
                          ("--tag-columns", tag_columns), ("--key-column", [key_column] if key_column else [])):
        missing = [c for c in columns if c not in names]
        if missing:
            raise SystemExit(f"import_dataset table: {flag} {missing[0]!r} is not a column; columns: {schema.names}")


def import_table(path: str | Path, out: str | Path, audio_column: str = "audio", text_columns: list[str] | None = None,
                 tag_columns: list[str] | None = None, key_column: str | None = None, audio_dir: str | Path | None = None,
                 extract_dir: str | Path | None = None) -> tuple[int, list[dict]]:
    """Stream the table at `path` into the JSONL manifest `out`; returns (rows written, left out).

    Raises:
        SystemExit with one line naming the flag of a missing column, or the missing extra.
    """
    path, out = Path(path), Path(out)
    text_columns = list(text_columns if text_columns is not None else ["caption"])
    tag_columns = list(tag_columns or [])
    base = Path(audio_dir) if audio_dir else (path if path.is_dir() else path.parent)
    extract_dir = Path(extract_dir) if extract_dir else out.with_name(out.stem + "_audio")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    written, missing, index, checked, extracted = 0, [], 0, False, set()
    with tmp.open("w", encoding="utf-8") as manifest:
        for batch in iter_batches(path):
            if not checked:
                _check_columns(batch.schema, audio_column, text_columns, tag_columns, key_column)
                checked = True
            for record in batch.to_pylist():
                row = _row(record, index, audio_column, text_columns, tag_columns, key_column, base, extract_dir,
                           extracted)
                index += 1
                if "reason" in row:
                    missing.append(row)
                    continue
                row["audio"] = os.path.relpath(row["audio"], out.parent)
                manifest.write(json.dumps(row, ensure_ascii=False) + "\n")
                written += 1
    os.replace(tmp, out)
    return written, missing


def _row(record: dict, index: int, audio_column: str, text_columns: list[str], tag_columns: list[str],
         key_column: str | None, base: Path, extract_dir: Path, extracted: set[str]) -> dict:
    audio = record[audio_column]
    data, name = (audio.get("bytes"), audio.get("path")) if isinstance(audio, dict) else (None, audio)
    key = str(record[key_column]).strip() if key_column and record[key_column] is not None else ""
    key = key or (make_key(os.path.basename(name)) if name else f"row{index:08d}")
    if data:
        suffix = Path(name).suffix if name and Path(name).suffix else next(
            (ext for magic, ext in _MAGIC if data.startswith(magic)), ".audio")
        target = extract_dir / f"{key}{suffix}"
        if str(target) not in extracted:  # several caption rows of one clip: written once
            extract_dir.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            extracted.add(str(target))
        file = target
    elif name:
        file = Path(name) if os.path.isabs(name) else base / name
        if not file.is_file():
            return {"id": key, "reason": f"row {index}: no audio bytes and no file {file}"}
    else:
        return {"id": key, "reason": f"row {index}: empty {audio_column!r}"}
    texts = [t for column in text_columns for t in _strings(record[column], None, column)]
    tags = [t for column in tag_columns for t in _strings(record[column], ";,", column)]
    used = {audio_column, key_column, *text_columns, *tag_columns}
    extra = {k: v for k, v in record.items()
             if k not in used and v is not None and isinstance(v, (str, int, float, bool))}
    if name:
        extra["source_audio"] = name
    return {"audio": str(file.resolve()), "key": key, "text": texts, "tags": tags, "original_data": extra}
