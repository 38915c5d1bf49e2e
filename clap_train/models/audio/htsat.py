"""HTSAT: the Swin-transformer audio tower of CLAP (CLAP_SPEC §3), numerically the LAION / HF model.

Log-mel (B, C, T, F) -> BatchNorm per mel bin -> bicubic stretch of T to spec_size*freq_ratio frames
-> fold into a (spec_size x spec_size) image -> 4x4 patch tokens (+ AFF fusion of local views for long
clips) -> Swin stages (window attention with relative position bias, shifted windows, patch merging)
-> LayerNorm -> mean over tokens. Parameter names follow LAION's HTSAT (`bn0`, `layers.{s}.blocks.{b}`,
`attn.qkv`, ...) so LAION checkpoints load by dropping the keys this module does not have.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from clap_train.models.audio.fusion import PatchEmbed

SHIFT_MASK_VALUE = -100.0  # LAION/HF fill value between shifted-window regions (not -inf)


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B, nW, window*window, C), windows in row-major order."""
    batch, height, width, channels = x.shape
    x = x.view(batch, height // window, window, width // window, window, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(batch, -1, window * window, channels)


def window_order(size: int, window: int, shift: int = 0, device: torch.device | None = None) -> torch.Tensor:
    """(size*size,) row-major grid positions listed window by window, after rolling the grid by -shift on
    both axes: the token order in which each run of window*window tokens is one (shifted) attention window."""
    grid = torch.arange(size * size, device=device).view(1, size, size, 1)
    if shift:
        grid = torch.roll(grid, shifts=(-shift, -shift), dims=(1, 2))
    return window_partition(grid, window).flatten()


def inverse_permutation(order: torch.Tensor) -> torch.Tensor:
    """(T,) permutation -> (T,) its inverse: inverse[order[i]] = i."""
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device)
    return inverse


class _GatherTokens(torch.autograd.Function):
    """x[:, index] for a permutation `index`; the backward is the inverse gather, not a scatter-add."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, index: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inverse)
        return x.index_select(1, index)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (inverse,) = ctx.saved_tensors
        return grad.index_select(1, inverse), None, None


def gather_tokens(x: torch.Tensor, index: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """(B, T, C) -> (B, T, C) reordered as x[:, index]; `inverse` = inverse_permutation(index)."""
    return _GatherTokens.apply(x, index, inverse)


def relative_position_index(window: int, device: torch.device | None = None) -> torch.Tensor:
    """(N, N) index into the ((2w-1)^2, heads) bias table, N = window^2: (dr + w-1) * (2w-1) + (dc + w-1)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window, device=device), torch.arange(window, device=device),
                                        indexing="ij")).flatten(1)  # (2, N)
    delta = coords[:, :, None] - coords[:, None, :] + (window - 1)  # (2, N, N)
    return delta[0] * (2 * window - 1) + delta[1]


def shift_mask(height: int, width: int, window: int, shift: int, device: torch.device | None = None) -> torch.Tensor:
    """(nW, N, N) additive mask for shifted windows: -100 between tokens of different wrap-around regions."""

    def regions(size: int) -> torch.Tensor:
        idx = torch.arange(size, device=device)
        return (idx >= size - window).long() + (idx >= size - shift).long()  # 0, 1, 2 per axis

    labels = regions(height)[:, None] * 3 + regions(width)[None, :]  # (H, W)
    labels = window_partition(labels[None, :, :, None], window)[0, :, :, 0]  # (nW, N)
    differ = labels[:, :, None] != labels[:, None, :]
    return torch.zeros(differ.shape, device=device).masked_fill(differ, SHIFT_MASK_VALUE)


