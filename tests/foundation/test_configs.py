"""Every YAML under conf/ composes into the primary config and its node instantiates."""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from clap_train.training.module import CLAPModule

CONF = Path(__file__).resolve().parents[2] / "conf"
GROUP_FILES = sorted(p.relative_to(CONF) for p in CONF.glob("*/*.yaml"))


def _compose(overrides):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("train", overrides=overrides)


def _fill_missing(node):
    """Placeholders for `???` fields (paths a user must set) so the node can be built."""
    for key in OmegaConf.missing_keys(node):
        OmegaConf.update(node, key, "/placeholder", force_add=True)
    return node


def test_primary_config_has_no_experiment_default():
    cfg = _compose([])
    assert "experiment" not in cfg and cfg.run_name == "demo"


@pytest.mark.parametrize("rel", GROUP_FILES, ids=str)
def test_config_file_composes_and_instantiates(rel, tmp_path):
    group, name = rel.parent.name, rel.stem
    override = f"+experiment={name}" if group == "experiment" else f"{group}={name}"
    cfg = _fill_missing(_compose([override, f"run_dir={tmp_path}"]))
    OmegaConf.resolve(cfg)
    if group == "experiment":
        nodes = {"model": cfg.model, "data": cfg.data, "loss": cfg.loss}
    elif group in ("callbacks",):
        nodes = dict(cfg.callbacks)
    else:
        nodes = {group: cfg[group]}
    if group == "module":  # the build passes the built model and loss (clap_train.train.build)
        module = instantiate(cfg.module, _partial_=True)(model=instantiate(cfg.model), loss=instantiate(cfg.loss))
        assert isinstance(module, CLAPModule)
        optimizer = module.optimizer_factory([torch.nn.Parameter(torch.zeros(2))])
        assert isinstance(optimizer, torch.optim.AdamW) and module.scheduler_factory(optimizer) is not None
        return
    built = {k: instantiate(v) for k, v in nodes.items() if v is not None}
    assert built and all(obj is not None for obj in built.values())
