"""Manifests: the tables of (audio file, captions, tags, metadata) that make_shards turns into shards.

A row, as read by `read_manifest` or `scan_audio_dir`, is a dict:

| key | type | meaning |
|---|---|---|
| `audio` | str | absolute path of the audio file |
| `key` | str | sample key (from a `key` column, else derived from the relative audio path) |
| `text` | list[str] | captions (may be empty: make_shards then uses the tags' template or skips) |
| `tags` | list[str] | keywords (may be empty) |
| `original_data` | dict | every other column, plus `source_audio` (the path as written) |

File formats:
- CSV: `audio`; captions in `caption` or `text` (several joined by `|`) and/or columns
  `caption_1`, `caption_2`, ...; `tags` joined by `;`; optional `key`.
- JSONL: one object per line with `audio`, `caption` or `text` (string or list), `tags` (list or
  `;`-joined string), optional `key` and `original_data` (dict); other fields join `original_data`.
Audio paths are relative to the manifest's directory (absolute paths are kept).
"""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

from data_pipelines.captions import split_list

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".m4a", ".webm"}
_CAPTION_COLUMN = re.compile(r"^caption_?\d+$")
_RESERVED = {"audio", "key", "caption", "text", "captions", "tags", "original_data"}


def make_key(relative_path: str) -> str:
    """A sample key from a relative audio path: the path without extension, `/` `\\` `.` -> `_`."""
    stem = os.path.splitext(relative_path)[0]
    return re.sub(r"[/\\.]", "_", stem).strip() or "_"


