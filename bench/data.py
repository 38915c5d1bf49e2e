"""Data-path throughput on one core: our pipeline vs transformers' ClapFeatureExtractor, same clips, same run.

    PYTHONPATH=. python bench/data.py [--clips 24] [--seconds 10] [--workers 2] [--batch-size 8] [--device cuda]

Makes `--clips` clips of `--seconds` s at 48 kHz (tones + noise), writes them as FLAC shards with
data_pipelines.shards into a temporary directory, then measures, single-threaded:

  extractor rand_trunc / fusion : ClapFeatureExtractor on already-decoded numpy waveforms
  features rand_trunc           : crop_or_pad + batched LogMelFrontend (slaney), no decode
  features fusion               : build_fusion_features with an HTK LogMelFrontend, no decode
  loader (decode included)      : the training stream (soundfile decode, mono, int16, crop, caption,
                                  tokenise, collate) in this process + batched log-mel of each batch
  features rand_trunc, log-mel on DEVICE: with `--device cuda`, the default training layout: crop on one
                                  CPU thread, the batch copied to the device, batched log-mel there
                                  (wall time per clip, device synchronised)
and, for information, the same loader with `--workers` forkserver workers (clips/s per worker).
Codecs (flac, pcm16), decoders and windowed decode of long clips: bench/decode.py.
Ratios are against the extractor with the same truncation. Targets (docs/data.md): features >= 10x
the extractor per core; whole loader >= 2x the extractor alone. Timings on a shared machine vary.
"""

from __future__ import annotations

import argparse
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # per-core figures: numpy (the extractor) and torch single-threaded

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from clap_train.data.pipeline import ReseedingLoader, TrainStream
from clap_train.data.stages import Collate, SkipCounter, sample_stages
from clap_train.data.tokenizer import CaptionTokenizer, train_bpe_tokenizer
from clap_train.signal.audio_ops import crop_or_pad
from clap_train.signal.frontend import LogMelFrontend
from clap_train.signal.fusion import build_fusion_features
from data_pipelines.shards import ShardWriter, encode_flac, expand_shards

RATE, CLIP_SAMPLES = 48000, 480000


def make_clips(num_clips: int, seconds: float, rate: int = RATE) -> list[np.ndarray]:
    """`num_clips` float32 clips of a random tone plus noise, `seconds` long at `rate`."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    return [(0.3 * np.sin(2 * np.pi * rng.uniform(100, 4000) * t) + 0.05 * rng.standard_normal(len(t)))
            .astype(np.float32) for _ in range(num_clips)]


def crop_and_log_mel(clips, frontend: LogMelFrontend, clip_samples: int, batch_size: int, rng) -> None:
    """The unfused training layout: crop / pad each clip on the CPU (rand_trunc, repeatpad), stack a batch,
    copy it to the front end's device and take the batched log-mel there; a CUDA device is synchronised."""
    device = frontend.window.device
    for i in range(0, len(clips), batch_size):
        waves = [crop_or_pad(c, clip_samples, "rand_trunc", "repeatpad", rng)[0] for c in clips[i:i + batch_size]]
        with torch.no_grad():
            frontend(torch.stack(waves).to(device, non_blocking=True))  # (B, 1, T, n_mels)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_rates(paths: dict, rounds: int = 5) -> dict[str, float]:
    """Best clips/s of each path over `rounds`; the paths alternate within a round, so a load change on
    the shared machine hits all of them alike. `paths`: name -> (fn, num_clips)."""
    for fn, _ in paths.values():
        fn()  # warm-up (allocations, lazy imports)
    best = dict.fromkeys(paths, float("inf"))
    for _ in range(rounds):
        for name, (fn, _) in paths.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: paths[name][1] / best[name] for name in paths}


