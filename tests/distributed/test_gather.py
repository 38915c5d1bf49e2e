"""Collectives on 2 gloo ranks, and their single-process behaviour."""

import pytest
import torch

from clap_train.distributed.gather import (
    all_gather_no_grad,
    all_gather_with_grad,
    gather_variable_rows,
    scale_grad,
    world_info,
)
from tests.distributed._dist import run_distributed


def _rows(rank: int, num_rows: int) -> torch.Tensor:
    """Rank-identifiable (num_rows, 2) rows: value = 10 * rank + row index."""
    return (10.0 * rank + torch.arange(num_rows, dtype=torch.float64)).unsqueeze(1).repeat(1, 2)


def _check_fixed_size_gathers(rank, world_size):
    assert world_info() == (rank, world_size)
    x = _rows(rank, 3).requires_grad_()
    gathered = all_gather_with_grad(x)  # (6, 2)
    assert torch.equal(gathered.detach(), torch.cat([_rows(0, 3), _rows(1, 3)]))
    # each rank weights the gathered rows differently; rank r's rows must receive the sum over ranks
    weights = [torch.arange(12, dtype=torch.float64).reshape(6, 2) * (r + 1) for r in range(world_size)]
    (gathered * weights[rank]).sum().backward()
    expected = sum(weights)[rank * 3 : (rank + 1) * 3]
    assert torch.equal(x.grad, expected), x.grad

    parts = all_gather_no_grad(x)
    assert len(parts) == world_size and not any(part.requires_grad for part in parts)
    assert torch.equal(parts[1 - rank], _rows(1 - rank, 3))


def _check_variable_rows(rank, world_size):
    for sizes in [(3, 1), (0, 2), (2, 2)]:
        gathered = gather_variable_rows(_rows(rank, sizes[rank]))
        assert torch.equal(gathered, torch.cat([_rows(r, n) for r, n in enumerate(sizes)])), (sizes, gathered)
    labels = gather_variable_rows(torch.arange(rank + 1))  # 1-D integer rows: [0] and [0, 1]
    assert labels.tolist() == [0, 0, 1]


def test_fixed_size_gathers_on_two_ranks():
    run_distributed(_check_fixed_size_gathers)


def test_gather_variable_rows_on_two_ranks():
    run_distributed(_check_variable_rows)


def test_single_process_is_identity():
    x = torch.randn(4, 3, requires_grad=True)
    assert world_info() == (0, 1)
    assert all_gather_with_grad(x) is x
    (parts,) = all_gather_no_grad(x)
    assert torch.equal(parts, x) and not parts.requires_grad
    assert torch.equal(gather_variable_rows(x), x)


def test_gather_variable_rows_rejects_scalars():
    with pytest.raises(ValueError, match="row dimension"):
        gather_variable_rows(torch.tensor(1.0))


def test_scale_grad_is_identity_forward_and_scales_backward():
    x = torch.randn(3, requires_grad=True)
    y = scale_grad(x, 4.0)
    assert torch.equal(y, x)
    y.sum().backward()
    assert torch.equal(x.grad, torch.full((3,), 4.0))
