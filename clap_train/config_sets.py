"""What conf/train.yaml and conf/evaluate.yaml need registered before Hydra composes them.

The `open_sets` node opens the named-set dicts, so `data.val_shards.NAME=...` and `evaluation.zeroshot.NAME=...`
add a set without Hydra's `+` prefix, in training and in evaluation alike (both forms work).

Registered in Hydra's ConfigStore as `open_sets` on import; `conf/train.yaml` and `conf/evaluate.yaml` list it
first in their defaults. YAML cannot clear OmegaConf's struct flag, hence this node. The `checkpoint_dir`
resolver gives conf/evaluate.yaml's default `out_dir`. Imports only OmegaConf/Hydra.
"""

from __future__ import annotations

import os
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

OPEN_SETS = OmegaConf.create({"data": {"val_shards": {}}, "evaluation": {"zeroshot": {}}})
OmegaConf.set_struct(OPEN_SETS.data.val_shards, False)
OmegaConf.set_struct(OPEN_SETS.evaluation.zeroshot, False)
ConfigStore.instance().store(name="open_sets", node=OPEN_SETS)


def checkpoint_dir(checkpoint: str | None) -> str:
    """The folder of a checkpoint file, or the checkpoint itself when it is a folder (transformers);
    `<CLAP_RUNS_DIR or runs>/untrained` for an untrained preset (no checkpoint)."""
    if checkpoint is None:
        return str(Path(os.environ.get("CLAP_RUNS_DIR", "runs")) / "untrained")
    path = Path(checkpoint)
    return str(path if path.is_dir() else path.parent)


OmegaConf.register_new_resolver("checkpoint_dir", checkpoint_dir, replace=True)