def _as_list(value, separators: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return split_list(value, separators)
    if isinstance(value, list):
        return [str(item).strip() for item in value if str(item).strip()]
    raise ValueError(f"expected a string or a list, got {type(value).__name__}")


def _row(audio: str, base: Path, texts: list[str], tags: list[str], key: str | None, extra: dict) -> dict:
    path = Path(audio) if os.path.isabs(audio) else base / audio
    return {
        "audio": str(path),
        "key": key.strip() if key and key.strip() else make_key(audio),
        "text": texts,
        "tags": tags,
        "original_data": {"source_audio": audio, **extra},
    }


def _csv_row(record: dict, base: Path) -> dict:
    texts = []
    for column in ("caption", "text"):
        texts += _as_list(record.get(column), "|")
    caption_columns = sorted((c for c in record if _CAPTION_COLUMN.match(c)), key=lambda c: int(re.sub(r"\D", "", c)))
    texts += [record[c].strip() for c in caption_columns if record[c] and record[c].strip()]
    extra = {k: v for k, v in record.items() if k not in _RESERVED and not _CAPTION_COLUMN.match(k) and v}
    return _row(record["audio"], base, texts, _as_list(record.get("tags"), ";"), record.get("key"), extra)


def _jsonl_row(record: dict, base: Path) -> dict:
    texts = _as_list(record.get("caption"), "|") + _as_list(record.get("text"), "|")
    texts += _as_list(record.get("captions"), "|")
    extra = dict(record.get("original_data") or {})
    extra.update({k: v for k, v in record.items() if k not in _RESERVED})
    return _row(record["audio"], base, texts, _as_list(record.get("tags"), ";"), record.get("key"), extra)


def read_manifest(path: str | Path) -> list[dict]:
    """Read a `.csv` or `.jsonl` manifest into rows (see the module docstring).

    Raises:
        ValueError naming the file and line when a row lacks `audio` or is malformed, or when the
        extension is neither .csv nor .jsonl/.json.
    """
    path = Path(path)
    base = path.parent
    suffix = path.suffix.lower()
    rows = []
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as file:
            reader = csv.DictReader(file)
            if "audio" not in (reader.fieldnames or []):
                raise ValueError(f"manifest {path}: no 'audio' column in {reader.fieldnames}")
            for record in reader:
                rows.append(_csv_row(record, base))
    elif suffix in (".jsonl", ".json"):
        with path.open(encoding="utf-8") as file:
            for line_number, line in enumerate(file, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    if not isinstance(record, dict) or not record.get("audio"):
                        raise ValueError("expected an object with an 'audio' field")
                    rows.append(_jsonl_row(record, base))
                except ValueError as error:
                    raise ValueError(f"manifest {path}:{line_number}: {error}") from error
    else:
        raise ValueError(f"manifest {path}: extension must be .csv or .jsonl, got {suffix!r}")
    return rows


def _read_sidecar(audio_path: Path) -> tuple[list[str], list[str], dict] | None:
    txt, meta = audio_path.with_suffix(".txt"), audio_path.with_suffix(".json")
    if meta.is_file():
        record = json.loads(meta.read_text(encoding="utf-8"))
        texts = _as_list(record.get("caption"), "|") + _as_list(record.get("text"), "|")
        texts += _as_list(record.get("captions"), "|")
        extra = {k: v for k, v in record.items() if k not in _RESERVED}
        return texts, _as_list(record.get("tags"), ";"), extra
    if txt.is_file():
        return [line.strip() for line in txt.read_text(encoding="utf-8").splitlines() if line.strip()], [], {}
    return None


def scan_audio_dir(directory: str | Path) -> tuple[list[dict], list[dict]]:
    """Rows for every audio file under `directory` with a sidecar `<stem>.json` or `<stem>.txt`.

    A `.txt` sidecar holds one caption per line; a `.json` one holds `text`/`caption` (string or
    list), optional `tags` and any other fields (kept in `original_data`).
    Returns:
        (rows, skipped) where skipped lists `{"audio", "reason"}` for files without a sidecar.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"audio_dir: {directory} is not a directory")
    rows, skipped = [], []
    for path in sorted(directory.rglob("*")):
        if path.suffix.lower() not in AUDIO_EXTENSIONS or not path.is_file():
            continue
        relative = path.relative_to(directory).as_posix()
        sidecar = _read_sidecar(path)
        if sidecar is None:
            skipped.append({"audio": relative, "reason": "no caption sidecar (.txt or .json)"})
            continue
        texts, tags, extra = sidecar
        rows.append(_row(relative, directory, texts, tags, extra.pop("key", None), extra))
    return rows, skipped


def _unite(first: list[str], more: list[str]) -> list[str]:
    """`first` then the items of `more` not in it yet, order kept."""
    return first + [item for item in dict.fromkeys(more) if item not in first]


def merge_rows(rows: list[dict]) -> tuple[list[dict], int]:
    """Rows sharing an audio file become one clip (the one-row-per-caption layout of AudioCaps and
    Clotho CSVs): its captions are every row's captions, its tags their union (order kept, repeats
    dropped); key and `original_data` are the first row's, later rows adding fields it lacks.

    Returns:
        (merged rows in first-appearance order, number of rows folded into an earlier one).
    """
    by_audio: dict[str, dict] = {}
    num_merged = 0
    for row in rows:
        audio = os.path.normpath(row["audio"])
        first = by_audio.get(audio)
        if first is None:
            by_audio[audio] = {**row, "text": list(row["text"]), "tags": list(row["tags"]),
                               "original_data": dict(row["original_data"])}
            continue
        num_merged += 1
        first["text"] = _unite(first["text"], row["text"])
        first["tags"] = _unite(first["tags"], row["tags"])
        for field, value in row["original_data"].items():
            first["original_data"].setdefault(field, value)
    return list(by_audio.values()), num_merged


def write_manifest(rows: list[dict], path: str | Path) -> None:
    """Write importer rows (audio path absolute or relative to cwd) as JSONL next to `path`.

    Audio paths are stored relative to the manifest's directory so the tree can be moved whole.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = path.with_name(path.name + ".tmp")
    with tmp_path.open("w", encoding="utf-8") as file:
        for row in rows:
            record = dict(row)
            record["audio"] = os.path.relpath(os.path.abspath(row["audio"]), os.path.abspath(path.parent))
            file.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp_path, path)
