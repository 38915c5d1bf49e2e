"""ESC-50: `meta/esc50.csv` (`filename, fold, target, category, esc10, src_file, take`) and `audio/`.

Each clip gets its class as a tag and the template caption `the sound of <class>` (underscores
become spaces: `chirping_birds` -> `the sound of chirping birds`). The fold is kept in
`original_data` so evaluation can hold folds out.
"""

from __future__ import annotations

from pathlib import Path

from data_pipelines.captions import clean_label, template_caption
from data_pipelines.importers.common import find_file, read_csv
from data_pipelines.manifest import make_key


def import_esc50(
    root: str | Path, folds: list[int] | None = None, audio_dir: str | Path | None = None, csv_path: str | None = None
) -> tuple[list[dict], list[dict]]:
    """Manifest rows for ESC-50, optionally only `folds` (1..5).

    Returns:
        (rows, missing): missing lists `{"id", "reason"}` for files not found.
    Raises:
        ValueError naming `folds` when a fold is outside 1..5.
    """
    if folds is not None and any(fold not in range(1, 6) for fold in folds):
        raise ValueError(f"folds: ESC-50 folds are 1..5, got {folds}")
    root = Path(root)
    audio_root = Path(audio_dir) if audio_dir else root / "audio"
    rows, missing = [], []
    for record in read_csv(find_file(root, "esc50.csv", csv_path)):
        fold = int(record["fold"])
        if folds is not None and fold not in folds:
            continue
        audio = audio_root / record["filename"]
        if not audio.is_file():
            missing.append({"id": record["filename"], "reason": "audio file not found"})
            continue
        label = clean_label(record["category"])
        original = {"dataset": "esc50", "fold": fold, "target": int(record["target"]), "category": record["category"]}
        original.update({k: record[k] for k in ("esc10", "src_file", "take") if record.get(k)})
        rows.append(
            {
                "audio": str(audio),
                "key": make_key(record["filename"]),
                "text": [template_caption([label])],
                "tags": [label],
                "original_data": original,
            }
        )
    return rows, missing
