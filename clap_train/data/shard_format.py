"""The shard format: member names, key rules, sizes.json, pattern expansion, and the one tar writer/reader.

The online pipeline (`clap_train.data`) and the offline tools (`data_pipelines`, which import this
module, never the reverse) share it.

Shard layout (LAION audio-dataset): tar files `{split}-{index:06d}.tar` holding, per sample,
`<key>.flac` (48 kHz mono FLAC; or `<key>.pcm16`, see `audio_codecs`) and `<key>.json` with

| key | type | meaning |
|---|---|---|
| `text` | list[str] | one or more captions |
| `tags` | list[str], optional | keywords / class labels |
| `text_augment_t5` | list[str], optional | captions generated from `tags` (keyword_to_caption) |
| `original_data` | dict, optional | source metadata (source file, dataset fields) |

`sizes.json` beside the shards maps each shard file name to its sample count. Shards and
`sizes.json` are written to a temporary name and renamed, so a crashed run leaves only complete
shards behind (plus `*.tmp` files that a resumed run deletes).
"""

from __future__ import annotations

import glob
import io
import json
import os
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path

# torch and soundfile are imported where audio is encoded: `expand_shards` runs in the entry point's
# start-up checks (preflight.py), before the heavy imports

TARGET_SAMPLE_RATE = 48000
SIZES_FILE = "sizes.json"
AUDIO_MEMBERS = ("flac", "pcm16", "wav", "mp3", "ogg")  # the audio member of a shard sample: <key>.flac, ...


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


def check_key(key: str) -> str:
    """Return `key` if it can name a webdataset sample, else raise ValueError.

    webdataset splits a member name at the first dot of its base name, so keys hold no dots,
    slashes or whitespace-only text.
    """
    if not isinstance(key, str) or not key.strip() or "." in key or "/" in key or "\\" in key:
        raise ValueError(f"key: {key!r} must be a non-empty string without '.', '/' or '\\'")
    return key


# ---------------------------------------------------------------------------------- writing