def spec_augment(x: torch.Tensor, time_width: int = 64, time_stripes: int = 2, freq_width: int = 8,
                 freq_stripes: int = 2) -> torch.Tensor:
    """LAION/torchlibrosa SpecAugmentation on (B, C, T, F): per row, `stripes` zeroed bands of width
    uniform in [0, width) at a uniform start, along time then frequency (all channels alike)."""
    batch, _, frames, bins = x.shape
    keep = torch.ones(batch, 1, frames, bins, device=x.device, dtype=x.dtype)
    for dim, total, width, stripes in ((2, frames, time_width, time_stripes), (3, bins, freq_width, freq_stripes)):
        widths = torch.randint(0, min(width, total), (batch, stripes), device=x.device)
        starts = (torch.rand(batch, stripes, device=x.device) * (total - widths)).long()
        pos = torch.arange(total, device=x.device)
        dropped = ((pos >= starts[..., None]) & (pos < (starts + widths)[..., None])).any(1)  # (B, total)
        shape = (batch, 1, total, 1) if dim == 2 else (batch, 1, 1, total)
        keep = keep * (~dropped).view(shape).to(x.dtype)
    return x * keep


class DropPath(nn.Module):
    """Stochastic depth: zero a row's residual branch with probability p in training, rescale the rest."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device) >= self.p
        return x * keep.to(x.dtype) / (1.0 - self.p)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, with a learned relative position bias.

    Forward: windows (B, nW, N, C), mask (nW, N, N) additive or None -> (B, nW, N, C).
    Attention runs in `scaled_dot_product_attention` on 4-D (groups, heads', N, d) tensors: without a shift
    mask as strided (B*nW, heads) views of the qkv projection against the (1, heads, N, N) bias, with one
    as a (B, nW*heads) copy against the (1, nW*heads, N, N) bias + mask; either float mask broadcasts over
    the batch and is never expanded.
    """

    def __init__(self, dim: int, num_heads: int, window: int):
        super().__init__()
        self.num_heads, self.window = num_heads, window
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, windows: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        batch, num_windows, tokens, dim = windows.shape
        heads, head_dim = self.num_heads, dim // self.num_heads
        qkv = self.qkv(windows)  # (B, nW, N, 3C)
        index = relative_position_index(self.window, windows.device)
        bias = self.relative_position_bias_table[index.view(-1)].view(tokens, tokens, heads).permute(2, 0, 1)
        if mask is None:
            # strided (B*nW, h, N, d) views of qkv: the attention kernel reads the strides, a copy would
            # cost as much as the attention itself on the CPU (bitwise the same result)
            q, k, v = (t.transpose(1, 2) for t in qkv.view(batch * num_windows, tokens, 3, heads, head_dim).unbind(2))
            bias = bias.unsqueeze(0)  # (1, h, N, N)
        else:
            q, k, v = qkv.view(batch, num_windows, tokens, 3, heads, head_dim).permute(3, 0, 1, 4, 2, 5).contiguous()
            q, k, v = (t.view(batch, -1, tokens, head_dim) for t in (q, k, v))  # (B, nW*h, N, d)
            bias = (bias.unsqueeze(0) + mask.unsqueeze(1)).reshape(1, -1, tokens, tokens)  # (1, nW*h, N, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        out = out.view(batch, num_windows, heads, tokens, head_dim).transpose(2, 3)  # (B, nW, N, h, d)
        return self.proj(out.reshape(batch, num_windows, tokens, dim))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # exact (erf) GELU


