"""Inference throughput: `clap_train.embed`'s path vs transformers' own pipeline, and search latency.

1. embed: the same audio files (44.1 kHz stereo wav, 10 s) and the same weights (a random transformers
   `ClapModel` with laion/clap-htsat-unfused's config, saved and loaded by both sides). transformers:
   soundfile decode, channel mean, torchaudio resample to 48 kHz, `ClapFeatureExtractor` (the audio half of
   `ClapProcessor`) + `get_audio_features`
   per batch. clap_train: `embed_entries` (DataLoader workers decode, resample and crop; the log-mel on
   the model's device), in float32 and with `--precision int8` (`quantize_int8`: int8 Linear layers).
   Same batch size, threads and process, timed after a warm-up batch, best of --rounds turns; clips/s, the ratios, and the int8
   embeddings' cosine to float32.
2. search: `clap_train.inference.search.top_k` over N random unit-norm 512-d rows (1M: 2 GB), one text
   query and a batch of 16, mean of a few runs.

    python bench/embed.py [--clips 16] [--batch 8] [--rounds 3] [--workers N] [--index-rows 1000000] [--device cpu]

--workers defaults to `clap_train.embed`'s (`default_workers`: none on a CPU with under 8 cores).
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

from clap_train.checkpoints.load import load_model
from clap_train.export_hf import export_hf
from clap_train.inference.runner import default_workers, embed_entries, quantize_int8
from clap_train.inference.search import top_k
from clap_train.inference.sources import list_entries
from clap_train.training.cpu_threads import available_cores


def write_clips(folder: Path, num_clips: int, seconds: float = 10.0, rate: int = 44100) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for index in range(num_clips):
        path = folder / f"clip_{index:03d}.wav"
        sf.write(path, (0.1 * rng.standard_normal((int(seconds * rate), 2))).astype(np.float32), rate)
        paths.append(path)
    return paths


def transformers_embed(model: ClapModel, processor: ClapFeatureExtractor, paths: list[Path], batch: int,
                       device: torch.device) -> np.ndarray:
    rows = []
    for start in range(0, len(paths), batch):
        waves = []
        for path in paths[start:start + batch]:
            wave, rate = sf.read(path, dtype="float32", always_2d=True)
            waves.append(AF.resample(torch.from_numpy(wave.mean(axis=1)), rate, 48000).numpy())
        inputs = processor(waves, sampling_rate=48000, return_tensors="pt")
        with torch.no_grad():
            output = model.get_audio_features(input_features=inputs["input_features"].to(device))
        rows.append((output if isinstance(output, torch.Tensor) else output.pooler_output).cpu().numpy())
    return np.concatenate(rows)


def bench_embed(args, device: torch.device) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        hf = ClapModel(ClapConfig()).eval()
        hf.save_pretrained(tmp / "hf")
        export_hf(load_model(tmp / "hf"), tmp / "hf")  # preprocessor_config.json matching the front end
        hf = ClapModel.from_pretrained(tmp / "hf").eval().to(device)
        # ClapProcessor's audio half (the directory has no tokenizer): what ClapProcessor(audio=...) calls
        processor = ClapFeatureExtractor.from_pretrained(tmp / "hf")
        ours = load_model(tmp / "hf").to(device)
        paths = write_clips(tmp, args.clips + args.batch)
        warm, timed = paths[:args.batch], paths[args.batch:]
        entries = list_entries(tmp)
        warm_entries, timed_entries = entries[:args.batch], entries[args.batch:]
        workers = default_workers(device, available_cores()) if args.workers is None else args.workers
        models = {"32": ours}
        if device.type == "cpu":
            models["int8"] = quantize_int8(copy.deepcopy(ours))
        transformers_embed(hf, processor, warm, args.batch, device)
        for model in models.values():
            embed_entries(model, warm_entries, args.batch, workers, progress=False)
        seconds = {name: float("inf") for name in ("transformers", *models)}
        results = {}
        for _ in range(args.rounds):  # the pipelines take turns; the best round of each counts
            start = time.perf_counter()
            reference = transformers_embed(hf, processor, timed, args.batch, device)
            seconds["transformers"] = min(seconds["transformers"], time.perf_counter() - start)
            for precision, model in models.items():
                start = time.perf_counter()
                results[precision] = embed_entries(model, timed_entries, args.batch, workers, progress=False).embeddings
                seconds[precision] = min(seconds[precision], time.perf_counter() - start)
        figures = {"clips": len(timed), "rounds": args.rounds, "workers": workers,
                   "transformers_clips_per_s": len(timed) / seconds["transformers"]}
        for precision in models:
            figures[f"clap_train_{precision}_clips_per_s"] = len(timed) / seconds[precision]
            figures[f"ratio_{precision}"] = seconds["transformers"] / seconds[precision]
        reference = reference / np.linalg.norm(reference, axis=1, keepdims=True)
        figures["max_abs_diff_32_vs_transformers"] = float(np.abs(results["32"] - reference).max())
        if "int8" in results:
            figures["min_cosine_int8_vs_32"] = float((results["int8"] * results["32"]).sum(axis=1).min())
    return figures


def bench_search(rows: int, dim: int = 512, repeats: int = 3) -> dict:
    generator = torch.Generator().manual_seed(0)
    index = torch.nn.functional.normalize(torch.randn(rows, dim, generator=generator), dim=-1).numpy()
    figures = {"rows": rows, "index_gb": index.nbytes / 1e9}
    for num_queries in (1, 16):
        queries = index[:num_queries] + 0.01
        top_k(index, queries, 10)  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            _, hits = top_k(index, queries, 10)
        figures[f"ms_per_call_{num_queries}_queries"] = 1000 * (time.perf_counter() - start) / repeats
        assert (hits[:, 0] == np.arange(num_queries)).all()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per pipeline, taken in turns (best counts)")
    parser.add_argument("--index-rows", type=int, default=1_000_000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-embed", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    figures = {"threads": torch.get_num_threads()}
    if not args.skip_embed:
        figures["embed"] = bench_embed(args, device)
    figures["search"] = bench_search(args.index_rows)
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
