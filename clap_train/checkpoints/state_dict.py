"""Reading weight files safely and loading them strictly: the helpers every checkpoint format shares."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format since 1.6
PICKLE_PROTOCOL = b"\x80"  # legacy torch.save files start with a pickle protocol opcode


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


def read_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    """Weights of a transformers directory: model.safetensors, its sharded index, or pytorch_model.bin
    (torch.load with weights_only=True). Raises FileNotFoundError when none is there."""
    if (directory / "model.safetensors").is_file():
        return load_file(directory / "model.safetensors")
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        state = {}
        for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
            state.update(load_file(directory / shard))
        return state
    if (directory / "pytorch_model.bin").is_file():
        return torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{directory}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def read_checkpoint_file(path: str | Path, mmap: bool = True):
    """`torch.load(path, weights_only=True)` on the CPU, memory-mapped for zip-format files (torch >= 1.6),
    with a one-line error naming the file and what it is not.

    Raises:
        ValueError: an empty file, one that is neither a zip archive nor a pickle (random bytes, a text
            file), a truncated or corrupt archive, or pickled objects that `weights_only` refuses.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: an empty file (0 bytes), not a checkpoint")
    is_zip = zipfile.is_zipfile(path)
    if not is_zip:
        with open(path, "rb") as file:
            head = file.read(4)
        if head.startswith(ZIP_MAGIC):
            raise ValueError(f"{path}: a truncated or corrupt zip archive, not a readable torch checkpoint")
        if not head.startswith(PICKLE_PROTOCOL):
            raise ValueError(f"{path}: not a torch checkpoint (neither a torch.save zip archive nor a pickle)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and is_zip)
    except pickle.UnpicklingError as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise ValueError(f"{path}: holds pickled objects that torch.load(weights_only=True) refuses (only "
                             "tensors and plain containers are read): re-save its state_dict on a trusted machine"
                             ) from None
        raise ValueError(f"{path}: not a readable torch checkpoint ({first})") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ValueError(f"{path}: a truncated or corrupt torch checkpoint ({type(exc).__name__}: {first})") from None