class SwinBlock(nn.Module):
    """Pre-norm Swin block on a fixed (H, W) token grid: x + attn(LN(x)), then x + mlp(LN(x)).

    Forward: (B, H*W, C) -> (B, H*W, C), tokens in `window_order(H, window)` (each run of window^2
    tokens is one window), so an unshifted block attends without moving tokens. `shift` > 0 regroups
    the tokens into the windows of the grid rolled by -shift (one gather each way) and masks attention
    across the wrap-around seams. Drop-path hits both residual branches (LAION).
    """

    def __init__(self, dim: int, num_heads: int, resolution: tuple[int, int], window: int, shift: int,
                 mlp_ratio: float, drop_path: float):
        super().__init__()
        self.resolution, self.window, self.shift = resolution, window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = self.resolution
        batch, num_tokens, dim = x.shape
        y = self.norm1(x)
        mask = None
        if self.shift:
            size = height  # square grids only (HTSAT)
            shifted = inverse_permutation(window_order(size, self.window, device=x.device))[
                window_order(size, self.window, self.shift, x.device)]  # stream position of each shifted-window token
            unshift = inverse_permutation(shifted)
            y = gather_tokens(y, shifted, unshift)
            mask = shift_mask(height, width, self.window, self.shift, x.device)
        y = self.attn(y.view(batch, -1, self.window**2, dim), mask).view(batch, num_tokens, dim)
        if self.shift:
            y = gather_tokens(y, unshift, shifted)
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """(B, H*W, C) -> (B, H/2*W/2, 2C): concat sub-grids (even,even), (odd,even), (even,odd), (odd,odd)
    [row, col] along channels, LayerNorm(4C), Linear(4C -> 2C) without bias.

    Tokens come in `window_order(H, window)` and leave in `window_order(H/2, next_window)`, the orders
    of the stages before and after; the regrouping is one gather (every input token is used once).
    """

    def __init__(self, dim: int, resolution: tuple[int, int], window: int, next_window: int):
        super().__init__()
        self.resolution, self.window, self.next_window = resolution, window, next_window
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.resolution[0]  # square grids only (HTSAT)
        batch, num_tokens, dim = x.shape
        position = inverse_permutation(window_order(size, self.window, device=x.device))  # grid cell -> token
        merged = window_order(size // 2, self.next_window, device=x.device)  # (T/4,) cells of the half grid
        row, col = merged // (size // 2), merged % (size // 2)
        cells = [(2 * row + dr) * size + 2 * col + dc for dr, dc in ((0, 0), (1, 0), (0, 1), (1, 1))]
        index = position[torch.stack(cells, dim=1).flatten()]  # (T,): 4 source tokens per merged token
        x = gather_tokens(x, index, inverse_permutation(index)).view(batch, num_tokens // 4, 4 * dim)
        return self.reduction(self.norm(x))  # (B, H/2*W/2, 2C)


class SwinStage(nn.Module):
    """A ModuleList of blocks plus an optional PatchMerging; the encoder drives the loop."""

    def __init__(self, blocks: list[SwinBlock], downsample: PatchMerging | None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample


class HTSATEncoder(nn.Module):
    """HTSAT audio tower (contract in docs/ARCHITECTURE.md).

    Args:
        embed_dim: stage-1 token width; the output width is embed_dim * 2**(len(depths)-1).
            Presets: tiny 96 / base 128 / large 256.
        depths: Swin blocks per stage, e.g. (2, 2, 6, 2) tiny, (2, 2, 12, 2) base/large.
        num_heads: attention heads per stage; each stage width must divide by its head count.
        window_size: attention window side; stages whose grid is <= window attend globally, unshifted.
        spec_size: side of the folded spectrogram image (256).
        num_mel_bins: mel bins F of the input (64); spec_size must be a multiple (freq_ratio = spec_size / F).
        patch_size: patch side and stride (4).
        mlp_ratio: MLP hidden width / block width (4.0).
        drop_path_rate: stochastic depth, linearly spaced 0 -> rate over all blocks, training only
            (LAION trained with 0.1; the HF conversion runs with 0).
        enable_fusion: 4-channel [global, front, middle, back] input with AFF fusion for long clips.
        spec_augment: LAION SpecAugment (2 time stripes < 64 frames, 2 mel stripes < 8 bins), training only.
        activation_checkpointing: recompute each Swin block in backward (training with grad only).

    Forward: features (B, C, T, F) dB log-mel with T <= spec_size * freq_ratio and F = num_mel_bins,
        is_longer (B,) or (B, 1) bool or None -> (B, output_dim), the mean of the final LayerNorm-ed tokens.
        Unfused models read channel 0 only. Fused models fuse channels 1..3 into rows with is_longer True;
        in training, if no row is longer, one random row is fused (LAION's rule; eval never forces one).
    Raises:
        ValueError: on an inconsistent constructor argument (named in the message) or a badly shaped input.
    """

    def __init__(
        self,
        embed_dim: int = 96,
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (4, 8, 16, 32),
        window_size: int = 8,
        spec_size: int = 256,
        num_mel_bins: int = 64,
        patch_size: int = 4,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        enable_fusion: bool = False,
        spec_augment: bool = False,
        activation_checkpointing: bool = False,
    ):
        super().__init__()
        depths, num_heads = tuple(depths), tuple(num_heads)
        resolutions, windows = _validate(embed_dim, depths, num_heads, window_size, spec_size, num_mel_bins,
                                         patch_size, mlp_ratio, drop_path_rate)
        self.spec_size, self.num_mel_bins = spec_size, num_mel_bins
        # geometry kept for export and checkpoint conversion (clap_train.checkpoints)
        self.embed_dim, self.depths, self.num_heads = embed_dim, depths, num_heads
        self.window_size, self.patch_size, self.mlp_ratio = window_size, patch_size, mlp_ratio
        self.freq_ratio = spec_size // num_mel_bins
        self.enable_fusion, self.spec_augment = enable_fusion, spec_augment
        self.activation_checkpointing = activation_checkpointing
        self.output_dim = embed_dim * 2 ** (len(depths) - 1)

        self.bn0 = nn.BatchNorm2d(num_mel_bins)  # per mel bin, shared over time and channels
        self.patch_embed = PatchEmbed(spec_size, patch_size, embed_dim, enable_fusion)
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.layers = nn.ModuleList()
        for stage, (depth, heads) in enumerate(zip(depths, num_heads)):
            dim, res, window = embed_dim * 2**stage, resolutions[stage], windows[stage]
            shift = window // 2 if res > window_size else 0
            blocks = [
                SwinBlock(dim, heads, (res, res), window, shift if i % 2 else 0, mlp_ratio, rates.pop(0))
                for i in range(depth)
            ]
            merge = PatchMerging(dim, (res, res), window, windows[stage + 1]) if stage < len(depths) - 1 else None
            self.layers.append(SwinStage(blocks, merge))
        self.norm = nn.LayerNorm(self.output_dim)
        self.apply(_init_weights)

    def blocks(self) -> list[nn.Module]:
        """The Swin blocks, in order: the units for FSDP wrapping and activation checkpointing."""
        return [block for stage in self.layers for block in stage.blocks]

    def forward(self, features: torch.Tensor, is_longer: torch.Tensor | None = None) -> torch.Tensor:
        if features.dim() != 4 or features.shape[-1] != self.num_mel_bins:
            raise ValueError(f"features must be (B, C, T, {self.num_mel_bins}), got {tuple(features.shape)}")
        if features.shape[2] > self.spec_size * self.freq_ratio:
            raise ValueError(f"at most {self.spec_size * self.freq_ratio} frames, got {features.shape[2]}")
        fused_rows = self._fused_rows(features, is_longer)
        if fused_rows is None or fused_rows.numel() == 0:
            features = features[:, :1]  # only the global view is used
        x = self.bn0(features.transpose(1, 3)).transpose(1, 3)  # BatchNorm2d over F via (B, F, T, C)
        if self.spec_augment and self.training:
            x = spec_augment(x)
        x = self.patch_embed(self._fold(x), fused_rows)  # (B, G*G, embed_dim), row-major grid
        order = window_order(self.patch_embed.grid_size, self.layers[0].blocks[0].window, device=x.device)
        x = gather_tokens(x, order, inverse_permutation(order))  # window order: see SwinBlock
        use_checkpoint = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for stage in self.layers:
            for block in stage.blocks:
                x = checkpoint(block, x, use_reentrant=False) if use_checkpoint else block(x)
            if stage.downsample is not None:
                x = stage.downsample(x)
        return self.norm(x).mean(dim=1)  # (B, output_dim); the token order does not matter here

    def _fused_rows(self, features: torch.Tensor, is_longer: torch.Tensor | None) -> torch.Tensor | None:
        """Row indices that get AFF fusion (None for unfused models)."""
        if not self.enable_fusion:
            return None
        batch = features.shape[0]
        if is_longer is None:
            longer = torch.zeros(batch, dtype=torch.bool, device=features.device)
        else:
            longer = is_longer.to(features.device, torch.bool).reshape(-1)
            if longer.numel() != batch:
                raise ValueError(f"is_longer must have {batch} entries, got shape {tuple(is_longer.shape)}")
        if self.training and not longer.any():
            longer = longer.clone()
            longer[torch.randint(0, batch, (1,), device=features.device)] = True
        return torch.nonzero(longer).flatten()

    def _fold(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, F) -> (B, C, spec_size, spec_size): stretch T to spec_size*r frames (bicubic,
        align_corners), cut into r segments and stack them along height, mel bins as rows."""
        batch, channels, frames, bins = x.shape
        target = self.spec_size * self.freq_ratio
        if frames < target:
            x = F.interpolate(x, (target, bins), mode="bicubic", align_corners=True)
        x = x.reshape(batch, channels * self.freq_ratio, self.spec_size, bins)  # r time segments
        x = x.transpose(2, 3)  # (B, C*r, F, spec_size)
        return x.reshape(batch, channels, self.freq_ratio * bins, self.spec_size)


def _init_weights(module: nn.Module) -> None:
    """LAION HTSAT init: truncated normal(0.02) linears and bias tables, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, WindowAttention):
        nn.init.trunc_normal_(module.relative_position_bias_table, std=0.02)


def _validate(embed_dim, depths, num_heads, window_size, spec_size, num_mel_bins, patch_size, mlp_ratio,
              drop_path_rate) -> tuple[list[int], list[int]]:
    """Check the geometry; return each stage's grid side and effective window side."""
    if embed_dim < 1:
        raise ValueError(f"embed_dim must be >= 1, got {embed_dim}")
    if not depths or any(d < 1 for d in depths):
        raise ValueError(f"depths must be a non-empty tuple of positive ints, got {depths}")
    if len(num_heads) != len(depths):
        raise ValueError(f"num_heads must have one entry per stage ({len(depths)}), got {num_heads}")
    for stage, heads in enumerate(num_heads):
        if heads < 1 or (embed_dim * 2**stage) % heads:
            raise ValueError(f"num_heads[{stage}]={heads} must divide the stage width {embed_dim * 2**stage}")
    if num_mel_bins < 1 or spec_size < num_mel_bins or spec_size % num_mel_bins:
        raise ValueError(f"spec_size must be a multiple of num_mel_bins, got {spec_size} and {num_mel_bins}")
    if patch_size < 1 or spec_size % patch_size:
        raise ValueError(f"patch_size must divide spec_size, got patch_size={patch_size}, spec_size={spec_size}")
    grid, merges = spec_size // patch_size, 2 ** (len(depths) - 1)
    if grid % merges:
        raise ValueError(f"spec_size / patch_size = {grid} must be divisible by 2**(len(depths)-1) = {merges}")
    if window_size < 1:
        raise ValueError(f"window_size must be >= 1, got {window_size}")
    resolutions = [grid // 2**stage for stage in range(len(depths))]
    windows = [min(window_size, res) for res in resolutions]
    for stage, (res, window) in enumerate(zip(resolutions, windows)):
        if res % window:
            raise ValueError(f"window_size={window_size} must divide the stage-{stage} grid side {res}")
    if mlp_ratio <= 0:
        raise ValueError(f"mlp_ratio must be > 0, got {mlp_ratio}")
    if not 0.0 <= drop_path_rate < 1.0:
        raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
    return resolutions, windows
