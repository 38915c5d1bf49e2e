"""Helpers shared by the dataset importers: finding CSVs and audio files under a dataset root."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from pathlib import Path

from data_pipelines.manifest import AUDIO_EXTENSIONS


def read_text(path: Path) -> str:
    """Read a text file as UTF-8 (BOM stripped), falling back to Latin-1 (some Clotho metadata files)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV with a header line, values stripped; leading `#` comment lines are skipped.

    AudioSet segment files keep their header in the last comment line (`# YTID, start_seconds, ...`):
    when the first data line does not look like a header, that comment line is used instead.
    """
    lines = read_text(path).splitlines()
    comments = [line for line in lines if line.startswith("#")]
    body = [line for line in lines if line.strip() and not line.startswith("#")]
    if comments and body and "," in comments[-1] and not body[0].lower().startswith(("ytid", "file", "audio")):
        body.insert(0, comments[-1].lstrip("#"))
    reader = csv.DictReader(io.StringIO("\n".join(body)), skipinitialspace=True)
    return [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]


def find_file(root: Path, name: str, explicit: str | None = None) -> Path:
    """`explicit` (relative to root or absolute) if given, else the single file called `name` under root.

    Raises:
        FileNotFoundError when there is no such file; ValueError when several match.
    """
    if explicit:
        path = Path(explicit) if Path(explicit).is_absolute() else root / explicit
        if not path.is_file():
            raise FileNotFoundError(f"no file {path}")
        return path
    matches = sorted(root.rglob(name))
    if not matches:
        raise FileNotFoundError(f"no {name} under {root}")
    if len(matches) > 1:
        raise ValueError(f"several {name} under {root}: {[str(m) for m in matches]}; pick one with --csv")
    return matches[0]


class AudioIndex:
    """All audio files under a directory, looked up by file stem.

    When several files share a stem, the one whose path contains `prefer` (a split name) wins.
    """

    def __init__(self, directory: Path, prefer: str | None = None):
        self.directory = directory
        self.prefer = prefer
        self._by_stem: dict[str, list[Path]] = defaultdict(list)
        for path in sorted(directory.rglob("*")):
            if path.suffix.lower() in AUDIO_EXTENSIONS and path.is_file():
                self._by_stem[path.stem].append(path)

    def find(self, *stems: str) -> Path | None:
        """The first file matching any of `stems` (tried in order), or None."""
        for stem in stems:
            paths = self._by_stem.get(stem)
            if not paths:
                continue
            if self.prefer:
                preferred = [p for p in paths if self.prefer in p.relative_to(self.directory).parts[:-1]]
                if preferred:
                    return preferred[0]
            return paths[0]
        return None


def start_variants(start: str) -> list[str]:
    """Spellings of a start time in downloaded file names: `30`, `30.0`, `30.000`, `30000` (ms)."""
    try:
        seconds = float(start)
    except ValueError:
        return [start] if start else []
    variants = [start, f"{seconds:g}", f"{seconds:.1f}", f"{seconds:.3f}", str(int(seconds)), str(int(seconds * 1000))]
    return list(dict.fromkeys(variants))


def youtube_stems(youtube_id: str, start: str = "") -> list[str]:
    """Candidate stems of a YouTube clip: `<id>`, `Y<id>`, `<id>_<start>`, `Y<id>_<start>`."""
    stems = [youtube_id, f"Y{youtube_id}"]
    for variant in start_variants(start):
        stems += [f"{youtube_id}_{variant}", f"Y{youtube_id}_{variant}"]
    return stems
