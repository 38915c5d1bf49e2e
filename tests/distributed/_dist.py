"""Run a function on 2 CPU gloo ranks with `torch.multiprocessing.spawn`.

The function must live at module level (spawned children import it by name) and take
`(rank, world_size, *args)`. An assertion failing in any rank fails the calling test with that
rank's traceback.
"""

from __future__ import annotations

import gc
import os
import socket
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, fn: Callable, world_size: int, port: int, args: tuple) -> None:
    os.environ.update(
        {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank), "WORLD_SIZE": str(world_size)}
    )
    torch.set_num_threads(1)  # 2 ranks on a shared 2-core box
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        fn(rank, world_size, *args)
        dist.barrier()
    finally:
        # DDP reducers sit in reference cycles: free them while the process group still exists,
        # or their destructor aborts the process at exit ("terminate called without an active exception")
        gc.collect()
        dist.destroy_process_group()


def run_distributed(fn: Callable, *args, world_size: int = 2) -> None:
    """Call `fn(rank, world_size, *args)` in `world_size` spawned gloo processes and wait for them."""
    mp.spawn(_worker, args=(fn, world_size, _free_port(), args), nprocs=world_size, join=True)


def average_gradients(module: torch.nn.Module) -> None:
    """All-reduce every parameter gradient and divide by world size, as DDP does (None counts as 0)."""
    world_size = dist.get_world_size()
    for param in module.parameters():
        if param.grad is None:
            param.grad = torch.zeros_like(param)
        dist.all_reduce(param.grad)
        param.grad /= world_size
