"""Clotho: `clotho_captions_<split>.csv` with `file_name, caption_1..caption_5`.

Splits are `development`, `validation` and `evaluation` (v2.1). The audio of a split sits in a
folder named after it (`development/`, or `clotho_audio_development/development/`), found by file
name under the audio directory. When `clotho_metadata_<split>.csv` is present, its `keywords`
(`;`-joined) become the sample's tags and its other fields join `original_data`.
"""

from __future__ import annotations

import re
from pathlib import Path

from data_pipelines.captions import split_list
from data_pipelines.importers.common import AudioIndex, find_file, read_csv
from data_pipelines.manifest import make_key

_CAPTION_COLUMN = re.compile(r"^caption_\d+$")


def import_clotho(
    root: str | Path, split: str = "development", audio_dir: str | Path | None = None, csv_path: str | None = None
) -> tuple[list[dict], list[dict]]:
    """Manifest rows for one Clotho split.

    Returns:
        (rows, missing): missing lists `{"id", "reason"}` for files not found.
    Raises:
        FileNotFoundError when the captions CSV is missing.
    """
    root = Path(root)
    records = read_csv(find_file(root, f"clotho_captions_{split}.csv", csv_path))
    metadata = {}
    metadata_files = sorted(root.rglob(f"clotho_metadata_{split}.csv"))
    if metadata_files:
        metadata = {record["file_name"]: record for record in read_csv(metadata_files[0])}
    index = AudioIndex(Path(audio_dir) if audio_dir else root, prefer=split)
    rows, missing = [], []
    for record in records:
        file_name = record["file_name"]
        audio = index.find(Path(file_name).stem)
        if audio is None:
            missing.append({"id": file_name, "reason": "audio file not found"})
            continue
        columns = sorted((c for c in record if _CAPTION_COLUMN.match(c)), key=lambda c: int(c.split("_")[1]))
        captions = [record[c] for c in columns if record[c]]
        extra = {k: v for k, v in metadata.get(file_name, {}).items() if k not in ("file_name", "keywords") and v}
        rows.append(
            {
                "audio": str(audio),
                "key": make_key(file_name),
                "text": captions,
                "tags": split_list(metadata.get(file_name, {}).get("keywords", ""), ";"),
                "original_data": {"dataset": "clotho", "split": split, "file_name": file_name, **extra},
            }
        )
    return rows, missing
