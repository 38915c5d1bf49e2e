"""A tiny deterministic CLAP (no batch norm, no dropout) and fixed batches for training-loop tests.

The audio tower is a stack of residual MLP blocks over the time-averaged log-mel, so chunked (GradCache)
and whole-batch forwards agree exactly; the text tower is a 2-layer RoBERTa with dropout 0.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn
from torch.utils.data import DataLoader

from clap_train.losses.contrastive import ClipLoss
from clap_train.models.clap import CLAPModel
from clap_train.models.text.roberta import RobertaEncoder
from clap_train.signal.frontend import LogMelFrontend
from clap_train.training.module import CLAPModule
from clap_train.training.optim import WarmupCosineLR

NUM_MELS, NUM_FRAMES, TEXT_LENGTH, VOCAB = 8, 6, 7, 50


class MLPBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.tanh(self.fc(self.norm(x)))


class TinyAudioEncoder(nn.Module):
    """(B, C, T, F) -> mean over T of channel 0 -> (B, 16) through 2 residual blocks."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.stem = nn.Linear(NUM_MELS, width)
        self.layers = nn.ModuleList(MLPBlock(width) for _ in range(2))
        self.output_dim = width

    def blocks(self) -> list[nn.Module]:
        return list(self.layers)

    def forward(self, features: torch.Tensor, is_longer: torch.Tensor | None = None) -> torch.Tensor:
        x = self.stem(features[:, 0].mean(dim=1))  # (B, width)
        for layer in self.layers:
            x = layer(x)
        return x


def make_model(seed: int = 0) -> CLAPModel:
    torch.manual_seed(seed)
    text = RobertaEncoder(vocab_size=VOCAB, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
                          max_position_embeddings=16, dropout=0.0, attention_dropout=0.0)
    frontend = LogMelFrontend(sample_rate=16000, n_fft=256, hop_length=128, n_mels=NUM_MELS, f_max=8000)
    return CLAPModel(TinyAudioEncoder(), text, frontend, embed_dim=8)


def make_batch(batch_size: int, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    attention_mask = torch.ones(batch_size, TEXT_LENGTH, dtype=torch.int64)
    attention_mask[::2, -2:] = 0
    return {
        "features": torch.randn(batch_size, 1, NUM_FRAMES, NUM_MELS, generator=generator),
        "input_ids": torch.randint(3, VOCAB, (batch_size, TEXT_LENGTH), generator=generator),
        "attention_mask": attention_mask,
        "text_to_audio": torch.arange(batch_size),
        "key": [f"s{seed}-{i}" for i in range(batch_size)],
        "num_skipped": torch.tensor(0),
    }


def make_loader(num_batches: int, batch_size: int, seed: int = 0) -> DataLoader:
    """The same `num_batches` fixed batches every epoch (batch_size=None: each item is a whole batch)."""
    return DataLoader([make_batch(batch_size, seed * 1000 + i) for i in range(num_batches)], batch_size=None)


def make_module(loss: nn.Module | None = None, lr: float = 0.05, total_steps: int = 8, **kwargs) -> CLAPModule:
    """CLAPModule over `make_model()` with SGD(momentum) and a warmup-cosine schedule; kwargs go to CLAPModule."""
    return CLAPModule(
        model=make_model(),
        loss=loss if loss is not None else ClipLoss(),
        optimizer=partial(torch.optim.SGD, lr=lr, momentum=0.9),
        scheduler=partial(WarmupCosineLR, warmup_steps=2, total_steps=total_steps),
        **kwargs,
    )
