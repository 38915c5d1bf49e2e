"""Training entry (`python -m clap_train`, see `__main__`): build everything from the config, fit, evaluate,
summarise. With `evaluate.py` and `export.py` one of the entry modules, the only places that call Hydra's
`instantiate`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from clap_train.checkpoints.build import check_model_config, stored_model_config
from clap_train.checkpoints.load import load_model
from clap_train.checkpoints.pretrained import init_towers
from clap_train.checkpoints.state_dict import read_checkpoint_file
from clap_train.evaluation.tasks import metric_keys, zeroshot_tasks
from clap_train.init_from import apply_init_from, load_init_weights
from clap_train.training.checkpointing import AtomicCheckpointIO, RunMetadata
from clap_train.training.cpu_threads import configure_cpu_threads
from clap_train.training.distill import check_distill_config, with_distillation
from clap_train.training.resume import checkpoint_step, resolve_resume_checkpoint, wandb_resume_overrides
from clap_train.training.strategy import FSDP2Strategy

log = logging.getLogger(__name__)
SUMMARY_METRICS = {
    "retrieval": ("t2a_R@1", "t2a_R@5", "t2a_R@10", "a2t_R@1", "a2t_R@5", "a2t_R@10"),
    "zero-shot": ("top1_acc", "top5_acc", "mAP"),
}


def build(cfg: DictConfig):
    """Instantiate datamodule, LightningModule and Trainer from the config: the one place a training
    config becomes objects. Start-up checks run here, before any data is read or weight is trained."""
    datamodule = instantiate(cfg.data)
    zeroshot = zeroshot_tasks(cfg.evaluation.zeroshot, datamodule.val_names)
    check_best_metric(cfg.best_metric, datamodule.val_names, metric_keys(datamodule.val_names, zeroshot))
    model = instantiate(cfg.model)
    datamodule.check_model(getattr(model.audio_encoder, "enable_fusion", False), model.frontend.config())
    init = cfg.get("init") or {}
    init_towers(model, audio_encoder=init.get("audio_encoder"), text_encoder=init.get("text_encoder"))
    # a partial of the module config, completed with the built objects (passed through instantiate, Hydra
    # would recurse into the run config's own `_target_`s)
    loss = instantiate(cfg.loss)
    distill = cfg.get("distill")
    if distill:  # +distill.teacher=SOURCE: the configured loss plus a KL term to a frozen teacher
        check_distill_config(distill)
        loss = with_distillation(loss, load_model(str(distill.teacher)), float(distill.get("weight", 1.0)),
                                 cfg.model.frontend.sample_rate, cfg.data.get("tokenizer"))
    module = instantiate(cfg.module, _partial_=True)(model=model, loss=loss,
                                                     val_names=datamodule.val_names, zeroshot=zeroshot,
                                                     run_config=OmegaConf.to_container(cfg, resolve=True))
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None] + [RunMetadata()]
    logger = instantiate(cfg.logger, **wandb_resume_overrides(cfg)) if cfg.get("logger") else False
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger, plugins=[AtomicCheckpointIO()])
    check_accumulation(module.contrastive_accumulation, trainer)
    for run_logger in trainer.loggers:
        run_logger.log_hyperparams(module.config)
    return datamodule, module, trainer


def cpu_processes(trainer_cfg: DictConfig) -> int | None:
    """Training processes per machine when the run is on the CPU (`trainer.devices` ranks), else None."""
    import torch

    accelerator = trainer_cfg.get("accelerator", "auto")
    if accelerator not in ("cpu", "auto") or (accelerator == "auto" and torch.cuda.is_available()):
        return None
    devices = trainer_cfg.get("devices", 1)
    return devices if isinstance(devices, int) and devices > 0 else 1


def check_accumulation(contrastive_accumulation: int, trainer: L.Trainer) -> None:
    """GradCache under FSDP needs a precision without fp16 loss scaling: its sharded loss step
    (`grad_cache._sharded_loss_backward`) writes unscaled gradients. Raises ValueError naming both keys."""
    if (contrastive_accumulation > 1 and isinstance(trainer.strategy, FSDP2Strategy)
            and getattr(trainer.precision_plugin, "scaler", None) is not None):
        raise ValueError("module.contrastive_accumulation > 1 under FSDP needs a precision without fp16 loss "
                         f"scaling (bf16-mixed, bf16-true or 32-true), got trainer.precision={trainer.precision}")


def check_resume_checkpoint(path: Path) -> None:
    """Refuse, in one line naming the file, a checkpoint to resume from that torch cannot read safely or
    whose stored model config is not one clap_train builds (`checkpoints.build`): the same allow-list as
    `load_model`, for `resume=PATH`, `resume=wandb://...` downloads and the run directory's own files.
    A sharded (DCP) checkpoint directory is checked through its `meta.pt`."""
    path = Path(path)
    checkpoint = read_checkpoint_file(path / "meta.pt" if path.is_dir() else path)
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path}: not a Lightning checkpoint (a {type(checkpoint).__name__}, not a dict)")  # noqa: TRY004
    if checkpoint.get("clap_train_config") is not None:
        check_model_config(stored_model_config(checkpoint, str(path)), str(path))


def check_best_metric(best_metric: DictConfig, val_names: list[str], keys: list[str]) -> None:
    """Raise ValueError naming the best_metric field unless validation logs that metric."""
    if best_metric.mode not in ("min", "max"):
        raise ValueError(f"best_metric.mode must be 'min' or 'max', got {best_metric.mode!r}")
    if not val_names:
        return
    if best_metric.val_set is not None and best_metric.val_set not in val_names:
        raise ValueError(f"best_metric.val_set {best_metric.val_set!r} is not a validation set; the sets are {val_names}")
    monitor = f"val/{best_metric.val_set or val_names[0]}/{best_metric.metric}"
    if monitor not in keys:
        raise ValueError(f"best_metric.metric: {monitor!r} is not logged by validation; choose one of {keys}")


def format_summary(before: dict | None, after: dict, val_names: list[str]) -> str:
    lines = []
    for name in val_names:
        num_clips = int(after.get(f"val/{name}/num_clips", 0))
        for task, metrics in SUMMARY_METRICS.items():
            keys = [(metric, f"val/{name}/{metric}") for metric in metrics if f"val/{name}/{metric}" in after]
            if not keys:
                continue
            lines.append(f"{task} on '{name}' ({num_clips} held-out clips)")
            lines.append(f"  {'metric':<10} {'chance':>8} {'before':>8} {'after':>8}")
            num_classes = after.get(f"val/{name}/num_classes")  # single-label zero-shot only
            for metric, key in keys:
                # R@k by chance is k of the clips, top-k accuracy k of the classes; mAP's depends on the labels
                chance = "-"
                if "@" in metric:
                    chance = f"{min(1.0, int(metric.split('@')[1]) / max(num_clips, 1)):.3f}"
                elif metric.startswith("top") and num_classes:
                    chance = f"{min(1.0, int(metric[3:].split('_')[0]) / num_classes):.3f}"
                b = f"{before[key]:.3f}" if before and key in before else "-"
                lines.append(f"  {metric:<10} {chance:>8} {b:>8} {after[key]:>8.3f}")
        skipped = int(after.get(f"val/{name}/skipped_samples", 0))
        if skipped:
            lines.append(f"  {skipped} bad samples of '{name}' skipped")
    return "\n".join(lines)


def train(cfg: DictConfig) -> dict:
    """Fit the configured model, resuming from the run directory's newest checkpoint (`training/resume.py`).

    Returns {'before': metrics or None, 'after': metrics or None (no validation set), 'global_step'}; also
    written to `<run_dir>/summary.json`.
    """
    processes = cpu_processes(cfg.trainer)
    if processes is not None:
        configure_cpu_threads(cfg.get("cpu_threads"), cfg.data.get("num_workers", 0), processes)
    L.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    init_state = apply_init_from(cfg)  # model.init_from=SOURCE: SOURCE's architecture, preprocessing, weights
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    datamodule, module, trainer = build(cfg)
    if init_state is not None:
        load_init_weights(module.model, init_state, cfg.init_from.source)
    ckpt_path = resolve_resume_checkpoint(cfg, run_dir)
    validates = bool(datamodule.val_names)  # data.val_shards may be empty: train and checkpoint, no metrics
    if ckpt_path is not None:
        check_resume_checkpoint(ckpt_path)
    before = None
    if ckpt_path is not None:
        # the datamodule positions its stream from the restored global step: the epoch continues, no replay
        log.info("resuming from %s (global step %d)", ckpt_path, checkpoint_step(ckpt_path))
    else:
        log.info("starting fresh at step 0: no checkpoint in %s and no resume= given", run_dir)
    if ckpt_path is None and cfg.eval_before_training and validates:
        before = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    after = trainer.validate(module, datamodule=datamodule, verbose=False)[0] if validates else None
    summary = {"before": before, "after": after, "global_step": trainer.global_step}
    if trainer.is_global_zero:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        metrics = (format_summary(before, after, datamodule.val_names) if validates else
                   "no validation set (data.val_shards is empty): no metrics")
        print(f"\n{metrics}\ntrained {trainer.global_step} steps; run directory: {run_dir}\n", flush=True)
    return summary
