"""What the command-line tools read: audio folders, manifests and shard patterns as lists of `Entry`.

- a folder: every file below it (recursive) whose extension is a format soundfile reads; keys are the
  paths relative to the folder (`dogs/bark_01.wav`), sorted;
- a CSV or JSONL manifest (the make_shards layout): an `audio` column with paths relative to the
  manifest; keys from a `key` column, else the audio path as written; every other column is kept;
- a shard pattern (`train-{000000..000009}.tar`, globs, `::`-joined): one entry per sample, keyed by
  the shard key; the json member's fields are the columns (`tags`, `text`, `fold` from
  `original_data.fold`);
- a single audio file (its file name is the key).
Entries are only listed here; audio is read later in the data workers (`read_audio`), and a file
that cannot be read is skipped and reported by the caller.
"""

from __future__ import annotations

import csv
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from clap_train.data.shard_format import AUDIO_MEMBERS, expand_shards

MANIFEST_SUFFIXES = (".csv", ".jsonl", ".json")
# soundfile's format names are extensions, plus the usual aliases
_ALIASES = {"aiff": ("aif",), "ogg": ("oga", "opus"), "wav": ("wave",)}


def audio_extensions() -> set[str]:
    """Lower-case extensions (no dot) of the formats this soundfile / libsndfile build reads."""
    names = {name.lower() for name in sf.available_formats()}
    return names | {alias for name in names for alias in _ALIASES.get(name, ())}


@dataclass
class Entry:
    """One clip to embed: `path` of an audio file, or of a tar with the member's (offset, size) in `member`."""

    key: str
    path: str
    member: tuple[int, int] | None = None
    columns: dict = field(default_factory=dict)


def read_audio(entry: Entry) -> tuple[np.ndarray, int]:
    """(wave (L, C) float32, sample rate) of an entry, decoded with soundfile.

    Raises:
        ValueError naming the key for undecodable, empty or non-finite audio.
    """
    try:
        if entry.member is None:
            wave, rate = sf.read(entry.path, dtype="float32", always_2d=True)
        else:
            offset, size = entry.member
            with open(entry.path, "rb") as file:
                file.seek(offset)
                wave, rate = sf.read(io.BytesIO(file.read(size)), dtype="float32", always_2d=True)
    except Exception as error:  # libsndfile raises LibsndfileError, RuntimeError, TypeError...
        raise ValueError(f"{entry.key}: unreadable audio ({type(error).__name__}: {error})") from error
    if wave.size == 0:
        raise ValueError(f"{entry.key}: zero-length audio")
    if not np.isfinite(wave).all():
        raise ValueError(f"{entry.key}: non-finite audio samples")
    return wave, int(rate)


def list_entries(source: str | Path, flag: str = "--audio") -> list[Entry]:
    """The entries of a folder, manifest, shard pattern or audio file (see the module docstring).

    Raises:
        FileNotFoundError naming `flag` when nothing is there; ValueError for a bad manifest or a folder
        without audio.
    """
    text = str(source)
    path = Path(text)
    if path.is_dir():
        return folder_entries(path, flag)
    if text.endswith(".tar") or "::" in text or ".tar" in text and any(c in text for c in "{*?["):
        return shard_entries(text, flag)
    if not path.is_file():
        raise FileNotFoundError(f"{flag}: {text} does not exist")
    if path.suffix.lower() in MANIFEST_SUFFIXES:
        return manifest_entries(path)
    return [Entry(key=path.name, path=str(path))]


def folder_entries(folder: Path, flag: str = "--audio") -> list[Entry]:
    extensions = audio_extensions()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower().lstrip(".") in extensions)
    if not files:
        raise ValueError(f"{flag}: no audio files ({', '.join(sorted(extensions))}) under {folder}")
    return [Entry(key=p.relative_to(folder).as_posix(), path=str(p)) for p in files]


def _manifest_records(path: Path) -> list[dict]:
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as file:
            return list(csv.DictReader(file))
    records = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                record = json.loads(line)
            except ValueError as error:
                raise ValueError(f"manifest {path}:{line_number}: {error}") from error
            if not isinstance(record, dict):
                raise ValueError(f"manifest {path}:{line_number}: expected a JSON object")
            records.append(record)
    return records


def manifest_entries(path: Path) -> list[Entry]:
    """Entries of a CSV / JSONL manifest. Raises ValueError naming the file (and row) on a missing `audio`
    value or a repeated key."""
    entries, seen = [], set()
    for row, record in enumerate(_manifest_records(path), start=1):
        audio = str(record.get("audio") or "").strip()
        if not audio:
            raise ValueError(f"manifest {path}: row {row} has no 'audio' value")
        key = str(record.get("key") or "").strip() or audio
        if key in seen:
            raise ValueError(f"manifest {path}: key {key!r} appears twice (row {row})")
        seen.add(key)
        audio_path = Path(audio) if Path(audio).is_absolute() else path.parent / audio
        columns = {k: v for k, v in record.items() if k not in ("audio", "key")}
        entries.append(Entry(key=key, path=str(audio_path), columns=columns))
    if not entries:
        raise ValueError(f"manifest {path}: no rows")
    return entries


def _meta_columns(meta: dict) -> dict:
    columns = {k: v for k, v in meta.items() if k != "original_data"}
    original = meta.get("original_data")
    if isinstance(original, dict):
        columns.update({k: v for k, v in original.items() if k not in columns})
    return columns


def shard_entries(pattern: str, flag: str = "--audio") -> list[Entry]:
    """One entry per shard sample with an audio member (`AUDIO_MEMBERS`), in shard order; the json member
    (read here, it is small) gives the columns. Raises FileNotFoundError naming `flag` for missing shards."""
    entries = []
    for url in expand_shards(pattern, flag):
        samples: dict[str, dict] = {}
        with tarfile.open(url, "r") as tar:
            for info in tar:
                directory, _, base = info.name.rpartition("/")
                stem, dot, extension = base.partition(".")
                if not info.isfile() or not dot:
                    continue
                key = f"{directory}/{stem}" if directory else stem
                sample = samples.setdefault(key, {})
                if extension in AUDIO_MEMBERS and "audio" not in sample:
                    sample["audio"] = (info.offset_data, info.size)
                elif extension == "json":
                    try:
                        sample["meta"] = json.loads(tar.extractfile(info).read())
                    except ValueError:
                        sample["meta"] = {}
        for key, sample in samples.items():
            if "audio" in sample:
                meta = sample.get("meta") if isinstance(sample.get("meta"), dict) else {}
                entries.append(Entry(key=key, path=url, member=sample["audio"], columns=_meta_columns(meta)))
    if not entries:
        raise ValueError(f"{flag}: no samples with audio in {pattern}")
    return entries
