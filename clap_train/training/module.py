"""The thin LightningModule: wires a built model, loss and optimizer partials to Lightning."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import lightning as L
import torch
from torch import nn
from torch.distributed.tensor import DTensor

from clap_train.distributed.parallelize import parallelize, shard_module
from clap_train.evaluation.collect import EmbeddingCollector, NoClipsCollected
from clap_train.evaluation.tasks import SetResult, TextEmbedder, ZeroShotTask, evaluate_set
from clap_train.training.grad_cache import contrastive_accumulation_step, split_batch
from clap_train.training.optim import param_groups, scale_learning_rates
from clap_train.training.step import contrastive_step, loss_inputs

MODEL_INPUT_KEYS = ("waveform", "features", "is_longer", "input_ids", "attention_mask")


class CLAPModule(L.LightningModule):
    """Args:
        model: a `CLAPModel`. loss: a contrastive loss (`clap_train.losses`); None to evaluate only.
        optimizer: partial taking parameter groups (None to evaluate only). scheduler: partial taking
            the optimizer, or None.
        weight_decay: applied to weights only (see `optim.param_groups`).
        tower_lr_scale: lr multiplier of the audio/text towers relative to the new parameters.
        gradient_clip_val: max global gradient norm, or None; applied in both optimization modes (the
            Trainer's own `gradient_clip_val` must stay unset: Lightning refuses it in manual optimization).
        contrastive_accumulation: K; each batch (the per-rank `data.batch_size`, unchanged) is encoded in K
            chunks and trained as one contrastive batch with GradCache (manual optimization): the loss and
            gradients are those of the whole batch, the activation memory that of one chunk. Under FSDP it
            needs a precision without fp16 loss scaling (checked at start-up by `clap_train.train.build`).
        activation_checkpointing, compile: applied per tower block by `parallelize` in `configure_model`;
            `compile` is False, True (inductor) or a torch.compile backend name.
        val_names: names of the validation sets, in dataloader order (metrics `val/<name>/...`).
        zeroshot: zero-shot tasks by set name (`evaluation.zeroshot`); other sets are retrieval only.
        run_config: the resolved run config (a plain dict), stored in every checkpoint as `clap_train_config`.
    Under `FSDP2Strategy` (a device mesh is present) the model is sharded in `configure_model`.
    After each validation, `last_results` holds every set's `SetResult` (metrics and embeddings).

    Raises:
        ValueError: contrastive_accumulation < 1, gradient_clip_val <= 0, or zeroshot naming an unknown set.
    """

    def __init__(self, model: nn.Module, loss: nn.Module | None, optimizer: Callable | None,
                 scheduler: Callable | None = None, weight_decay: float = 0.0, tower_lr_scale: float = 1.0,
                 gradient_clip_val: float | None = None, contrastive_accumulation: int = 1,
                 activation_checkpointing: bool = False, compile: bool | str = False,
                 val_names: list[str] | None = None, zeroshot: dict[str, ZeroShotTask] | None = None,
                 run_config: dict | None = None):
        super().__init__()
        if contrastive_accumulation < 1:
            raise ValueError(f"contrastive_accumulation must be >= 1, got {contrastive_accumulation}")
        if gradient_clip_val is not None and gradient_clip_val <= 0:
            raise ValueError(f"gradient_clip_val must be > 0 or None, got {gradient_clip_val}")
        self.config = run_config  # the resolved run config, stored in every checkpoint
        self.model, self.loss = model, loss
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.weight_decay, self.tower_lr_scale, self.gradient_clip_val = weight_decay, tower_lr_scale, gradient_clip_val
        self.contrastive_accumulation = contrastive_accumulation
        self.automatic_optimization = contrastive_accumulation == 1
        self.activation_checkpointing, self.compile_backend = activation_checkpointing, compile
        self._parallelized = False
        self.val_names = list(val_names or ["val"])
        self.zeroshot = dict(zeroshot or {})
        unknown = sorted(set(self.zeroshot) - set(self.val_names))
        if unknown:
            raise ValueError(f"zeroshot names sets {unknown} that are not validation sets {self.val_names}")
        self.collectors = [EmbeddingCollector() for _ in self.val_names]
        self.val_skipped = [0] * len(self.val_names)  # bad samples each set's loader skipped (this rank)
        self.last_results: dict[str, SetResult] = {}
        self.num_skipped: int | torch.Tensor = 0  # a device tensor once training runs: no host sync per step

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        tokenizer = getattr(datamodule, "tokenizer", None)
        vocab = getattr(self.model.text_encoder, "vocab_size", None)
        if tokenizer is not None and vocab is not None and tokenizer.vocab_size > vocab:
            raise ValueError(f"data.tokenizer {tokenizer.path} has {tokenizer.vocab_size} tokens but "
                             f"model.text_encoder.vocab_size is {vocab}")

    def configure_model(self) -> None:
        # Lightning calls this hook for every fit/validate/test; the model is parallelized once
        if self._parallelized:
            return
        self._parallelized = True
        mesh = self.device_mesh["data_parallel"] if self.device_mesh is not None else None
        parallelize(self.model, mesh, fsdp=mesh is not None,
                    activation_checkpointing=self.activation_checkpointing, compile=self.compile_backend)
        if mesh is not None and self.loss is not None:  # the loss is None when only evaluating
            teacher = getattr(self.loss, "teacher", None)  # distillation: sharded like the student, own root
            if teacher is not None:
                parallelize(teacher.model, mesh, fsdp=True)
            shard_module(getattr(self.loss, "base", self.loss), mesh)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["clap_train_config"] = self.config

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if self.automatic_optimization:
            loss, logs = contrastive_step(self.model, self.loss, batch)
        else:
            loss, logs = self._accumulation_step(batch)
        self.num_skipped = batch["num_skipped"] + self.num_skipped
        batch_size = len(batch["key"])
        self.log("train/loss", logs.pop("loss"), prog_bar=True, batch_size=batch_size)
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, batch_size=batch_size)
        return loss

    def _encode(self, chunk: dict) -> tuple[torch.Tensor, torch.Tensor]:
        embeds = self.model(chunk)
        return embeds["audio_embeds"], embeds["text_embeds"]

    def _accumulation_step(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One optimizer step on K GradCache chunks (manual optimization): backward, clip, step, schedule."""
        optimizer = self.optimizers()
        optimizer.zero_grad()
        inputs = {key: batch[key] for key in MODEL_INPUT_KEYS if key in batch}
        loss = contrastive_accumulation_step(
            self._encode,
            self.loss,
            split_batch(inputs, self.contrastive_accumulation),
            self.model.logit_scale_a,
            self.model.logit_scale_t,
            backward=self.manual_backward,  # AMP loss scaling and the strategy's backward hooks
            no_sync=getattr(self.trainer.strategy, "block_backward_sync", contextlib.nullcontext),
            loss_kwargs=loss_inputs(self.loss, batch),
        )
        self.configure_gradient_clipping(optimizer)
        optimizer.step()
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()
        scales = {name: getattr(self.model, name).detach() for name in ("logit_scale_a", "logit_scale_t")}
        logs = {"loss": loss}  # under FSDP2 the scales are sharded here, after the step: gather them (1 value)
        logs.update({name: (value.full_tensor() if isinstance(value, DTensor) else value).exp().squeeze()
                     for name, value in scales.items()})
        return loss, logs

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        # the module's own value is the one source of truth (the Trainer's is refused in manual optimization)
        if self.gradient_clip_val is not None:
            self.clip_gradients(optimizer, gradient_clip_val=self.gradient_clip_val, gradient_clip_algorithm="norm")

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.model.clamp_logit_scales()

    def on_train_epoch_end(self) -> None:
        skipped = torch.as_tensor(self.num_skipped, dtype=torch.float32, device=self.device)
        skipped = self.trainer.strategy.reduce(skipped, reduce_op="sum")
        self.log("train/skipped_samples", skipped, rank_zero_only=True)
        if self.trainer.is_global_zero:  # one line per epoch, whatever the logger
            print(f"epoch {self.current_epoch}: {int(skipped)} bad training samples skipped so far "
                  f"(all ranks, step {self.global_step})", flush=True)

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        if "num_skipped" in batch:
            self.val_skipped[dataloader_idx] = batch["num_skipped"] + self.val_skipped[dataloader_idx]
        embeds = self.model(batch)
        self.collectors[dataloader_idx].update(embeds["audio_embeds"], batch["key"], embeds["text_embeds"],
                                               batch["text_to_audio"], tags=batch.get("tags"),
                                               captions=batch.get("captions"),
                                               **({"folds": batch["fold"]} if "fold" in batch else {}))

    def on_validation_epoch_end(self) -> None:
        # zero-shot prompts are tokenised like the captions: with the datamodule's tokenizer
        tokenizer = getattr(self.trainer.datamodule, "tokenizer", None)
        text_embedder = TextEmbedder(self.model, tokenizer, self.device) if tokenizer is not None else None
        for index, (name, collector) in enumerate(zip(self.val_names, self.collectors)):
            skipped = torch.as_tensor(self.val_skipped[index], dtype=torch.float32, device=self.device)
            skipped = float(self.trainer.strategy.reduce(skipped, reduce_op="sum"))
            self.val_skipped[index] = 0
            try:
                embeddings = collector.compute()
            except NoClipsCollected as error:  # the same on every rank: compute gathers the keys first
                raise ValueError(f"data.val_shards.{name}: no clip of this validation set reached the model "
                                 "(its shards hold no readable sample)") from error
            collector.reset()
            result = evaluate_set(name, embeddings, self.zeroshot.get(name), text_embedder)
            result.metrics["skipped_samples"] = skipped
            self.last_results[name] = result
            # identical on every rank after the gather: no further sync needed
            self.log_dict({f"val/{name}/{k}": v for k, v in result.metrics.items()}, sync_dist=False)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(param_groups(self, self.weight_decay, self.tower_lr_scale))
        scale_learning_rates(optimizer)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
