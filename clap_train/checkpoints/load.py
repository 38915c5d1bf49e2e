"""`load_model(source)`: a ready `CLAPModel` (eval mode) from any supported checkpoint.

Sources:
- a transformers CLAP directory (config.json + weights; `clap_train.checkpoints.hf`),
- a LAION-CLAP `.pt` (`clap_train.checkpoints.laion`),
- a clap_train Lightning checkpoint (`.ckpt`, carries its resolved config).
Every load is safe (safetensors or `torch.load(weights_only=True)`) and strict: missing or
unexpected keys raise, listing them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

MODEL_PREFIX = "model."  # CLAPModule stores the CLAPModel as `self.model`


def load_state_dict_strict(module: nn.Module, state_dict: dict, source: str) -> None:
    """`load_state_dict(strict=True)` with an error that lists the offending keys and shapes."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise KeyError(
            f"{source}: state dict does not match the model: "
            f"{len(missing)} missing {missing[:10]}{' ...' if len(missing) > 10 else ''}, "
            f"{len(unexpected)} unexpected {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}"
        )
    wrong = [f"{k}: {tuple(state_dict[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if state_dict[k].shape != v.shape]
    if wrong:
        raise KeyError(f"{source}: {len(wrong)} shape mismatches (checkpoint vs model) {wrong[:10]}")
    module.load_state_dict(state_dict, strict=True)


def without_pretrained(config):
    """A copy of a model config with every `pretrained` init path set to None: a checkpoint carries the
    trained weights, and the init files need not exist where it is loaded."""
    if isinstance(config, dict):
        return {k: (None if k == "pretrained" else without_pretrained(v)) for k, v in config.items()}
    if isinstance(config, list):
        return [without_pretrained(v) for v in config]
    return config


def load_clap_train_checkpoint(checkpoint: dict, source: str) -> nn.Module:
    config = checkpoint.get("clap_train_config")
    if not config or "model" not in config:
        raise KeyError(f"{source}: not a clap_train checkpoint (no 'clap_train_config' with a 'model' entry)")
    model = instantiate(OmegaConf.create(without_pretrained(config["model"])))
    state = {k[len(MODEL_PREFIX):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(MODEL_PREFIX)}
    load_state_dict_strict(model, state, source)
    # Inference settings the model config leaves unset default to what the run's data config used.
    data = config.get("data") or {}
    tokenizer = data.get("tokenizer")
    if getattr(model, "tokenizer_path", "unset") is None and isinstance(tokenizer, str) and Path(tokenizer).exists():
        model.tokenizer_path = tokenizer
    if hasattr(model, "clip_samples") and config["model"].get("clip_samples") is None and data.get("clip_samples"):
        model.clip_samples = int(data["clip_samples"])
    return model.eval()


def load_model(source: str | Path) -> nn.Module:
    """Load a CLAP model in eval mode from `source` (see module docstring).

    Raises:
        FileNotFoundError: missing path, or a directory without config.json / weights.
        KeyError: a key or shape mismatch, or a file that is none of the supported kinds.
        ValueError: an architecture clap_train does not implement (e.g. a LAION PANN checkpoint).
    """
    from clap_train.checkpoints.hf import load_hf_directory
    from clap_train.checkpoints.laion import load_laion_checkpoint

    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"load_model: {path} does not exist")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"load_model: directory {path} has no config.json (not a transformers CLAP dir)")
        return load_hf_directory(path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(checkpoint, dict) and "clap_train_config" in checkpoint:
        return load_clap_train_checkpoint(checkpoint, str(path))
    return load_laion_checkpoint(checkpoint, str(path))  # raises KeyError if it is not one either
