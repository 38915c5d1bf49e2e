"""PANN CNN14 audio tower (Kong et al. 2020), the `PANN-14` audio model of LAION-CLAP."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvBlock(nn.Module):
    """Two 3x3 conv + BatchNorm + ReLU, then 2x2 average pooling (1x1 for the last block)."""

    def __init__(self, in_channels: int, out_channels: int, pool: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, self.pool) if self.pool > 1 else x


class Cnn14Encoder(nn.Module):
    """CNN14 on a log-mel (B, C, T, F) -> (B, channels[-1]) embedding (CLAP's `embedding` output).

    BatchNorm over mel bins, conv blocks with dropout 0.2 between them, mean over frequency,
    max + mean over time, then Linear + ReLU. Only channel 0 is used (no fusion for PANN).
    Args:
        channels: block widths; CNN14 is (64, 128, 256, 512, 1024, 2048). The last block does
            not pool, as in CNN14.
        num_mel_bins: F, for the input BatchNorm.
    """

    def __init__(self, channels=(64, 128, 256, 512, 1024, 2048), num_mel_bins: int = 64, dropout: float = 0.2):
        super().__init__()
        channels = tuple(channels)
        if len(channels) < 2 or min(channels) < 1:
            raise ValueError(f"channels must list >= 2 positive widths, got {channels}")
        self.output_dim = channels[-1]
        self.bn0 = nn.BatchNorm2d(num_mel_bins)
        widths = (1,) + channels
        self.conv_blocks = nn.ModuleList(
            ConvBlock(widths[i], widths[i + 1], pool=2 if i < len(channels) - 1 else 1) for i in range(len(channels))
        )
        self.dropout = nn.Dropout(dropout)
        self.fc1 = nn.Linear(channels[-1], channels[-1])

    def blocks(self) -> list[nn.Module]:
        return list(self.conv_blocks)

    def forward(self, features: torch.Tensor, is_longer: torch.Tensor | None = None) -> torch.Tensor:
        x = features[:, :1]  # (B, 1, T, F)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)  # normalise per mel bin
        for block in self.conv_blocks:
            x = self.dropout(block(x))
        x = x.mean(dim=3)  # (B, C, T')
        x = x.amax(dim=2) + x.mean(dim=2)  # (B, C)
        return F.relu(self.fc1(self.dropout(x)))
