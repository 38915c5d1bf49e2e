"""The distribution/optimisation configs compose and build what they name."""

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.strategies import DDPStrategy

from clap_train.losses.siglip import SigLipLoss
from clap_train.training.strategy import FSDP2Strategy
from tests.distributed.test_fsdp import ROOT


def load(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=["trainer.accelerator=cpu", *overrides])


@pytest.mark.parametrize(("name", "strategy_type"), [("ddp", DDPStrategy), ("fsdp", FSDP2Strategy)])
def test_trainer_strategies(name, strategy_type):
    cfg = load(f"trainer={name}", "trainer.devices=2", "trainer.num_nodes=1")
    trainer = instantiate(cfg.trainer, logger=False)
    assert isinstance(trainer.strategy, strategy_type)
    assert trainer.num_devices == 2 and trainer.gradient_clip_val is None  # clipping is module.gradient_clip_val
    if name == "fsdp":
        assert trainer.strategy._tensor_parallel_size == 1


def test_siglip_experiment_and_training_knobs():
    cfg = load("+experiment=demo_siglip", "module.contrastive_accumulation=4", "module.tower_lr_scale=0.1")
    assert isinstance(instantiate(cfg.loss), SigLipLoss)
    assert cfg.model.logit_scale_init == 10.0
    assert cfg.callbacks.ema._target_.endswith("EMA")
    assert (cfg.module.contrastive_accumulation, cfg.module.activation_checkpointing, cfg.module.compile) == (4, False,
                                                                                                          False)
    assert cfg.module.tower_lr_scale == 0.1
