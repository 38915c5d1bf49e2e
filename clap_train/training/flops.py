"""Model FLOPs of a training sample and the GPUs' dense bf16 peaks: the two halves of MFU.

Kept apart from the callbacks so that benchmarks (bench/gpu_check.py) can count FLOPs without importing
Lightning.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# Dense bf16/fp16 tensor-core peaks (FLOP/s) by a substring of `torch.cuda.get_device_name()`, most specific first.
PEAK_FLOPS = (
    ("GH200", 989.4e12),
    ("H100 PCIe", 756.0e12),
    ("H100 NVL", 835.0e12),
    ("H100", 989.4e12),
    ("H200", 989.4e12),
    ("B200", 2250.0e12),
    ("A100", 312.0e12),
    ("L40S", 362.0e12),
    ("L4", 121.0e12),
    ("A10", 125.0e12),
    ("V100", 125.0e12),
    ("RTX 4090", 165.2e12),
)


def peak_flops(device_name: str) -> float | None:
    """Dense bf16 peak FLOP/s of a GPU by name (`PEAK_FLOPS`), None when unknown."""
    for key, flops in PEAK_FLOPS:
        if key in device_name:
            return flops
    return None


def train_flops_per_sample(model: nn.Module, batch: dict) -> float:
    """Model FLOPs of one training sample: 3 x the forward FLOPs (backward ~ 2 x forward) counted by
    `FlopCounterMode` on `model(batch)` without a graph. Recomputation by activation checkpointing is not
    counted (MFU counts model FLOPs). The RNG is restored, so the training run draws the same dropout masks.
    """
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices), torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(batch)
    return 3.0 * counter.get_total_flops() / len(batch["input_ids"])
