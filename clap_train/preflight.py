"""Start-up checks of a composed training or evaluation config that need neither torch nor Lightning.

`python -m clap_train` composes the config and runs `check_config` before it imports the heavy
libraries (tens of seconds on a busy machine), so a typo in an override, a missing shard or
tokenizer, or a `resume=` checkpoint that does not exist is reported within a few seconds, in one
line naming the config key; `clap_train.evaluate` runs `check_evaluate_inputs` the same way. The constructors still validate their own arguments; these checks only
move the path and schedule checks ahead of the imports. `bench/startup.py` measures the times.
"""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from clap_train.data.shard_format import expand_shards  # stdlib only: no torch

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def compose_config(config_name: str, overrides: list[str]) -> DictConfig:
    """conf/<config_name>.yaml with `overrides`, as the entry point composes it (without the hydra node).

    Raises:
        hydra.errors.ConfigCompositionException (and its MissingConfigException) for a bad override.
    """
    # why: importing it registers `open_sets` before composing
    import clap_train.config_sets  # noqa: F401

    with initialize_config_dir(str(CONF_DIR), version_base="1.3", job_name=config_name):
        return compose(config_name, overrides=overrides)


def compose_train_config(overrides: list[str]) -> DictConfig:
    """conf/train.yaml with `overrides`, as `python -m clap_train` composes it."""
    return compose_config("train", overrides)


def check_paths(cfg: DictConfig) -> None:
    """Every input path the config names exists: shards, tokenizer (unless `data.prepare` builds them), the
    `resume=` checkpoint, the towers' `init` files.

    Raises:
        FileNotFoundError naming the config key and the path.
    """
    resume = cfg.get("resume")
    if resume and not str(resume).startswith("wandb://") and not Path(resume).exists():
        raise FileNotFoundError(f"resume: checkpoint {resume} does not exist")
    for tower in ("audio_encoder", "text_encoder"):
        path = OmegaConf.select(cfg, f"init.{tower}", default=None)
        if path and not Path(path).exists():
            raise FileNotFoundError(f"init.{tower}: {path} does not exist")
    data = cfg.data
    if data.get("prepare") is None:  # the demo's data are generated at start
        train_shards = data.train_shards
        for index, pattern in enumerate([train_shards] if isinstance(train_shards, str) else train_shards):
            expand_shards(pattern, "data.train_shards" + (f"[{index}]" if not isinstance(train_shards, str) else ""))
        for name, pattern in (data.get("val_shards") or {}).items():
            expand_shards(pattern, f"data.val_shards.{name}")
        if not Path(data.tokenizer).exists():
            raise FileNotFoundError(f"data.tokenizer: {data.tokenizer} does not exist")


def check_schedule(cfg: DictConfig) -> None:
    """A run trains at least one step, and the warmup + cosine schedule needs a length: its
    `total_steps` is `trainer.max_steps` (-1, Lightning's "no step limit", leaves it undefined).

    Raises:
        ValueError naming `trainer.max_steps` or `module.scheduler.warmup_steps`.
    """
    max_steps = cfg.trainer.get("max_steps")
    scheduler = cfg.module.get("scheduler")
    if max_steps == 0 or (max_steps is not None and max_steps < -1):
        raise ValueError(f"trainer.max_steps must be >= 1 (optimizer steps), got {max_steps}")
    if scheduler is not None:
        total = scheduler.get("total_steps")
        if total is None or total < 1:
            raise ValueError(f"module.scheduler.total_steps (default: trainer.max_steps) must be >= 1 for the "
                             f"warmup + cosine schedule, got {total}; set trainer.max_steps or module.scheduler=null")
        if scheduler.get("warmup_steps", 0) < 0:
            raise ValueError(f"module.scheduler.warmup_steps must be >= 0, got {scheduler.warmup_steps}")


def check_sets(cfg: DictConfig) -> None:
    """Zero-shot sets and `best_metric.val_set` name validation sets (`data.val_shards`).

    Raises:
        ValueError naming `evaluation.zeroshot.<name>` or `best_metric.val_set`.
    """
    val_names = list(cfg.data.get("val_shards") or {})
    for name in cfg.get("evaluation", {}).get("zeroshot") or {}:
        if name not in val_names:
            raise ValueError(f"evaluation.zeroshot.{name}: no validation set named {name!r} in data.val_shards "
                             f"(the sets are {val_names})")
    val_set = cfg.best_metric.get("val_set")
    if val_names and val_set is not None and val_set not in val_names:
        raise ValueError(f"best_metric.val_set {val_set!r} is not a validation set; the sets are {val_names}")


def check_config(cfg: DictConfig) -> None:
    """All checks above; resolves the interpolations they read."""
    check_schedule(cfg)
    check_sets(cfg)
    check_paths(cfg)


def check_evaluate_inputs(cfg: DictConfig) -> None:
    """conf/evaluate.yaml's inputs: a checkpoint that exists (or an untrained `model=PRESET`), the sets' shards,
    a given tokenizer.

    Raises:
        ValueError naming `checkpoint` when neither is given; FileNotFoundError naming the key and the path.
    """
    checkpoint = cfg.get("checkpoint")
    if checkpoint is None and cfg.get("model") is None:
        raise ValueError("checkpoint: give checkpoint=PATH, or model=PRESET (e.g. model=debug) to evaluate "
                         "an untrained model")
    if checkpoint is not None and not Path(checkpoint).exists():
        raise FileNotFoundError(f"checkpoint: {checkpoint} does not exist")
    for name, pattern in (cfg.data.get("val_shards") or {}).items():
        expand_shards(pattern, f"data.val_shards.{name}")
    tokenizer = cfg.data.get("tokenizer")
    if tokenizer is not None and not Path(tokenizer).exists():
        raise FileNotFoundError(f"data.tokenizer: {tokenizer} does not exist")
