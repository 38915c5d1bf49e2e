"""Config node that opens the named-set dicts, so `data.val_shards.NAME=...` and `evaluation.zeroshot.NAME=...`
add a set without Hydra's `+` prefix, in training and in evaluation alike (both forms work).

Registered in Hydra's ConfigStore as `open_sets` on import; `conf/train.yaml` and `conf/evaluate.yaml` list it
first in their defaults. YAML cannot clear OmegaConf's struct flag, hence this node. Imports only OmegaConf/Hydra.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

OPEN_SETS = OmegaConf.create({"data": {"val_shards": {}}, "evaluation": {"zeroshot": {}}})
OmegaConf.set_struct(OPEN_SETS.data.val_shards, False)
OmegaConf.set_struct(OPEN_SETS.evaluation.zeroshot, False)
ConfigStore.instance().store(name="open_sets", node=OPEN_SETS)
