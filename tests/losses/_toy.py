"""A tiny two-tower model and inputs for exactness tests of losses and gradient caching."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

AUDIO_DIM, TEXT_DIM, EMBED_DIM = 6, 5, 4


class ToyTwoTower(nn.Module):
    """Two MLP towers (optional dropout) -> unit-norm (B, EMBED_DIM), plus CLAP's two log logit scales."""

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.audio = nn.Sequential(nn.Linear(AUDIO_DIM, 8), nn.Tanh(), nn.Dropout(dropout), nn.Linear(8, EMBED_DIM))
        self.text = nn.Sequential(nn.Linear(TEXT_DIM, 8), nn.Tanh(), nn.Dropout(dropout), nn.Linear(8, EMBED_DIM))
        self.logit_scale_a = nn.Parameter(torch.full((1,), math.log(1 / 0.07)))
        self.logit_scale_t = nn.Parameter(torch.full((1,), math.log(1 / 0.07)))

    def forward(self, audio: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.normalize(self.audio(audio), dim=-1), F.normalize(self.text(text), dim=-1)


def make_model(dropout: float = 0.0, seed: int = 0) -> ToyTwoTower:
    torch.manual_seed(seed)
    return ToyTwoTower(dropout).double()


def make_inputs(num_rows: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(audio (num_rows, AUDIO_DIM), text (num_rows, TEXT_DIM)) float64."""
    generator = torch.Generator().manual_seed(seed)
    audio = torch.randn(num_rows, AUDIO_DIM, generator=generator, dtype=torch.float64)
    text = torch.randn(num_rows, TEXT_DIM, generator=generator, dtype=torch.float64)
    return audio, text


def gradients(*modules: nn.Module) -> dict[str, torch.Tensor]:
    """name -> gradient (zeros where None) of every parameter of `modules`, names prefixed by module index."""
    return {
        f"{index}.{name}": param.grad.clone() if param.grad is not None else torch.zeros_like(param)
        for index, module in enumerate(modules)
        for name, param in module.named_parameters()
    }
