"""Train the tiny CLAP on 2 CPU ranks with DDP or FSDP2 and record full parameters after every step.

Run as a script (Lightning relaunches it once per rank):
    python tests/distributed/_train_script.py {ddp,fsdp} MAX_STEPS OUT.pt [--ckpt-dir D] [--resume CKPT] [--ema]
        [--unfreeze-step N] [--accumulation K]
Rank 0 writes OUT.pt: {"params": {step: {name: tensor}}, "losses": {step: float}, "global_step": int,
"ema": {step: {name: tensor}}} (the EMA callback's average, full, with --ema).
Each rank trains on its own 2 fixed batches of 4 rows, the same every epoch, so a resumed run sees the
batches an uninterrupted run would.
"""

from __future__ import annotations

import argparse

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy
from torch.distributed.tensor import DTensor

from clap_train.losses.siglip import SigLipLoss
from clap_train.training.callbacks import EMA, FreezeTowers
from clap_train.training.strategy import FSDP2Strategy
from tests.training._tiny import make_loader, make_module

WORLD_SIZE, NUM_BATCHES, BATCH_SIZE = 2, 2, 4


def full_parameters(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter as a full plain tensor (a collective under FSDP: every rank must call it)."""
    return {
        name: (param.full_tensor() if isinstance(param, DTensor) else param).detach().clone()
        for name, param in module.named_parameters()
    }


class Recorder(Callback):
    def __init__(self, out: str, ema: EMA | None = None):
        self.out, self.params, self.losses, self.ema, self.averages = out, {}, {}, ema, {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.params[trainer.global_step] = full_parameters(pl_module)
        self.losses[trainer.global_step] = float(trainer.strategy.reduce(outputs["loss"].detach(), reduce_op="mean"))
        if self.ema is not None:  # the EMA callback runs before this one
            self.averages[trainer.global_step] = self.ema.state_dict()["shadow"]

    def on_train_end(self, trainer, pl_module):
        if trainer.is_global_zero:
            torch.save({"params": self.params, "losses": self.losses, "global_step": trainer.global_step,
                        "ema": self.averages}, self.out)


class Data(L.LightningDataModule):
    def train_dataloader(self):
        return make_loader(NUM_BATCHES, BATCH_SIZE, seed=self.trainer.global_rank + 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("strategy", choices=["ddp", "fsdp"])
    parser.add_argument("max_steps", type=int)
    parser.add_argument("out")
    parser.add_argument("--ckpt-dir")
    parser.add_argument("--resume")
    parser.add_argument("--ema", action="store_true")
    parser.add_argument("--unfreeze-step", type=int, help="FreezeTowers until this step")
    parser.add_argument("--accumulation", type=int, default=1, help="module.contrastive_accumulation (K)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    L.seed_everything(0)
    module = make_module(loss=SigLipLoss(bias_init=-2.0), gradient_clip_val=0.5,
                         contrastive_accumulation=args.accumulation)
    strategy = FSDP2Strategy() if args.strategy == "fsdp" else DDPStrategy(find_unused_parameters=True)
    ema = EMA(decay=0.5) if args.ema else None
    callbacks = [ema, Recorder(args.out, ema)] if ema else [Recorder(args.out)]
    if args.unfreeze_step is not None:
        callbacks.append(FreezeTowers(args.unfreeze_step))
    if args.ckpt_dir:
        callbacks.append(ModelCheckpoint(dirpath=args.ckpt_dir, filename="{step}", every_n_train_steps=1,
                                         save_top_k=-1, save_last=True))
    trainer = L.Trainer(accelerator="cpu", devices=WORLD_SIZE, strategy=strategy, max_steps=args.max_steps,
                        logger=False, enable_checkpointing=bool(args.ckpt_dir), enable_progress_bar=False,
                        enable_model_summary=False, use_distributed_sampler=False, callbacks=callbacks)
    trainer.fit(module, datamodule=Data(), ckpt_path=args.resume)


if __name__ == "__main__":
    main()