def steady_worker_rate(loader, batch_size: int, num_workers: int) -> float:
    """clips/s per worker in steady state: timing starts once every worker has delivered its first batch
    (the DataLoader takes batches from the workers in turn), so worker start-up is excluded."""
    iterator = iter(loader)
    for _ in range(num_workers):
        next(iterator)
    start, count = time.perf_counter(), 0
    for batch in iterator:
        count += len(batch["key"])
    return count / (time.perf_counter() - start) / num_workers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu", help="also time the log-mel on this device (e.g. cuda)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from transformers import ClapFeatureExtractor

    clips = make_clips(args.clips, args.seconds)
    slaney = LogMelFrontend(RATE, 1024, 480, 64, 50, 14000, "slaney", "slaney")
    htk = LogMelFrontend(RATE, 1024, 480, 64, 50, 14000, "htk", None)
    extractors = {t: ClapFeatureExtractor(frequency_min=50, truncation=t) for t in ("rand_trunc", "fusion")}
    rng = np.random.default_rng(0)

    def extractor(truncation):
        return lambda: [extractors[truncation](c, sampling_rate=RATE, return_tensors="pt") for c in clips]

    def features_rand_trunc():
        crop_and_log_mel(clips, slaney, CLIP_SAMPLES, args.batch_size, rng)

    device = torch.device(args.device)
    device_frontend = LogMelFrontend(RATE, 1024, 480, 64, 50, 14000, "slaney", "slaney").to(device)

    def features_on_device():
        crop_and_log_mel(clips, device_frontend, CLIP_SAMPLES, args.batch_size, rng)

    def features_fusion():
        for c in clips:
            build_fusion_features(c, htk, CLIP_SAMPLES, "repeatpad", rng)

    with tempfile.TemporaryDirectory() as tmp:
        with ShardWriter(tmp, "train", samples_per_shard=max(1, args.clips // 4)) as writer:
            for i, c in enumerate(clips):
                writer.write(f"clip{i:05d}", encode_flac(c, RATE), {"text": [f"a tone with noise number {i}"]})
        tokenizer_path = str(Path(tmp) / "tokenizer.json")
        train_bpe_tokenizer([f"a tone with noise number {i}" for i in range(50)], 300).save(tokenizer_path)
        urls = expand_shards(str(Path(tmp) / "train-*.tar"))

        def loader(num_workers: int, per_worker: int, log_mel: bool = True):
            skip = SkipCounter()
            stream = TrainStream([urls], None, sample_stages(RATE, CLIP_SAMPLES, int16=True),
                                 Collate(CaptionTokenizer(tokenizer_path), skip), skip, args.batch_size, per_worker,
                                 16, rank=0)
            data = ReseedingLoader(stream, lambda: 0, num_workers=num_workers,
                                   multiprocessing_context="forkserver" if num_workers else None)

            def run():
                for batch in data:
                    if log_mel:
                        with torch.no_grad():
                            slaney(batch["waveform"])
            return run if num_workers == 0 else data

        per_pass = max(1, args.clips // args.batch_size)
        on_device = {f"features rand_trunc, log-mel on {device.type}": (features_on_device, len(clips))}
        results = interleaved_rates({
            **(on_device if device.type == "cuda" else {}),
            "extractor rand_trunc": (extractor("rand_trunc"), len(clips)),
            "extractor fusion": (extractor("fusion"), len(clips)),
            "features rand_trunc (crop + log-mel)": (features_rand_trunc, len(clips)),
            "features fusion (4-channel log-mel)": (features_fusion, len(clips)),
            "loader rand_trunc: decode .. log-mel": (loader(0, per_pass), per_pass * args.batch_size),
            "loader rand_trunc: decode .. collate": (loader(0, per_pass, False), per_pass * args.batch_size),
        })
        if args.workers > 0:
            name = f"loader, {args.workers} workers, no log-mel, per worker"
            results[name] = steady_worker_rate(loader(args.workers, 6 * per_pass), args.batch_size, args.workers)

    print(f"{args.clips} clips of {args.seconds:g} s at 48 kHz, torch threads 1, {os.cpu_count()} cores (shared machine)")
    print(f"{'path':<44} {'clips/s':>9} {'vs extractor':>13}")
    for name, rate in results.items():
        reference = results["extractor fusion" if "fusion" in name else "extractor rand_trunc"]
        print(f"{name:<44} {rate:>9.1f} {rate / reference:>12.1f}x")


if __name__ == "__main__":
    main()
