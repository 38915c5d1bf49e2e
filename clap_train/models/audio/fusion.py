"""HTSAT patch embedding with CLAP's attentional feature fusion (AFF, LAION "aff_2d").

The fused CLAP model sees four log-mel views of a long clip, [global, front, middle, back]
(CLAP_SPEC §2.4). The global view goes through the ordinary 4x4 patch convolution; for clips
flagged `is_longer` the three local views go through a (4, 12)-strided convolution whose outputs
are laid side by side along the width and merged into the global map by AFF (CLAP_SPEC §4).
Parameter names follow LAION's `PatchEmbed` / `AFF` so its checkpoints load without renaming.
"""

from __future__ import annotations

import torch
from torch import nn


class AFF(nn.Module):
    """Attentional feature fusion of two (N, C, H, W) maps: out = 2*g*w + 2*l*(1 - w) with
    w = sigmoid(local_att(g + l) + global_att(g + l)), both branches bottlenecked to C // reduction.

    In training mode a batch of one is duplicated around the BatchNorms (as LAION does), because
    BatchNorm cannot take batch statistics of a single pooled vector.

    Raises:
        ValueError: if `channels // reduction` is smaller than 1.
    """

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        inter = channels // reduction
        if inter < 1:
            raise ValueError(f"channels // reduction must be >= 1, got channels={channels}, reduction={reduction}")
        self.local_att = nn.Sequential(
            nn.Conv2d(channels, inter, kernel_size=1),
            nn.BatchNorm2d(inter),
            nn.ReLU(inplace=True),
            nn.Conv2d(inter, channels, kernel_size=1),
            nn.BatchNorm2d(channels),
        )
        self.global_att = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, inter, kernel_size=1),
            nn.BatchNorm2d(inter),
            nn.ReLU(inplace=True),
            nn.Conv2d(inter, channels, kernel_size=1),
            nn.BatchNorm2d(channels),
        )

    def forward(self, global_map: torch.Tensor, local_map: torch.Tensor) -> torch.Tensor:
        """global_map, local_map: (N, C, H, W) -> (N, C, H, W)."""
        mixed = global_map + local_map
        single = self.training and mixed.shape[0] == 1
        if single:
            mixed = torch.cat([mixed, mixed])  # (2, C, H, W)
        weight = torch.sigmoid(self.local_att(mixed) + self.global_att(mixed))
        if single:
            weight = weight[:1]
        return 2 * global_map * weight + 2 * local_map * (1 - weight)


class PatchEmbed(nn.Module):
    """Folded spectrogram image -> patch tokens, optionally fusing local views for long clips.

    Args:
        spec_size: side of the square input image (256 for the released models).
        patch_size: square patch and stride of the patch convolution (4).
        embed_dim: token width (96 for HTSAT-tiny).
        enable_fusion: build the local-view convolution and AFF block.
        fusion_reduction: AFF bottleneck ratio (4 in every released model).
    Forward: image (B, C, spec_size, spec_size), fused_rows (K,) int64 row indices whose channels 1..3
        are local views (fusion only; C must then be >= 4) -> tokens (B, (spec_size/patch)^2, embed_dim)
        in row-major (h, w) order, LayerNorm-ed.
    Raises:
        ValueError: on a bad constructor argument, a wrong image size, or fused rows without local views.
    """

    def __init__(
        self, spec_size: int, patch_size: int, embed_dim: int, enable_fusion: bool = False, fusion_reduction: int = 4
    ):
        super().__init__()
        if patch_size < 1 or spec_size % patch_size:
            raise ValueError(f"patch_size must divide spec_size, got patch_size={patch_size}, spec_size={spec_size}")
        if enable_fusion and spec_size < 3 * patch_size:
            raise ValueError(f"fusion needs spec_size >= 3 * patch_size, got spec_size={spec_size}")
        self.spec_size, self.enable_fusion = spec_size, enable_fusion
        self.grid_size = spec_size // patch_size
        self.proj = nn.Conv2d(1, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)
        if enable_fusion:
            # Local views are strided 3x wider in time so the three of them fit side by side in one grid.
            wide = (patch_size, 3 * patch_size)
            self.mel_conv2d = nn.Conv2d(1, embed_dim, kernel_size=wide, stride=wide)
            self.fusion_model = AFF(embed_dim, fusion_reduction)

    def forward(self, image: torch.Tensor, fused_rows: torch.Tensor | None = None) -> torch.Tensor:
        if image.shape[-2:] != (self.spec_size, self.spec_size):
            raise ValueError(f"image must be (B, C, {self.spec_size}, {self.spec_size}), got {tuple(image.shape)}")
        x = self.proj(image[:, :1])  # (B, D, G, G)
        if self.enable_fusion and fused_rows is not None and fused_rows.numel() > 0:
            x = self._fuse(x, image, fused_rows)
        x = x.flatten(2).transpose(1, 2)  # (B, G*G, D)
        return self.norm(x)

    def _fuse(self, x: torch.Tensor, image: torch.Tensor, fused_rows: torch.Tensor) -> torch.Tensor:
        if image.shape[1] < 4:
            raise ValueError(f"fused rows need 4 channels [global, front, middle, back], got {image.shape[1]}")
        local = image[fused_rows, 1:4]  # (K, 3, S, S)
        num_rows, num_views, height, width = local.shape
        local = self.mel_conv2d(local.reshape(num_rows * num_views, 1, height, width))  # (K*3, D, G, g)
        _, dim, grid_h, grid_w = local.shape
        local = local.view(num_rows, num_views, dim, grid_h, grid_w)
        local = local.permute(0, 2, 3, 1, 4).flatten(3)  # (K, D, G, 3*g): views side by side in width
        local = nn.functional.pad(local, (0, x.shape[-1] - local.shape[-1]))  # zero-pad width 3*g -> G
        fused = self.fusion_model(x[fused_rows], local)
        return x.index_put((fused_rows,), fused)
