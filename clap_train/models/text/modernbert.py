"""ModernBERT text tower (Warner et al. 2024), pooled for CLAP (`ModernBertEncoder`).

Parameter names are transformers' `ModernBertModel` names, so its state dict (under `model.` in a
`ModernBertForMaskedLM` checkpoint) loads after stripping the prefix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from clap_train.models.text.roberta import trim_padding


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class ModernBertAttention(nn.Module):
    """Self-attention with rotary positions; `window` (half width) limits keys to |i - j| <= window."""

    def __init__(self, hidden_size: int, num_heads: int, window: int | None, dropout: float):
        super().__init__()
        self.num_heads, self.window, self.dropout = num_heads, window, dropout
        self.Wqkv = nn.Linear(hidden_size, 3 * hidden_size, bias=False)
        self.Wo = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape
        q, k, v = self.Wqkv(x).view(B, L, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)  # 3 x (B, H, L, C/H)
        q = (q.float() * cos + rotate_half(q.float()) * sin).to(x.dtype)
        k = (k.float() * cos + rotate_half(k.float()) * sin).to(x.dtype)
        allowed = key_mask[:, None, None, :]  # (B, 1, 1, L)
        if self.window is not None:
            positions = torch.arange(L, device=x.device)
            allowed = allowed & ((positions[:, None] - positions[None, :]).abs() <= self.window)  # (B, 1, L, L)
        # additive rather than boolean: a padding query with no key in its window stays finite (not NaN)
        bias = torch.zeros(allowed.shape, dtype=q.dtype, device=x.device).masked_fill(~allowed, torch.finfo(q.dtype).min)
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=bias,
                                             dropout_p=self.dropout if self.training else 0.0)  # (B, H, L, C/H)
        return self.Wo(ctx.transpose(1, 2).reshape(B, L, C))


class ModernBertMLP(nn.Module):
    """GeGLU feed-forward: Wo(gelu(a) * b) with [a | b] = Wi(x)."""

    def __init__(self, hidden_size: int, intermediate_size: int, dropout: float):
        super().__init__()
        self.Wi = nn.Linear(hidden_size, 2 * intermediate_size, bias=False)
        self.Wo = nn.Linear(intermediate_size, hidden_size, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.Wi(x).chunk(2, dim=-1)
        return self.Wo(self.drop(F.gelu(a) * gate))


class ModernBertLayer(nn.Module):
    """Pre-LN layer (no LayerNorm before the first layer's attention: the embeddings are normed)."""

    def __init__(self, index, hidden_size, num_heads, intermediate_size, window, eps, dropout):
        super().__init__()
        self.attn_norm = nn.Identity() if index == 0 else nn.LayerNorm(hidden_size, eps=eps, bias=False)
        self.attn = ModernBertAttention(hidden_size, num_heads, window, dropout)
        self.mlp_norm = nn.LayerNorm(hidden_size, eps=eps, bias=False)
        self.mlp = ModernBertMLP(hidden_size, intermediate_size, dropout)
        self.is_global = window is None

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), key_mask, cos, sin)
        return x + self.mlp(self.mlp_norm(x))


class ModernBertEncoder(nn.Module):
    """ModernBERT -> (B, hidden_size): the final-normed token states, pooled.

    Defaults are ModernBERT-base. Every `global_every`-th layer (0, 3, 6, ...) attends globally with rotary
    base `global_rope_theta`; the others within +-local_attention/2 tokens with `local_rope_theta`; no
    biases, LayerNorm without bias, GeGLU feed-forward, as transformers' `ModernBertModel`.

    Args:
        pooling: "mean" (over real tokens, the usual sentence embedding) or "cls" (token 0).
    Initialise from a transformers ModernBERT directory (`ModernBertModel` or `ModernBertForMaskedLM`) with
    `init.text_encoder=DIR` (`clap_train.checkpoints.pretrained.load_pretrained_modernbert`).
    Forward: input_ids (B, L), attention_mask (B, L) 1 for real tokens; columns that are padding in every row
    are dropped first (`trim_padding`, the output is unchanged).

    Raises:
        ValueError: bad geometry or pooling.
    """

    def __init__(self, vocab_size: int = 50368, hidden_size: int = 768, num_layers: int = 22, num_heads: int = 12,
                 intermediate_size: int = 1152, max_position_embeddings: int = 8192, local_attention: int = 128,
                 global_every: int = 3, global_rope_theta: float = 160000.0, local_rope_theta: float = 10000.0,
                 norm_eps: float = 1e-5, pad_token_id: int = 50283, dropout: float = 0.0, pooling: str = "mean"):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        self.vocab_size, self.output_dim, self.pooling = vocab_size, hidden_size, pooling
        self.max_position_embeddings = max_position_embeddings
        head_dim = hidden_size // num_heads
        self.embeddings = nn.Module()
        self.embeddings.tok_embeddings = nn.Embedding(vocab_size, hidden_size, padding_idx=pad_token_id)
        self.embeddings.norm = nn.LayerNorm(hidden_size, eps=norm_eps, bias=False)
        self.embeddings.drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            ModernBertLayer(i, hidden_size, num_heads, intermediate_size,
                            None if i % global_every == 0 else local_attention // 2, norm_eps, dropout)
            for i in range(num_layers))
        self.final_norm = nn.LayerNorm(hidden_size, eps=norm_eps, bias=False)
        for name, theta in (("global_inv_freq", global_rope_theta), ("local_inv_freq", local_rope_theta)):
            inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim)
            self.register_buffer(name, inv_freq, persistent=False)
        self.apply(_init_weights)

    def blocks(self) -> list[nn.Module]:
        return list(self.layers)

    def _rotary(self, inv_freq: torch.Tensor, length: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = torch.arange(length, device=inv_freq.device, dtype=torch.float)[:, None] * inv_freq.float()[None, :]
        emb = torch.cat([freqs, freqs], dim=-1)  # (L, C/H)
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, L, hidden_size) final-normed states (transformers' `last_hidden_state`)."""
        if input_ids.shape[1] > self.max_position_embeddings:
            raise ValueError(f"captions of {input_ids.shape[1]} tokens exceed max_position_embeddings "
                             f"{self.max_position_embeddings}")
        x = self.embeddings.drop(self.embeddings.norm(self.embeddings.tok_embeddings(input_ids)))  # (B, L, C)
        key_mask = attention_mask.bool()
        rotary = {True: self._rotary(self.global_inv_freq, x.shape[1], x.dtype),
                  False: self._rotary(self.local_inv_freq, x.shape[1], x.dtype)}
        for layer in self.layers:
            x = layer(x, key_mask, *rotary[layer.is_global])
        return self.final_norm(x)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        input_ids, attention_mask = trim_padding(input_ids, attention_mask)
        hidden = self.hidden_states(input_ids, attention_mask)
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.to(hidden.dtype)[..., None]  # (B, L, 1)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.trunc_normal_(module.weight, std=0.02, a=-0.04, b=0.04)
