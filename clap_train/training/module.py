"""The thin LightningModule: wires a built model, loss and optimizer partials to Lightning."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch import nn

from clap_train.evaluation.collect import EmbeddingCollector
from clap_train.evaluation.retrieval import retrieval_metrics
from clap_train.training.optim import param_groups
from clap_train.training.step import contrastive_step


class CLAPModule(L.LightningModule):
    """Args:
        model: a `CLAPModel`. loss: a contrastive loss (`clap_train.losses`).
        optimizer: partial taking parameter groups. scheduler: partial taking the optimizer, or None.
        weight_decay: applied to weights only (see `optim.param_groups`).
        val_names: names of the validation sets, in dataloader order (metrics `val/<name>/...`).
    """

    def __init__(self, model: nn.Module, loss: nn.Module, optimizer: Callable, scheduler: Callable | None = None,
                 weight_decay: float = 0.0, val_names: list[str] | None = None, config: dict | None = None):
        super().__init__()
        self.config = config  # the resolved run config, stored in every checkpoint
        self.model, self.loss = model, loss
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.weight_decay = weight_decay
        self.val_names = list(val_names or ["val"])
        self.collectors = [EmbeddingCollector() for _ in self.val_names]
        self.num_skipped = 0

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        tokenizer = getattr(datamodule, "tokenizer", None)
        vocab = getattr(self.model.text_encoder, "vocab_size", None)
        if tokenizer is not None and vocab is not None and tokenizer.vocab_size > vocab:
            raise ValueError(f"data.tokenizer {tokenizer.path} has {tokenizer.vocab_size} tokens but "
                             f"model.text_encoder.vocab_size is {vocab}")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["clap_train_config"] = self.config

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, logs = contrastive_step(self.model, self.loss, batch)
        self.num_skipped += int(batch["num_skipped"])
        batch_size = len(batch["key"])
        self.log("train/loss", logs.pop("loss"), prog_bar=True, batch_size=batch_size)
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, batch_size=batch_size)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.model.clamp_logit_scales()

    def on_train_epoch_end(self) -> None:
        skipped = self.trainer.strategy.reduce(torch.tensor(float(self.num_skipped)), reduce_op="sum")
        self.log("train/skipped_samples", skipped, rank_zero_only=True)
        if self.trainer.is_global_zero:  # one line per epoch, whatever the logger
            print(f"epoch {self.current_epoch}: {int(skipped)} bad training samples skipped so far "
                  f"(all ranks, step {self.global_step})", flush=True)

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        embeds = self.model(batch)
        self.collectors[dataloader_idx].update(embeds["audio_embeds"], batch["key"], embeds["text_embeds"],
                                               batch["text_to_audio"])

    def on_validation_epoch_end(self) -> None:
        for name, collector in zip(self.val_names, self.collectors):
            embeddings = collector.compute()
            collector.reset()
            metrics = retrieval_metrics(embeddings.audio_embeds, embeddings.text_embeds, embeddings.text_to_audio)
            metrics["num_clips"] = float(len(embeddings.keys))
            # identical on every rank after the gather: no further sync needed
            self.log_dict({f"val/{name}/{k}": v for k, v in metrics.items()}, sync_dist=False)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(param_groups(self, self.weight_decay))
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
