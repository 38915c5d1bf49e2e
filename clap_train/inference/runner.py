"""The one inference path of the command-line tools: entries -> DataLoader workers -> model -> embeddings.

Each clip is decoded with soundfile, mixed to mono (channel mean), resampled to the model's rate and
prepared as `embed_audio` prepares it: unfused models take the first `clip_samples` (repeat-padding
short clips) and compute the log-mel on the model's device; fused models get the 4-channel fusion
features built in the worker, their crop starts drawn from `np.random.default_rng(seed)` afresh for
every clip. A clip's embedding is therefore `embed_audio(model, [wave], rate, seed=seed)`, whatever the
batch size, worker count or order, and two runs on the CPU are bitwise identical. Clips that cannot be
read are skipped and returned with their reason.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchaudio.functional as AF
from torch import nn
from torch.utils.data import DataLoader, Dataset

from clap_train.inference.embed import embed_text
from clap_train.inference.sources import Entry, read_audio
from clap_train.signal.audio_ops import crop_or_pad
from clap_train.signal.fusion import build_fusion_features

log = logging.getLogger(__name__)
PRECISIONS = ("32", "bf16", "int8")
CPU_CORES_PER_WORKER = 8  # on the CPU one decoding worker per 8 cores: the forward pass costs ~10x the decode


class ClipPreprocessor:
    """Mono (L,) waveform at `sample_rate` -> {'waveform' (clip_samples,)} or, with a fusion front end,
    {'features' (4, T, F)}, plus 'is_longer' (see the module docstring). Picklable (data workers)."""

    def __init__(self, sample_rate: int, clip_samples: int, padding: str = "repeatpad",
                 fusion_frontend: nn.Module | None = None, seed: int = 0):
        self.sample_rate, self.clip_samples, self.padding = sample_rate, clip_samples, padding
        self.fusion_frontend, self.seed = fusion_frontend, seed

    @classmethod
    def for_model(cls, model: nn.Module, padding: str = "repeatpad", seed: int = 0) -> ClipPreprocessor:
        fused = getattr(model.audio_encoder, "enable_fusion", False)
        frontend = copy.deepcopy(model.frontend).cpu().float() if fused else None
        return cls(model.frontend.sample_rate, model.clip_samples, padding, frontend, seed)

    def __call__(self, wave: np.ndarray, rate: int) -> dict:
        mono = torch.from_numpy(wave)  # (L, C)
        mono = mono[:, 0] if mono.shape[1] == 1 else mono.mean(dim=1)  # (L,)
        if rate != self.sample_rate:
            mono = AF.resample(mono, rate, self.sample_rate)
        if self.fusion_frontend is not None:
            features, is_longer = build_fusion_features(mono, self.fusion_frontend, self.clip_samples, self.padding,
                                                        rng=np.random.default_rng(self.seed))
            return {"features": features, "is_longer": is_longer}
        clip, is_longer = crop_or_pad(mono, self.clip_samples, truncation="head", padding=self.padding)
        return {"waveform": clip.clone(), "is_longer": is_longer}


class ClipDataset(Dataset):
    """Map-style dataset over entries: item i is {'index', 'key', prepared clip...} or {'index', 'key',
    'error'} for a clip that cannot be read or prepared."""

    def __init__(self, entries: list[Entry], preprocessor: ClipPreprocessor):
        self.entries, self.preprocessor = entries, preprocessor

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict:
        entry = self.entries[index]
        try:
            return {"index": index, "key": entry.key, **self.preprocessor(*read_audio(entry))}
        except (ValueError, RuntimeError) as error:
            return {"index": index, "key": entry.key, "error": str(error)}


def collate_clips(items: list[dict]) -> dict:
    """Stack the readable clips; keep (key, reason) of the others."""
    good = [item for item in items if "error" not in item]
    batch = {"index": [item["index"] for item in good], "failed": [(i["key"], i["error"]) for i in items if "error" in i]}
    if good:
        name = "features" if "features" in good[0] else "waveform"
        batch[name] = torch.stack([item[name] for item in good])  # (B, 4, T, F) or (B, clip_samples)
        batch["is_longer"] = torch.tensor([item["is_longer"] for item in good], dtype=torch.bool)
    return batch


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available, else cpu. Raises ValueError naming --device for an unusable device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"--device: {error}") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA device is available")
    return resolved


def default_workers(device: torch.device, cores: int) -> int:
    """The tools' `--num-workers` when it is not given: on the CPU, where the model's forward pass takes the cores, one worker per
    `CPU_CORES_PER_WORKER` cores (none below that); on a GPU, which waits for decoded audio, up to 8."""
    if device.type == "cpu":
        return cores // CPU_CORES_PER_WORKER
    return max(1, min(8, cores - 1))


def quantize_int8(model: nn.Module) -> nn.Module:
    """`--precision int8`: every nn.Linear of `model` (towers and heads) as a dynamically quantized int8 layer,
    in place (CPU only: torch's fbgemm kernels). Activation scales are set per call from the batch, so an
    embedding moves slightly with the batch it is in (cosine >= 0.999 to fp32 in tests/inference)."""
    # why: torch.ao.quantization is deprecated in favour of torchao, which is not a dependency; its dynamic
    # int8 Linear is still in torch 2.14 and warns on every call
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)


def autocast(device: torch.device, precision: str):
    """bf16 autocast on `device` for precision 'bf16', else a no-op (int8 is applied to the weights by
    `ready_for_inference`). Raises ValueError naming --precision."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass
class Embeddings:
    """`embeddings` (N, D) float32 in the order of `keys`; `failed` the (key, reason) of skipped inputs."""

    embeddings: np.ndarray
    keys: list[str]
    failed: list[tuple[str, str]]


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm  # a Lightning dependency

    return tqdm(total=total, desc=desc, unit="clip", disable=None if enabled else True, dynamic_ncols=True)


@torch.no_grad()
def embed_entries(model: nn.Module, entries: list[Entry], batch_size: int = 32, num_workers: int = 0,
                  precision: str = "32", seed: int = 0, progress: bool = True) -> Embeddings:
    """Unit-norm audio embeddings of `entries` (see the module docstring); the model stays on its device.

    Raises:
        ValueError: batch_size < 1, num_workers < 0, or a bad precision.
    """
    if batch_size < 1 or num_workers < 0:
        raise ValueError(f"--batch-size must be >= 1 and --num-workers >= 0, got {batch_size}, {num_workers}")
    device = next(model.parameters()).device
    loader = DataLoader(ClipDataset(entries, ClipPreprocessor.for_model(model, seed=seed)), batch_size=batch_size,
                        num_workers=num_workers, collate_fn=collate_clips,
                        multiprocessing_context="forkserver" if num_workers else None)
    rows, keys, failed = [], [], []
    with _progress(len(entries), "embed audio", progress) as bar:
        for batch in loader:
            failed += batch["failed"]
            if batch["index"]:
                is_longer = batch["is_longer"].to(device)
                if "features" in batch:
                    features = batch["features"].to(device)
                else:
                    features = model.frontend(batch["waveform"].to(device))  # (B, 1, T, F), float32
                with autocast(device, precision):
                    rows.append(model.encode_audio(features, is_longer).float().cpu())
                keys += [entries[i].key for i in batch["index"]]
            bar.update(len(batch["index"]) + len(batch["failed"]))
    dim = model.embed_dim
    embeddings = torch.cat(rows).numpy() if rows else np.zeros((0, dim), np.float32)
    for key, reason in failed:
        log.warning("skipped %s: %s", key, reason)
    return Embeddings(embeddings.astype(np.float32, copy=False), keys, failed)


@torch.no_grad()
def embed_texts(model: nn.Module, texts: list[str], batch_size: int = 256, precision: str = "32") -> np.ndarray:
    """Unit-norm text embeddings (N, D) float32 of `texts`, `batch_size` captions at a time."""
    device = next(model.parameters()).device
    rows = []
    for start in range(0, len(texts), batch_size):
        with autocast(device, precision):
            rows.append(embed_text(model, texts[start:start + batch_size]).float().cpu())
    return torch.cat(rows).numpy()


def ready_for_inference(model: nn.Module, device: str = "auto", tokenizer: str | None = None,
                        precision: str = "32") -> nn.Module:
    """A loaded model (`checkpoints.load_model`) in eval mode on `device`, with `tokenizer` (a
    tokenizer.json or its folder) when given; a LAION .pt carries none (CLAP_SPEC §8.1). Precision
    int8 quantizes its Linear layers (`quantize_int8`).

    Raises:
        FileNotFoundError naming --tokenizer; ValueError naming --device or --precision (int8 off the CPU).
    """
    if tokenizer is not None and not Path(tokenizer).exists():
        raise FileNotFoundError(f"--tokenizer: {tokenizer} does not exist")
    if tokenizer is not None:
        model.tokenizer_path = tokenizer
    model = model.to(resolve_device(device)).eval()
    if precision == "int8":
        if next(model.parameters()).device.type != "cpu":
            raise ValueError("--precision int8 runs on the CPU only; use bf16 on a GPU")
        model = quantize_int8(model)
    return model
