"""RoBERTa text tower (post-LN BERT family) returning the pooler output, as CLAP uses it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class RobertaEmbeddings(nn.Module):
    def __init__(self, vocab_size, hidden_size, max_position_embeddings, type_vocab_size, pad_token_id, eps, dropout,
                 position_offset: bool):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, hidden_size, padding_idx=pad_token_id)
        self.position_embeddings = nn.Embedding(max_position_embeddings, hidden_size)
        self.token_type_embeddings = nn.Embedding(type_vocab_size, hidden_size)
        self.layer_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.pad_token_id = pad_token_id
        self.position_offset = position_offset

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.position_offset:
            # RoBERTa: real tokens count up from pad_id + 1, padding tokens sit at pad_id.
            not_pad = input_ids.ne(self.pad_token_id).long()
            positions = torch.cumsum(not_pad, dim=1) * not_pad + self.pad_token_id  # (B, L)
        else:  # BERT: 0..L-1
            positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        x = x + self.token_type_embeddings.weight[0]  # token type 0 everywhere
        return self.dropout(self.layer_norm(x))


class RobertaLayer(nn.Module):
    """Self-attention + feed-forward, each followed by residual add and LayerNorm (post-LN).

    Forward: x (B, L, C), attn_bias (B, 1, 1, L) additive, num_queries Q or None (= L) -> (B, Q, C), the
    outputs of the first Q tokens only (every token still serves as key and value): the last layer
    of a pooled encoder needs just token 0, and skipping the other rows saves most of that layer.
    """

    def __init__(self, hidden_size, num_heads, intermediate_size, eps, dropout, attention_dropout):
        super().__init__()
        self.num_heads = num_heads
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.attn_out = nn.Linear(hidden_size, hidden_size)
        self.attn_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.ffn_in = nn.Linear(hidden_size, intermediate_size)
        self.ffn_out = nn.Linear(intermediate_size, hidden_size)
        self.ffn_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.attention_dropout = attention_dropout

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor, num_queries: int | None = None) -> torch.Tensor:
        B, L, C = x.shape
        k, v = (proj(x).view(B, L, self.num_heads, -1).transpose(1, 2) for proj in (self.key, self.value))
        x = x[:, :num_queries]  # (B, Q, C)
        q = self.query(x).view(B, x.shape[1], self.num_heads, -1).transpose(1, 2)  # (B, H, Q, C/H)
        p = self.attention_dropout if self.training else 0.0
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, dropout_p=p)  # (B, H, Q, C/H)
        ctx = ctx.transpose(1, 2).reshape(B, x.shape[1], C)
        x = self.attn_norm(x + self.dropout(self.attn_out(ctx)))
        return self.ffn_norm(x + self.dropout(self.ffn_out(F.gelu(self.ffn_in(x)))))


class RobertaEncoder(nn.Module):
    """RoBERTa (or BERT with `position_offset=False`) returning tanh(dense(h_<s>)) -> (B, hidden_size).

    Defaults are roberta-base as fine-tuned in LAION-CLAP (LayerNorm eps 1e-5; transformers'
    CLAP configs use 1e-12, set `layer_norm_eps` to match the checkpoint you load).
    Forward: input_ids (B, L) int64, attention_mask (B, L) with 1 for real tokens; columns that are padding
    in every row are dropped first (`trim_padding`), which leaves the output unchanged.
    """

    def __init__(
        self,
        vocab_size: int = 50265,
        hidden_size: int = 768,
        num_layers: int = 12,
        num_heads: int = 12,
        intermediate_size: int = 3072,
        max_position_embeddings: int = 514,
        type_vocab_size: int = 1,
        layer_norm_eps: float = 1e-5,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        pad_token_id: int = 1,
        position_offset: bool = True,
        activation_checkpointing: bool = False,
    ):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
        for name, value in (("vocab_size", vocab_size), ("num_layers", num_layers), ("hidden_size", hidden_size)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.output_dim = hidden_size
        # geometry kept for export and checkpoint conversion (clap_train.checkpoints)
        self.vocab_size, self.hidden_size, self.num_layers, self.num_heads = vocab_size, hidden_size, num_layers, num_heads
        self.intermediate_size, self.max_position_embeddings = intermediate_size, max_position_embeddings
        self.type_vocab_size, self.layer_norm_eps, self.pad_token_id = type_vocab_size, layer_norm_eps, pad_token_id
        self.position_offset = position_offset
        self.activation_checkpointing = activation_checkpointing
        self.embeddings = RobertaEmbeddings(vocab_size, hidden_size, max_position_embeddings, type_vocab_size,
                                            pad_token_id, layer_norm_eps, dropout, position_offset)
        self.layers = nn.ModuleList(
            RobertaLayer(hidden_size, num_heads, intermediate_size, layer_norm_eps, dropout, attention_dropout)
            for _ in range(num_layers)
        )
        self.pooler = nn.Linear(hidden_size, hidden_size)
        self.apply(_init_weights)

    def blocks(self) -> list[nn.Module]:
        return list(self.layers)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        input_ids, attention_mask = trim_padding(input_ids, attention_mask)
        x = self.embeddings(input_ids)  # (B, L', C)
        # additive key mask broadcast over heads and queries: (B, 1, 1, L)
        attn_bias = (attention_mask[:, None, None, :] == 0).to(x.dtype) * torch.finfo(x.dtype).min
        for index, layer in enumerate(self.layers):
            num_queries = 1 if index == len(self.layers) - 1 else None  # the pooler reads token 0 only
            if self.activation_checkpointing and self.training:
                x = checkpoint(layer, x, attn_bias, num_queries, use_reentrant=False)
            else:
                x = layer(x, attn_bias, num_queries)
        return torch.tanh(self.pooler(x[:, 0]))


def trim_padding(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drops the trailing columns that are padding in every row: (B, L) -> (B, L') with L' the end of the
    longest caption (at least 1).

    The pooled output is unchanged: a masked key gets exactly zero attention weight (exp of the finfo.min
    bias underflows to 0), the dropped tokens are never queried, and positions count from the left. Captions
    padded to 77 (LAION's and our loader's layout) are typically 10-30 tokens, so this skips most of the
    text tower's work. Costs one host sync on an accelerator.
    """
    used = attention_mask.any(dim=0).nonzero()  # (n, 1) indices of columns holding a real token
    length = int(used[-1, 0]) + 1 if len(used) else 1
    if length == input_ids.shape[1]:
        return input_ids, attention_mask
    return input_ids[:, :length], attention_mask[:, :length]


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
