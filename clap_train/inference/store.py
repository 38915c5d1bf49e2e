"""The embeddings file `clap_train.embed` writes and `search` / `probe` read: a plain `.npz` (numpy reads it
without clap_train, `np.load(path)`; no pickled objects):

| array | dtype, shape | meaning |
|---|---|---|
| `embeddings` | float32 (N, D) | unit-norm CLAP embeddings, row i belongs to `keys[i]` |
| `keys` | unicode (N,) | relative file paths (folder), manifest keys, shard keys, or the captions (`--text`) |
| `modality` | unicode () | "audio" or "text" |
| `checkpoint` | unicode () | the checkpoint the embeddings come from |
| `failed` | unicode (M,) | inputs that could not be read (skipped) |
| `failed_reasons` | unicode (M,) | why, one line each |
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from clap_train.inference.runner import Embeddings


def check_output(out: str | Path, overwrite: bool, flag: str = "--out") -> Path:
    """The output path, checked before any work is done. Raises ValueError unless it ends with .npz,
    FileExistsError if it exists and `overwrite` is False."""
    path = Path(out)
    if path.suffix != ".npz":
        raise ValueError(f"{flag}: {out} must end with .npz")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{flag}: {out} exists; pass --overwrite to replace it")
    return path


def save_embeddings(out: Path, result: Embeddings, modality: str, checkpoint: str) -> None:
    """Write `result` as the documented .npz, atomically (a temporary file renamed over `out`)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.npz")
    np.savez(tmp, embeddings=result.embeddings.astype(np.float32), keys=np.array(result.keys, dtype=str),
             modality=np.array(modality), checkpoint=np.array(str(checkpoint)),
             failed=np.array([key for key, _ in result.failed], dtype=str),
             failed_reasons=np.array([reason for _, reason in result.failed], dtype=str))
    os.replace(tmp, out)


def load_embeddings(path: str | Path, flag: str = "--index") -> tuple[np.ndarray, list[str]]:
    """(embeddings (N, D) float32, keys) of an embeddings file. Raises FileNotFoundError / ValueError naming
    `flag` for a missing file or one without the two arrays."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{flag}: {path} does not exist")
    with np.load(path, allow_pickle=False) as data:
        if "embeddings" not in data or "keys" not in data:
            raise ValueError(f"{flag}: {path} has no 'embeddings' and 'keys' arrays (write it with clap_train.embed)")
        embeddings, keys = data["embeddings"].astype(np.float32, copy=False), [str(k) for k in data["keys"]]
    if embeddings.ndim != 2 or embeddings.shape[0] != len(keys):
        raise ValueError(f"{flag}: {path}: embeddings {embeddings.shape} do not match {len(keys)} keys")
    return embeddings, keys
