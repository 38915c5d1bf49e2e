"""Embedding raw inputs with a `CLAPModel`: waveforms of any length and rate, and caption strings.

Shared by `clap_train.evaluate` and the inference CLIs; the model itself stays a plain nn.Module.

Preprocessing is the deterministic evaluation variant of the model's training recipe:
resample to the front-end rate; unfused models take the first `clip_samples` of a long clip
(head crop) and repeat-pad short ones; fused models get the 4-channel fusion features
(`clap_train.signal.fusion`) with crop starts drawn from a fixed seed, and the true
`is_longer` flags (LAION's eval semantics: no row is forced into fusion).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torchaudio.functional as AF
from torch import nn

from clap_train.data.tokenizer import CaptionTokenizer
from clap_train.signal.audio_ops import as_mono_tensor, crop_or_pad
from clap_train.signal.fusion import build_fusion_features


def _as_list(waveforms) -> list[torch.Tensor]:
    if isinstance(waveforms, (torch.Tensor, np.ndarray)):
        tensor = torch.as_tensor(waveforms, dtype=torch.float32)
        if tensor.dim() == 1:
            return [tensor]
        if tensor.dim() != 2:
            raise ValueError(f"waveforms must be (L,), (B, L) or a list of (L_i,), got shape {tuple(tensor.shape)}")
        return list(tensor)
    return [as_mono_tensor(wave) for wave in waveforms]


@torch.no_grad()
def embed_audio(model: nn.Module, waveforms, sample_rate: int, padding: str = "repeatpad",
                seed: int = 0) -> torch.Tensor:
    """Raw mono audio -> unit-norm audio embeddings (B, embed_dim), no gradient.

    Args:
        model: a `CLAPModel` (uses `frontend`, `clip_samples`, `audio_encoder.enable_fusion`).
        waveforms: (L,), (B, L), or a list of 1-D arrays / tensors of any lengths.
        sample_rate: rate of `waveforms`; resampled to `model.frontend.sample_rate` if different.
        padding: how clips shorter than `model.clip_samples` are lengthened ("repeatpad" as LAION/HF).
        seed: seeds the fused model's crop starts, so repeated calls give the same embeddings.
    Raises:
        ValueError: on a non-1-D clip, an empty batch, a bad `padding` or a non-positive `sample_rate`.
    """
    if sample_rate < 1:
        raise ValueError(f"sample_rate must be >= 1, got {sample_rate}")
    waves = _as_list(waveforms)
    if not waves:
        raise ValueError("embed_audio needs at least one waveform")
    frontend, device = model.frontend, next(model.parameters()).device
    if sample_rate != frontend.sample_rate:
        waves = [AF.resample(wave, sample_rate, frontend.sample_rate) for wave in waves]
    if getattr(model.audio_encoder, "enable_fusion", False):
        rng = np.random.default_rng(seed)
        frontend_cpu = copy.deepcopy(frontend).cpu() if device.type != "cpu" else frontend  # features built on CPU
        built = [build_fusion_features(w, frontend_cpu, model.clip_samples, padding, rng=rng) for w in waves]
        features = torch.stack([f for f, _ in built]).to(device)  # (B, 4, T, F)
        is_longer = torch.tensor([longer for _, longer in built], device=device)
    else:
        clips = [crop_or_pad(w, model.clip_samples, truncation="head", padding=padding) for w in waves]
        waveform = torch.stack([clip for clip, _ in clips]).to(device)  # (B, clip_samples)
        features = frontend(waveform)  # (B, 1, T, F)
        is_longer = torch.tensor([longer for _, longer in clips], device=device)
    return model.encode_audio(features, is_longer)


def caption_tokenizer(model: nn.Module, tokenizer: CaptionTokenizer | str | None = None) -> CaptionTokenizer:
    """The `CaptionTokenizer` for `model`: `tokenizer` itself, one built from a tokenizer.json path (or its
    directory), or, when None, one built once from the `tokenizer_path` that `clap_train.load_model`
    attaches (a transformers directory's tokenizer.json, or the training run's `data.tokenizer`).
    77 tokens (LAION's length), capped by the text tower's positions.

    Raises:
        ValueError: if no tokenizer is given and the model has no `tokenizer_path`.
    """
    if isinstance(tokenizer, CaptionTokenizer):
        return tokenizer
    path = tokenizer if tokenizer is not None else getattr(model, "tokenizer_path", None)
    cached = getattr(model, "_caption_tokenizer", None)  # (path, CaptionTokenizer)
    if cached is not None and cached[0] == path:
        return cached[1]
    if not path:
        raise ValueError(
            "embed_text needs a tokenizer: pass tokenizer=PATH to a tokenizer.json (or its directory), "
            "or load the model from a transformers directory that has tokenizer.json"
        )
    text = model.text_encoder
    offset = text.pad_token_id + 1 if getattr(text, "position_offset", False) else 0  # RoBERTa positions start there
    max_length = min(77, getattr(text, "max_position_embeddings", 77 + offset) - offset)
    built = CaptionTokenizer(path, max_length=max_length)
    model._caption_tokenizer = (path, built)  # plain attribute: not in the state dict
    return built


@torch.no_grad()
def embed_text(model: nn.Module, texts: list[str], tokenizer: CaptionTokenizer | str | None = None) -> torch.Tensor:
    """Captions -> unit-norm text embeddings (N, embed_dim), no gradient; `tokenizer` as for
    `caption_tokenizer`.

    Raises:
        ValueError: if `texts` is empty or a bare string, or there is no tokenizer.
    """
    if isinstance(texts, str) or not texts:
        raise ValueError("embed_text takes a non-empty list of strings")
    tokens = caption_tokenizer(model, tokenizer)(list(texts))
    device = next(model.parameters()).device
    return model.encode_text(tokens["input_ids"].to(device), tokens["attention_mask"].to(device))
