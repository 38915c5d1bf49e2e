"""Collectives used by losses and evaluation. No model code lives here."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn


def world_info() -> tuple[int, int]:
    """(rank, world_size); (0, 1) outside an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` (B, ...) from every rank along dim 0 -> (world * B, ...).

    Gradient flows back to every rank's rows (the backward sums the gradients of all ranks'
    losses), so a loss on the gathered rows trains the local encoder exactly.
    """
    _, world_size = world_info()
    if world_size == 1:
        return x
    return torch.cat(dist_fn.all_gather(x), dim=0)
