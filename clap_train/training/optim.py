"""Optimizer parameter groups and the warmup + cosine schedule."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn


def is_no_decay(name: str, param: nn.Parameter) -> bool:
    """Biases, norm weights, embeddings and logit scales get no weight decay."""
    return param.ndim < 2 or "embeddings" in name or "logit_scale" in name or "norm" in name.lower()


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, param in module.named_parameters():
        if param.requires_grad:
            (no_decay if is_no_decay(name, param) else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> Callable[[int], float]:
    """LR multiplier: linear 0 -> 1 over `warmup_steps`, then cosine down to `min_lr_ratio` at `total_steps`."""
    if warmup_steps < 0 or total_steps < 1:
        raise ValueError(f"need warmup_steps >= 0 and total_steps >= 1, got {warmup_steps}, {total_steps}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


class WarmupCosineLR(torch.optim.lr_scheduler.LambdaLR):
    def __init__(self, optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0):
        super().__init__(optimizer, warmup_cosine(warmup_steps, total_steps, min_lr_ratio))
