"""Exact-duplicate fingerprints: a hash of the decoded 48 kHz mono 16-bit PCM, not of the file bytes.

    python -m data_pipelines.fingerprint --shards 'eval/test-*.tar' --out eval.hashes [--workers 4]
    python -m data_pipelines.make_shards --manifest M.csv --out DIR --exclude eval.hashes

The fingerprint of a clip is the SHA-1 of the int16 samples make_shards stores for it (48 kHz,
mono, 16 bit), so the same recording re-encoded, resampled from the same source or stored in
another container hashes equal, while a one-sample edit does not. Shard audio already in that form
is hashed as stored; any other member (another rate, stereo, float, mp3) first goes through
make_shards' own conversion.

A hash list (`.hashes`) has one clip per line: `<sha1>\t<key>\t<shard>`. `--exclude` files
(read by `read_exclusions`) may mix three kinds of lines: a hash list line (first field 40 hex
digits), a file name (has an extension: matched against the audio file's name), or a sample key.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf
import torch

from clap_train.cli import ArgumentParser, run_tool
from data_pipelines.encode import decode_pcm16, pcm16_hash, quantise_pcm16
from data_pipelines.shards import AUDIO_MEMBERS, TARGET_SAMPLE_RATE, decode_audio, expand_shards, iter_tar, to_mono_48k

_HASH = re.compile(r"^[0-9a-f]{40}$")


def audio_hash(audio_bytes: bytes, ext: str = "flac") -> str:
    """The fingerprint of a shard audio member `<key>.<ext>` (see the module docstring).

    Raises:
        ValueError when the audio cannot be decoded.
    """
    if ext == "pcm16":
        pcm, rate = decode_pcm16(audio_bytes)
        if rate == TARGET_SAMPLE_RATE:
            return pcm16_hash(pcm)
        return pcm16_hash(quantise_pcm16(to_mono_48k(torch.from_numpy(pcm / 32768.0), rate).numpy()))
    try:
        info = sf.info(io.BytesIO(audio_bytes))
        stored = info.samplerate == TARGET_SAMPLE_RATE and info.channels == 1 and info.subtype == "PCM_16"
    except Exception:  # noqa: BLE001 - not a libsndfile format: decode_audio tries ffmpeg
        stored = False
    if stored:
        pcm, _ = sf.read(io.BytesIO(audio_bytes), dtype="int16")  # (L,)
        return pcm16_hash(pcm)
    wave, rate = decode_audio(audio_bytes)
    return pcm16_hash(quantise_pcm16(to_mono_48k(wave, rate).numpy()))


def _shard_hashes(url: str) -> tuple[list[tuple[str, str, str]], list[str]]:
    rows, bad = [], []
    for key, members in iter_tar(url):
        ext = next((e for e in AUDIO_MEMBERS if e in members), None)
        try:
            if ext is None:
                raise ValueError("no audio member")
            rows.append((audio_hash(members[ext], ext), key, os.path.basename(url)))
        except ValueError as error:
            bad.append(f"{os.path.basename(url)}:{key}: {error}")
    return rows, bad


def fingerprint_shards(pattern: str, num_workers: int = 0) -> tuple[list[tuple[str, str, str]], list[str]]:
    """`(sha1, key, shard name)` of every sample in the shards of `pattern` (braces, globs, `::`),
    and `shard:key: reason` of the samples that could not be decoded."""
    urls = expand_shards(pattern, "--shards")
    if num_workers <= 1:
        results = [_shard_hashes(url) for url in urls]
    else:
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        with multiprocessing.get_context(method).Pool(num_workers) as pool:
            results = pool.map(_shard_hashes, urls)
    return [row for rows, _ in results for row in rows], [item for _, bad in results for item in bad]


def write_hashes(rows: list[tuple[str, str, str]], path: str | Path) -> None:
    path = Path(path)
    tmp_path = path.with_name(path.name + ".tmp")
    tmp_path.write_text("".join("\t".join(row) + "\n" for row in rows), encoding="utf-8")
    os.replace(tmp_path, path)


@dataclass
class Exclusions:
    """What `--exclude` removes; each value says where it came from (for the report)."""

    hashes: dict[str, str] = field(default_factory=dict)  # sha1 -> "eval.hashes (key K)"
    keys: dict[str, str] = field(default_factory=dict)  # key -> "list.txt"
    names: dict[str, str] = field(default_factory=dict)  # audio file name -> "list.txt"

    def row_reason(self, row: dict) -> str | None:
        """Why a manifest row is excluded before decoding (by key or file name), else None."""
        if row["key"] in self.keys:
            return f"excluded by {self.keys[row['key']]}: key {row['key']}"
        for path in (row["audio"], row["original_data"].get("source_audio", "")):
            name = os.path.basename(str(path))
            if name in self.names:
                return f"excluded by {self.names[name]}: file name {name}"
        return None

    def hash_reason(self, digest: str) -> str | None:
        source = self.hashes.get(digest)
        return f"excluded by {source}: same decoded PCM" if source else None


def read_exclusions(paths: list[str | Path]) -> Exclusions:
    """Parse `--exclude` files (see the module docstring).

    Raises:
        SystemExit naming `--exclude` and the file when one is missing or unreadable.
    """
    exclusions = Exclusions()
    for path in map(Path, paths):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise SystemExit(f"make_shards: --exclude {path}: {error.strerror or error}") from None
        for line in lines:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            first, *rest = line.split("\t")
            if _HASH.match(first.lower()):
                where = f" (key {rest[0]})" if rest else ""
                exclusions.hashes.setdefault(first.lower(), f"{path.name}{where}")
            elif os.path.splitext(line)[1]:
                exclusions.names.setdefault(os.path.basename(line), path.name)
            else:
                exclusions.keys.setdefault(line, path.name)
    return exclusions


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m data_pipelines.fingerprint", description=__doc__.split("\n")[0])
    parser.add_argument("--shards", required=True, help="shards to fingerprint: braces, globs, several joined by ::")
    parser.add_argument("--out", required=True, help="hash list to write (one `sha1<TAB>key<TAB>shard` per line)")
    parser.add_argument("--workers", type=int, default=0, help="worker processes, one shard each (0: in this one)")
    args = parser.parse_args(argv)
    if args.workers < 0:
        raise SystemExit(f"fingerprint: --workers must be >= 0, got {args.workers}")
    try:
        rows, bad = fingerprint_shards(args.shards, args.workers)
    except FileNotFoundError as error:
        raise SystemExit(f"fingerprint: {error}") from None
    write_hashes(rows, args.out)
    print(f"fingerprint: {len(rows)} clips, {len({r[0] for r in rows})} distinct, -> {args.out}; "
          f"{len(bad)} undecodable", file=sys.stderr)
    for item in bad[:20]:
        print(f"  skipped {item}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_tool(main)
