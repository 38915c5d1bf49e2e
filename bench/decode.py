"""Audio decoding per core: decoders on the same FLAC bytes, the pcm16 codec, windowed decode, whole loader.

    PYTHONPATH=. python bench/decode.py [--clips 8] [--long-clips 2] [--rounds 3]

Makes `--clips` 10 s and `--long-clips` 5-minute clips at 48 kHz (tones + noise), encodes each as
16-bit FLAC (data_pipelines.shards.encode_flac) and as pcm16 (data_pipelines.encode), then, on one
thread, in interleaved rounds (best round kept):

  decode <decoder>        whole clip from the same FLAC bytes: soundfile (libsndfile, the loader's),
                          pedalboard and PyAV when installed; "identical" compares the samples with
                          soundfile's float32 (q / 32768)
  window soundfile        (5 min) the 10 s window rand_trunc takes: seek + read (windowed decode)
  pcm16 view / window     the pcm16 member: int16 view -> float32 (whole clip / 10 s window)
  loader <codec> <trunc>  the training stages + collate (decode, mono, crop, int16, caption, tokenise),
                          rand_trunc (windowed) and fusion (needs the whole clip: full decode + 4 mel
                          channels) for the long clips
Ratios are against `decode soundfile` on the clips of the same length. Timings on a shared
machine vary; docs/data.md holds measured figures.
"""

from __future__ import annotations

import argparse
import io
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import importlib.util
import json
import time

import numpy as np
import soundfile as sf
import torch

from clap_train.data.audio_codecs import ClipReader
from clap_train.data.stages import Collate, sample_stages
from clap_train.data.tokenizer import CaptionTokenizer, train_bpe_tokenizer
from clap_train.signal.frontend import LogMelFrontend
from data_pipelines.encode import encode_pcm16, quantise_pcm16
from data_pipelines.shards import encode_flac

RATE, WINDOW = 48000, 480000
FRONTEND = LogMelFrontend(RATE, 1024, 480, 64, 50, 14000, "htk", None).config()  # a fused model's front end


def make_clips(num_clips: int, seconds: float, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    return [(0.3 * np.sin(2 * np.pi * rng.uniform(100, 4000) * t) + 0.05 * rng.standard_normal(len(t)))
            .astype(np.float32) for _ in range(num_clips)]


def decoders() -> dict:
    """name -> fn(flac bytes) -> (L,) float32, for the decoders installed here."""
    found = {"soundfile": lambda data: sf.read(io.BytesIO(data), dtype="float32")[0]}
    if importlib.util.find_spec("pedalboard"):
        from pedalboard.io import AudioFile

        def pedalboard(data):
            with AudioFile(io.BytesIO(data)) as file:
                return file.read(file.frames)[0]
        found["pedalboard"] = pedalboard
    if importlib.util.find_spec("av"):
        import av

        def pyav(data):
            with av.open(io.BytesIO(data)) as container:  # s16 frames (1, n): exact int16 samples
                pcm = np.concatenate([frame.to_ndarray() for frame in container.decode(audio=0)], axis=1)[0]
            return pcm.astype(np.float32) * np.float32(1 / 32768)
        found["pyav"] = pyav
    return found


def best_rates(paths: dict, rounds: int) -> dict[str, float]:
    """clips/s of each path (name -> (fn, num_clips)), best of `rounds` interleaved rounds."""
    for fn, _ in paths.values():
        fn()
    best = dict.fromkeys(paths, float("inf"))
    for _ in range(rounds):
        for name, (fn, _) in paths.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: paths[name][1] / best[name] for name in paths}


def loader_fn(members: list[dict], truncation: str, tokenizer: CaptionTokenizer, batch_size: int = 8):
    stages = sample_stages(RATE, WINDOW, truncation, int16=truncation != "fusion", frontend=FRONTEND)
    collate = Collate(tokenizer)

    def run():
        batch = []
        for i, sample in enumerate(members):
            sample = {"__key__": f"c{i}", "json": json.dumps({"text": ["a tone with noise"]}).encode(), **sample}
            for stage in stages:
                sample = stage(sample)
            batch.append(sample)
            if len(batch) == batch_size:
                collate(batch)
                batch = []
        if batch:
            collate(batch)
    return run


def measure(label: str, clips: list[np.ndarray], available: dict, tokenizer, rounds: int) -> list[tuple]:
    """Table rows (clip length, path, clips/s, vs soundfile, bytes per clip, identical) for `clips`."""
    flac = [encode_flac(c, RATE) for c in clips]
    pcm16 = [encode_pcm16(quantise_pcm16(c), RATE) for c in clips]
    reference = [available["soundfile"](data) for data in flac]
    identical = {name: all(np.array_equal(fn(d), r) for d, r in zip(flac, reference)) for name, fn in available.items()}
    n = len(clips)
    paths = {f"decode {name}": ((lambda fn=fn: [fn(d) for d in flac]), n) for name, fn in available.items()}
    paths["pcm16 view"] = (lambda: [ClipReader(d, "pcm16").read() for d in pcm16], n)
    if label == "5 min":
        start = len(clips[0]) // 3  # any window: libsndfile seeks to it
        paths["window soundfile"] = (lambda: [ClipReader(d, "flac").read(start, WINDOW) for d in flac], n)
        paths["pcm16 window"] = (lambda: [ClipReader(d, "pcm16").read(start, WINDOW) for d in pcm16], n)
    for codec, data in (("flac", flac), ("pcm16", pcm16)):
        for truncation in ("rand_trunc", "fusion") if label == "5 min" else ("rand_trunc",):
            members = [{codec: d} for d in data]
            paths[f"loader {codec} {truncation}"] = (loader_fn(members, truncation, tokenizer), n)
    rates = best_rates(paths, rounds)
    bytes_per_clip = {"flac": sum(map(len, flac)) / n, "pcm16": sum(map(len, pcm16)) / n}
    rows = []
    for name, rate in rates.items():
        codec = "pcm16" if "pcm16" in name else "flac"
        same = identical.get(name.removeprefix("decode "), True)
        rows.append((label, name, rate, rate / rates["decode soundfile"], bytes_per_clip[codec], same))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=8, help="10 s clips")
    parser.add_argument("--long-clips", type=int, default=2, help="5-minute clips")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tmp", default="/tmp", help="where the tiny tokenizer is written")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tokenizer_path = os.path.join(args.tmp, f"bench_decode_tokenizer_{os.getpid()}.json")
    train_bpe_tokenizer(["a tone with noise"] * 4, 300).save(tokenizer_path)
    tokenizer = CaptionTokenizer(tokenizer_path)
    available = decoders()
    rows = []
    for label, clips in (("10 s", make_clips(args.clips, 10, 0)), ("5 min", make_clips(args.long_clips, 300, 1))):
        rows += measure(label, clips, available, tokenizer, args.rounds)
    os.remove(tokenizer_path)
    print(f"48 kHz mono clips, one thread, {os.cpu_count()} cores (shared machine), best of {args.rounds} rounds")
    print(f"{'clip':<6} {'path':<26} {'clips/s':>9} {'vs soundfile':>13} {'bytes/clip':>11} identical")
    for label, name, rate, ratio, size, same in rows:
        print(f"{label:<6} {name:<26} {rate:>9.1f} {ratio:>12.2f}x {size:>11.0f} {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
