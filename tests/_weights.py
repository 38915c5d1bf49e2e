"""Random weights for parity tests: transformers' init zeroes the bias tables and leaves BatchNorm at identity,
which would hide key-mapping mistakes."""

import torch


@torch.no_grad()
def randomise_(model: torch.nn.Module) -> torch.nn.Module:
    """Every parameter and BatchNorm statistic random (norm weights near 1, logit scales in [2, 4])."""
    for name, param in model.named_parameters():
        if name.startswith("logit_scale"):
            param.uniform_(2.0, 4.0)
        elif "norm" in name.lower() and name.endswith("weight"):
            param.uniform_(0.5, 1.5)
        else:
            param.normal_(0.0, 0.05 if param.dim() > 1 else 0.2)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0.0, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model
