"""Exact nearest-neighbour search over an embeddings file: a chunked matrix product and a running top-k.

Memory: the index itself (N x D float32: 2 GB for 1M x 512) plus one (Q, chunk) score block
(Q x 65536 x 4 bytes, 256 KiB per query); nothing of size N x N. Latency: `bench/embed.py`.
"""

from __future__ import annotations

import numpy as np
import torch

CHUNK = 65536


@torch.no_grad()
def top_k(index: np.ndarray | torch.Tensor, queries: np.ndarray | torch.Tensor, k: int = 10,
          chunk: int = CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """(scores (Q, k') float32, rows (Q, k') int64), k' = min(k, N), best first, of `queries` (Q, D) against
    `index` (N, D) by dot product (cosine similarity for unit-norm rows).

    Raises:
        ValueError: on k < 1, an empty index or mismatched widths.
    """
    index = torch.as_tensor(index, dtype=torch.float32)
    queries = torch.as_tensor(queries, dtype=torch.float32)
    if k < 1:
        raise ValueError(f"--top-k must be >= 1, got {k}")
    if index.ndim != 2 or index.shape[0] == 0 or queries.ndim != 2 or queries.shape[1] != index.shape[1]:
        raise ValueError(f"index (N, D) and queries (Q, D) must share D, got {tuple(index.shape)} and "
                         f"{tuple(queries.shape)}")
    k = min(k, index.shape[0])
    best_scores = torch.full((queries.shape[0], 0), -float("inf"))
    best_rows = torch.zeros((queries.shape[0], 0), dtype=torch.long)
    for start in range(0, index.shape[0], chunk):
        scores = queries @ index[start:start + chunk].T  # (Q, chunk)
        kk = min(k, scores.shape[1])
        chunk_scores, chunk_rows = torch.topk(scores, kk, dim=1, sorted=True)
        scores = torch.cat([best_scores, chunk_scores], dim=1)
        rows = torch.cat([best_rows, chunk_rows + start], dim=1)
        order = torch.argsort(-scores, dim=1, stable=True)[:, :k]
        best_scores, best_rows = scores.gather(1, order), rows.gather(1, order)
    return best_scores.numpy(), best_rows.numpy()
