"""AudioCaps: `{train,val,test}.csv` with `audiocap_id, youtube_id, start_time, caption`.

The CSVs come from github.com/cdjkim/audiocaps (`dataset/`); the audio is downloaded by each user,
so file names vary. A clip is found under the audio directory by any of these stems:
`<audiocap_id>`, `<youtube_id>`, `Y<youtube_id>`, `<youtube_id>_<start>`, `Y<youtube_id>_<start>`
(start as written, as integer seconds, with decimals, or in milliseconds). Rows that share a
YouTube clip (val/test hold 5 captions per clip) become one sample with several captions.
"""

from __future__ import annotations

from pathlib import Path

from data_pipelines.importers.common import AudioIndex, find_file, read_csv, youtube_stems
from data_pipelines.manifest import make_key

SPLITS = ("train", "val", "test")


def import_audiocaps(
    root: str | Path, split: str = "train", audio_dir: str | Path | None = None, csv_path: str | None = None
) -> tuple[list[dict], list[dict]]:
    """Manifest rows for one AudioCaps split.

    Returns:
        (rows, missing): missing lists `{"id", "reason"}` for clips whose audio is not found.
    Raises:
        ValueError naming `split` when unknown; FileNotFoundError when the CSV is missing.
    """
    if split not in SPLITS and csv_path is None:
        raise ValueError(f"split: AudioCaps splits are {SPLITS}, got {split!r}")
    root = Path(root)
    records = read_csv(find_file(root, f"{split}.csv", csv_path))
    index = AudioIndex(Path(audio_dir) if audio_dir else root, prefer=split)
    clips: dict[tuple[str, str], dict] = {}
    for record in records:
        clip = clips.setdefault((record["youtube_id"], record["start_time"]), {"ids": [], "captions": []})
        clip["ids"].append(record["audiocap_id"])
        if record["caption"]:
            clip["captions"].append(record["caption"])
    rows, missing = [], []
    for (youtube_id, start_time), clip in clips.items():
        audio = index.find(*clip["ids"], *youtube_stems(youtube_id, start_time))
        if audio is None:
            missing.append({"id": youtube_id, "reason": "audio file not found"})
            continue
        original = {"dataset": "audiocaps", "split": split, "youtube_id": youtube_id, "start_time": start_time}
        original["audiocap_ids"] = clip["ids"]
        rows.append(
            {
                "audio": str(audio),
                "key": make_key(audio.name),
                "text": clip["captions"],
                "tags": [],
                "original_data": original,
            }
        )
    return rows, missing