def encode_flac(wave, sample_rate: int) -> bytes:
    """Encode (L,) or (C, L) float audio (tensor or array) as 16-bit FLAC bytes, the shards' audio member;
    values are clipped to [-1, 1]."""
    import soundfile as sf
    import torch

    data = torch.as_tensor(wave, dtype=torch.float32).clamp(-1.0, 1.0).numpy()
    if data.ndim == 2:
        data = data.T  # soundfile wants (L, C)
    if data.shape[0] == 0:
        raise ValueError("wave: cannot encode 0 samples")
    buffer = io.BytesIO()
    sf.write(buffer, data, sample_rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def write_tar(path: str | Path, samples: Iterable[tuple[str, dict[str, bytes]]]) -> int:
    """Write one tar of samples `(key, {extension: bytes})` atomically; returns the sample count.

    Members are sorted per sample by extension and carry a fixed mtime, so equal input gives
    byte-identical tars.
    """
    path = Path(path)
    tmp_path = path.with_name(path.name + ".tmp")
    count = 0
    with tarfile.open(tmp_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for key, members in samples:
            check_key(key)
            for extension in sorted(members):
                payload = members[extension]
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size = len(payload)
                info.mtime = 0
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(payload))
            count += 1
    os.replace(tmp_path, path)
    return count


def read_sizes(out_dir: str | Path, sizes_file: str = SIZES_FILE) -> dict[str, int]:
    path = Path(out_dir) / sizes_file
    return json.loads(path.read_text()) if path.is_file() else {}


def update_sizes(out_dir: str | Path, sizes: dict[str, int], sizes_file: str = SIZES_FILE) -> dict[str, int]:
    """Merge `sizes` into `out_dir/sizes_file` (write tmp + os.replace); returns the merged map."""
    merged = read_sizes(out_dir, sizes_file)
    merged.update(sizes)
    merged = dict(sorted(merged.items()))
    path = Path(out_dir) / sizes_file
    tmp_path = path.with_name(path.name + ".tmp")
    tmp_path.write_text(json.dumps(merged, indent=1) + "\n")
    os.replace(tmp_path, path)
    return merged


def encode_meta(meta: dict) -> bytes:
    return json.dumps(meta, ensure_ascii=False).encode("utf-8")


class ShardWriter:
    """Writes samples into numbered tar shards of `samples_per_shard` samples each.

    Usage::

        with ShardWriter("out/", "train", samples_per_shard=512) as writer:
            writer.write("clip_0001", flac_bytes, {"text": ["a dog barks"]})
        writer.sizes  # {"train-000000.tar": 1}

    Each full shard is written atomically and recorded in `out_dir/sizes.json` at once, so an
    interrupted run keeps every completed shard. Args:
        out_dir: created if missing.
        split: shard name prefix (`train`, `valid`, `test`, ...).
        samples_per_shard: samples per tar (the last one may hold fewer).
        start_index: number of the first shard (a resumed run continues after the last one).
        audio_extension: tar member extension of the audio bytes.
        sizes_file: the sizes file updated in `out_dir` (one per task of a multi-task run).
    Raises:
        ValueError naming the bad argument; `write` raises ValueError on a bad or repeated key.
    """

    def __init__(
        self,
        out_dir: str | Path,
        split: str = "train",
        samples_per_shard: int = 512,
        start_index: int = 0,
        audio_extension: str = "flac",
        sizes_file: str = SIZES_FILE,
    ):
        if samples_per_shard < 1:
            raise ValueError(f"samples_per_shard: must be >= 1, got {samples_per_shard}")
        if start_index < 0:
            raise ValueError(f"start_index: must be >= 0, got {start_index}")
        if not split or "/" in split or "." in split:
            raise ValueError(f"split: {split!r} must be a non-empty name without '/' or '.'")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.split = split
        self.samples_per_shard = samples_per_shard
        self.audio_extension = audio_extension
        self.sizes_file = sizes_file
        self.next_index = start_index
        self.sizes: dict[str, int] = {}
        self._pending: list[tuple[str, dict[str, bytes]]] = []
        self._keys: set[str] = set()

    def write(self, key: str, audio_bytes: bytes, meta: dict) -> None:
        check_key(key)
        if key in self._keys:
            raise ValueError(f"key: {key!r} was already written")
        self._keys.add(key)
        self._pending.append((key, {self.audio_extension: audio_bytes, "json": encode_meta(meta)}))
        if len(self._pending) == self.samples_per_shard:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        name = shard_name(self.split, self.next_index)
        self.sizes[name] = write_tar(self.out_dir / name, self._pending)
        update_sizes(self.out_dir, {name: self.sizes[name]}, self.sizes_file)
        self._pending = []
        self.next_index += 1

    def close(self) -> dict[str, int]:
        """Write the last, partial shard; returns {shard name: sample count} of this writer."""
        self._flush()
        return self.sizes

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.close()


def write_shards(
    samples: Iterable[tuple[str, bytes, dict]], out_dir: str | Path, split: str = "train", samples_per_shard: int = 512
) -> dict[str, int]:
    """Write `(key, audio_bytes, meta)` samples into shards; returns {shard name: count}."""
    with ShardWriter(out_dir, split, samples_per_shard) as writer:
        for key, audio_bytes, meta in samples:
            writer.write(key, audio_bytes, meta)
    return writer.sizes


# ---------------------------------------------------------------------------------- reading


def is_remote(url: str) -> bool:
    """True for a shard URL with a scheme (pipe:, file:, s3://, ...), which webdataset's gopen opens."""
    return "://" in url or url.startswith(("pipe:", "file:"))


def expand_shards(pattern: str, field: str = "shards") -> list[str]:
    """Expand a shard pattern: brace notation (`train-{000000..000099}.tar`), a glob (`train-*.tar`),
    or several of these joined by `::`. Remote URLs are not checked.

    Raises:
        FileNotFoundError naming `field`, the pattern and the first missing shards.
    """
    import braceexpand  # a webdataset dependency

    urls = []
    for part in pattern.split("::"):
        if any(c in part for c in "*?["):
            matches = sorted(glob.glob(part))
            if not matches:
                raise FileNotFoundError(f"{field}: no shards match {part!r}")
            urls += matches
        else:
            urls += braceexpand.braceexpand(part)
    missing = [url for url in urls if not is_remote(url) and not os.path.isfile(url)]
    if not urls or missing:
        shown = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise FileNotFoundError(f"{field}: {len(missing)} of {len(urls)} shards not found for {pattern!r}: {shown}")
    return urls


def iter_tar(path: str | Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield `(key, {extension: bytes})` per sample of a tar, in the tar's order."""
    key, members = None, {}
    with tarfile.open(path, "r") as tar:
        for info in tar:
            member_key, extension = _split_member(info)
            if member_key is None:
                continue
            if member_key != key:
                if key is not None:
                    yield key, members
                key, members = member_key, {}
            members[extension] = tar.extractfile(info).read()
    if key is not None:
        yield key, members


def tar_keys(path: str | Path) -> set[str]:
    """The sample keys of a tar, from its member headers only (no member is read)."""
    with tarfile.open(path, "r") as tar:
        return {key for key, _ in map(_split_member, tar) if key is not None}


def _split_member(info: tarfile.TarInfo) -> tuple[str | None, str]:
    """(sample key, extension) of a tar member: `dir/abc.flac` -> (`dir/abc`, `flac`); (None, "") for
    directories and names without an extension."""
    directory, _, base = info.name.rpartition("/")
    stem, dot, extension = base.partition(".")
    if not info.isfile() or not dot:
        return None, ""
    return (f"{directory}/{stem}" if directory else stem), extension


def read_meta(members: dict[str, bytes]) -> dict:
    return json.loads(members["json"].decode("utf-8")) if "json" in members else {}
