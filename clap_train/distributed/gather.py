"""Collectives used by losses and evaluation. No model code lives here.

Every function is a no-op (returns its input, or its input unchanged in a one-element list) outside an
initialised process group, so single-process code paths call the same functions as distributed ones.

Gradient conventions (what the losses rely on):
- `all_gather_with_grad`: the backward sums, over all ranks, the gradient that each rank's loss sends to
  this rank's rows. If every rank computes a loss L_r, this rank's rows receive d(sum_r L_r)/d(rows).
- `all_gather_no_grad` / `gather_variable_rows`: no gradient at all (the result is detached).
- `scale_grad`: identity in the forward, multiplies the incoming gradient by a constant in the backward.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_info() -> tuple[int, int]:
    """(rank, world_size); (0, 1) outside an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _AllGatherWithGrad(torch.autograd.Function):
    """cat(all_gather(x)) whose backward all-reduces (sums) the gradient and keeps this rank's rows.

    An all-reduce followed by a slice is a reduce-scatter; it is written this way because gloo has no
    reduce-scatter and the tensors gathered here (embeddings) are small.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        rank, world_size = world_info()
        ctx.rank, ctx.rows = rank, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world_size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)  # (world * B, ...)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        grad = grad_output.contiguous().clone()  # the all-reduce is in place; never write into autograd's buffer
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]  # (B, ...)


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` (B, ...) from every rank along dim 0 -> (world * B, ...), rank-major.

    Gradient flows back to every rank's rows: the backward sums the gradients of all ranks' losses
    (one all-reduce), so a loss on the gathered rows trains the local encoder exactly. Every rank must
    pass the same shape and every rank must run the backward (it is a collective).
    """
    _, world_size = world_info()
    if world_size == 1:
        return x
    return _AllGatherWithGrad.apply(x)


@torch.no_grad()
def all_gather_no_grad(x: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's `x` (B, ...) as a list of `world_size` detached tensors, index = rank.

    Returns a list (not a concatenation) so callers can substitute their own rank's entry with the
    gradient-carrying local tensor, as `ClipLoss(gather_with_grad=False)` does. Every rank must pass the
    same shape; use `gather_variable_rows` when the first dimension differs.
    """
    _, world_size = world_info()
    if world_size == 1:
        return [x.detach()]
    parts = [torch.empty_like(x) for _ in range(world_size)]
    dist.all_gather(parts, x.detach().contiguous())
    return parts


@torch.no_grad()
def gather_variable_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` (B_r, ...) from every rank, where B_r may differ per rank -> (sum_r B_r, ...).

    Rows are rank-major (rank 0's rows first) and appear exactly once: each rank pads to the largest B_r,
    all ranks gather, and the padding is stripped. The result is detached (for evaluation). All ranks
    must agree on the trailing dimensions and dtype; B_r = 0 is allowed.

    Raises:
        ValueError: `x` is 0-dimensional (there are no rows to gather).
    """
    if x.dim() == 0:
        raise ValueError("x must have a row dimension, got a 0-dimensional tensor")
    _, world_size = world_info()
    if world_size == 1:
        return x.detach()
    local_rows = torch.tensor([x.shape[0]], dtype=torch.long, device=x.device)
    all_rows = [torch.empty_like(local_rows) for _ in range(world_size)]
    dist.all_gather(all_rows, local_rows)
    rows = [int(n.item()) for n in all_rows]
    max_rows = max(rows)
    padded = x.new_zeros((max_rows, *x.shape[1:]))  # (max_rows, ...)
    padded[: x.shape[0]] = x.detach()
    parts = [torch.empty_like(padded) for _ in range(world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([part[:n] for part, n in zip(parts, rows)], dim=0)  # (sum_r B_r, ...)


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad_output * ctx.factor, None


def scale_grad(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Identity on values; multiplies the gradient flowing back into `x` by `factor`."""
    return _ScaleGrad.apply(x, factor)
