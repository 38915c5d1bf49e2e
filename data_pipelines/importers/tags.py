"""A tags-only dataset (AudioSet-style): a CSV of audio file + labels, captioned by a template.

The CSV names each clip in a file column (default: the first of `file`, `filename`, `audio`,
`path`, `YTID`) and its labels in a labels column (default: the first of `labels`,
`positive_labels`, `tags`, `label`), joined by `;` or `,`. AudioSet's segment CSVs
(`# YTID, start_seconds, end_seconds, positive_labels` header in a comment) read as they are.
An optional label map (AudioSet's `class_labels_indices.csv`: `index, mid, display_name`, or any
CSV whose first column is the label and last column the name) turns ids into names.

A clip's audio is the file column's path under the audio directory if it exists, else a file
whose stem is `<value>`, `Y<value>` or `<value>_<start>` (with `start_seconds` when present).
"""

from __future__ import annotations

from pathlib import Path

from data_pipelines.captions import split_list, template_caption
from data_pipelines.importers.common import AudioIndex, read_csv, youtube_stems
from data_pipelines.manifest import make_key

FILE_COLUMNS = ("file", "filename", "file_name", "audio", "path", "YTID", "ytid")
LABEL_COLUMNS = ("labels", "positive_labels", "tags", "label")


def read_label_map(path: str | Path) -> dict[str, str]:
    """{label id: name}; for AudioSet both the `mid` and the `index` map to `display_name`."""
    records = read_csv(Path(path))
    if not records:
        raise ValueError(f"label_map: {path} holds no rows")
    mapping = {}
    for record in records:
        columns = list(record)
        name = record.get("display_name") or record[columns[-1]]
        if "mid" in record:
            mapping[record["mid"]] = name
        mapping[record[columns[0]]] = name
    return mapping


def _pick(columns: list[str], wanted: str | None, defaults: tuple[str, ...], what: str) -> str:
    if wanted:
        if wanted not in columns:
            raise ValueError(f"{what}: no column {wanted!r} in {columns}")
        return wanted
    for column in defaults:
        if column in columns:
            return column
    raise ValueError(f"{what}: none of {defaults} in {columns}; name the column")


def import_tags(
    root: str | Path,
    csv_path: str | Path,
    label_map: str | Path | None = None,
    file_column: str | None = None,
    labels_column: str | None = None,
    audio_dir: str | Path | None = None,
) -> tuple[list[dict], list[dict]]:
    """Manifest rows for a tags-only CSV (see the module docstring).

    Returns:
        (rows, missing): missing lists `{"id", "reason"}` for clips without audio or labels.
    Raises:
        ValueError naming `file_column` / `labels_column` when the column is absent.
    """
    root = Path(root)
    csv_path = Path(csv_path) if Path(csv_path).is_absolute() else root / csv_path
    records = read_csv(csv_path)
    if not records:
        return [], []
    columns = list(records[0])
    file_column = _pick(columns, file_column, FILE_COLUMNS, "file_column")
    labels_column = _pick(columns, labels_column, LABEL_COLUMNS, "labels_column")
    names = read_label_map(label_map) if label_map else {}
    audio_root = Path(audio_dir) if audio_dir else root
    index = AudioIndex(audio_root)
    rows, missing = [], []
    for record in records:
        value = record[file_column]
        labels = [names.get(label, label) for label in split_list(record[labels_column], ";,")]
        if not labels:
            missing.append({"id": value, "reason": "no labels"})
            continue
        audio = audio_root / value
        if not (value and audio.is_file()):
            audio = index.find(Path(value).stem, *youtube_stems(value, record.get("start_seconds", "")))
        if audio is None:
            missing.append({"id": value, "reason": "audio file not found"})
            continue
        original = {"dataset": csv_path.stem, **{k: v for k, v in record.items() if k != labels_column and v}}
        original["labels"] = split_list(record[labels_column], ";,")
        rows.append(
            {
                "audio": str(audio),
                "key": make_key(audio.relative_to(audio_root).as_posix()),
                "text": [template_caption(labels)],
                "tags": labels,
                "original_data": original,
            }
        )
    return rows, missing
