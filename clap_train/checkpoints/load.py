"""`load_model(source)`: a ready `CLAPModel` from a checkpoint path.

Sources: a clap_train Lightning checkpoint (`.ckpt`, carries its resolved config). Every load is
safe (`weights_only=True`) and strict: missing or unexpected keys raise, listing them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

MODEL_PREFIX = "model."  # CLAPModule stores the CLAPModel as `self.model`


def load_state_dict_strict(module: nn.Module, state_dict: dict, source: str) -> None:
    """`load_state_dict(strict=True)` with an error that lists the offending keys."""
    expected = set(module.state_dict())
    missing = sorted(expected - set(state_dict))
    unexpected = sorted(set(state_dict) - expected)
    if missing or unexpected:
        raise KeyError(
            f"{source}: state dict does not match the model: "
            f"{len(missing)} missing {missing[:10]}{' ...' if len(missing) > 10 else ''}, "
            f"{len(unexpected)} unexpected {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}"
        )
    module.load_state_dict(state_dict, strict=True)


def load_clap_train_checkpoint(path: Path) -> nn.Module:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    config = checkpoint.get("clap_train_config")
    if not config or "model" not in config:
        raise KeyError(f"{path}: not a clap_train checkpoint (no 'clap_train_config' with a 'model' entry)")
    model = instantiate(OmegaConf.create(config["model"]))
    state = {k[len(MODEL_PREFIX):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(MODEL_PREFIX)}
    load_state_dict_strict(model, state, str(path))
    return model.eval()


def load_model(source: str | Path) -> nn.Module:
    """Load a CLAP model in eval mode from `source` (see module docstring).

    Raises FileNotFoundError for a missing path, KeyError for a key mismatch.
    """
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"load_model: {path} does not exist")
    return load_clap_train_checkpoint(path)
