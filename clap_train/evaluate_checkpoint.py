"""Standalone evaluation of any checkpoint `clap_train.load_model` reads: the work behind
`python -m clap_train.evaluate` (whose command line, in `clap_train/evaluate.py`, checks the inputs first).

`evaluate(cfg)` runs the validation path of training (the eval data pipeline of `CLAPDataModule` and
`CLAPModule.validation_step` / `on_validation_epoch_end` under a Lightning Trainer, CPU or GPU), so
its metrics equal those logged as `val/<set>/...` during training for the same checkpoint and data.
Prints a table and writes `metrics.json`, `report.html` (+ `clips/`) and `config.yaml` into
`out_dir` (default `<checkpoint dir>/eval`). Config: conf/evaluate.yaml; docs/evaluation.md.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import webdataset as wds
from hydra.utils import instantiate
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

import clap_train.config_sets  # noqa: F401  (registers `open_sets` and `checkpoint_dir`, used by conf/evaluate.yaml)
from clap_train.checkpoints.build import check_plain
from clap_train.checkpoints.load import load_model
from clap_train.checkpoints.state_dict import read_checkpoint_file
from clap_train.data.datamodule import CLAPDataModule
from clap_train.data.stages import ChooseCaption, FusionFeatures, sample_stages
from clap_train.evaluation.report import sample_text_queries, write_report
from clap_train.evaluation.tasks import zeroshot_tasks
from clap_train.signal.audio_ops import int16_to_float
from clap_train.training.module import CLAPModule

log = logging.getLogger("clap_train.evaluate")
# preprocessing read from the checkpoint's training config when not given on the command line
DATA_KEYS = ("tokenizer", "sample_rate", "clip_samples", "truncation", "padding", "int16", "max_text_length", "batch_size", "val_batch_size", "num_workers", "multiprocessing_context")
REQUIRED_DATA_KEYS = ("tokenizer", "sample_rate", "clip_samples")


def stored_config(checkpoint: Path) -> dict | None:
    """The resolved training config a clap_train `.ckpt` carries, else None (memory-mapped, weights_only).
    Only its `data` preprocessing values and `evaluation.zeroshot` specs are read, and only if they are plain
    data (`checkpoints.build.check_plain`: no `_target_` or other Hydra keys, no interpolations).

    Raises:
        ValueError: an unreadable file, or a stored value that is not plain data (naming the field).
    """
    if not (checkpoint.is_file() and checkpoint.suffix == ".ckpt"):
        return None
    loaded = read_checkpoint_file(checkpoint)
    config = loaded.get("clap_train_config") if isinstance(loaded, dict) else None
    if not isinstance(config, dict):
        return None
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    for key in (*DATA_KEYS, "val_shards"):
        check_plain(data.get(key), f"data.{key}", str(checkpoint))
    zeroshot = (config.get("evaluation") or {}).get("zeroshot") if isinstance(config.get("evaluation"), dict) else None
    check_plain(zeroshot, "evaluation.zeroshot", str(checkpoint))
    return config


def data_settings(cfg: DictConfig, stored: dict | None, model) -> dict:
    """Datamodule kwargs: command-line `data.*` over the checkpoint's training config.

    Raises:
        ValueError: naming `data.<key>` when a required setting is in neither.
    """
    stored_data = (stored or {}).get("data") or {}
    settings = {key: stored_data[key] for key in DATA_KEYS if stored_data.get(key) is not None}
    settings.update({key: value for key, value in cfg.data.items() if key != "val_shards" and value is not None})
    if "sample_rate" not in settings and hasattr(getattr(model, "frontend", None), "sample_rate"):
        settings["sample_rate"] = model.frontend.sample_rate
    if "clip_samples" not in settings and getattr(model, "clip_samples", None) is not None:
        settings["clip_samples"] = model.clip_samples  # the model's audio window
    if "truncation" not in settings and getattr(model.audio_encoder, "enable_fusion", False):
        settings["truncation"] = "fusion"  # a fused model (LAION .pt, transformers dir) sees fusion features
    settings["frontend"] = model.frontend  # the fusion path builds its features with the model's front end
    if "tokenizer" not in settings and cfg.checkpoint is not None and Path(cfg.checkpoint).is_dir():
        settings["tokenizer"] = cfg.checkpoint  # a transformers folder holds its tokenizer.json
    for key in REQUIRED_DATA_KEYS:
        if key not in settings:
            raise ValueError(f"data.{key}: not stored in {cfg.checkpoint or 'an untrained model'}; "
                             f"set it on the command line")
    return settings


def evaluation_sets(cfg: DictConfig, stored: dict | None) -> tuple[dict, dict]:
    """({set name: shard pattern}, {set name: zero-shot spec}): the command line's, else the checkpoint's.

    Raises:
        ValueError: naming data.val_shards when neither gives a set.
    """
    zeroshot = OmegaConf.to_container(cfg.evaluation.zeroshot, resolve=True)
    if cfg.data.val_shards:
        return OmegaConf.to_container(cfg.data.val_shards, resolve=True), zeroshot
    stored = stored or {}
    val_shards = (stored.get("data") or {}).get("val_shards") or {}
    if not val_shards:
        raise ValueError(f"data.val_shards: {cfg.checkpoint} stores no validation sets; "
                         f"give them as data.val_shards.NAME=PATTERN")
    return val_shards, zeroshot or (stored.get("evaluation") or {}).get("zeroshot") or {}


def read_clip_audio(urls: list[str], keys: set[str], stages: list, clip_samples: int) -> dict:
    """{key: mono waveform (<= clip_samples,)} for `keys`, scanning the shards once.

    `stages` are the set's evaluation sample stages; they are applied up to the crop (and int16
    quantisation, read back as float), so the clip is the window the model heard (fused models, which
    see the whole clip, show its first window).
    """
    found = {}
    for sample in wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples()):
        if sample["__key__"] not in keys:
            continue
        for stage in stages:
            if isinstance(stage, (FusionFeatures, ChooseCaption)):
                break
            sample = stage(sample)
        wave = sample["wave"]
        found[sample["key"]] = (int16_to_float(wave) if wave.dtype == torch.int16 else wave)[:clip_samples]
        if len(found) == len(keys):
            break
    return found


def write_outputs(cfg: DictConfig, datamodule: CLAPDataModule, module: CLAPModule, metrics: dict) -> Path:
    """The HTML report: sampled text queries with their top clips, confusion matrices of zero-shot sets."""
    query_sets, confusions = {}, {}
    stages = sample_stages(**datamodule.stage_args, train=False)
    for name, result in module.last_results.items():
        found = result.embeddings
        if found.text_embeds is not None and found.captions is not None and f"{name}/t2a_R@1" in metrics:
            queries = sample_text_queries(found.audio_embeds, found.text_embeds, found.text_to_audio, found.keys,
                                          found.captions, cfg.report.num_queries, cfg.report.top_k, cfg.report.seed)
            shown = {hit.key for query in queries for hit in query.retrieved}
            query_sets[name] = (queries, read_clip_audio(datamodule.val_urls[name], shown, stages,
                                                            datamodule.clip_samples))
        if result.confusion is not None:
            confusions[name] = (result.confusion.numpy(), result.class_names)
    return write_report(cfg.out_dir, metrics, sample_rate=datamodule.sample_rate, confusions=confusions,
                        title=f"CLAP evaluation of {cfg.checkpoint or 'an untrained model'}", query_sets=query_sets)


def format_table(metrics: dict) -> str:
    width = max(len(key.split("/")[0]) for key in metrics)
    lines = [f"{'set':<{width}}  {'metric':<16} {'value':>10}"]
    for key, value in metrics.items():
        name, metric = key.split("/", 1)
        lines.append(f"{name:<{width}}  {metric:<16} {value:>10.4f}")
    return "\n".join(lines)


EXAMPLE_COLUMNS = ("set", "query", "target_key", "target_rank", "position", "key", "score", "correct")


def log_to_logger(cfg: DictConfig, metrics: dict, html_path: Path, sample_rate: int) -> None:
    """Metrics as `eval/<set>/<metric>`; with W&B also the report page (`eval/report`, spectrograms inline)
    and its examples as a table whose audio cells are W&B media (`eval/examples`): the page's own players
    point at files next to it, which W&B does not upload."""
    logger = instantiate(cfg.logger)
    logger.log_metrics({f"eval/{key}": value for key, value in metrics.items()})
    if isinstance(logger, WandbLogger):
        import wandb

        table = wandb.Table(columns=[*EXAMPLE_COLUMNS, "audio"])
        for row in json.loads((html_path.parent / "examples.json").read_text()):
            audio = row["audio"] and wandb.Audio(str(html_path.parent / row["audio"]), sample_rate=sample_rate)
            table.add_data(*(row[column] for column in EXAMPLE_COLUMNS), audio)
        logger.experiment.log({"eval/report": wandb.Html(html_path.read_text(encoding="utf-8")),
                               "eval/examples": table})
    logger.finalize("success")


def load_evaluated_model(cfg: DictConfig):
    """(stored training config or None, model in eval mode): `checkpoint`, or an untrained `model` preset.

    Raises:
        ValueError naming `checkpoint` when neither is given; FileNotFoundError when the checkpoint is missing.
    """
    if cfg.checkpoint is None:
        if cfg.get("model") is None:
            raise ValueError("checkpoint: give checkpoint=PATH, or model=PRESET (e.g. model=debug) to evaluate "
                             "an untrained model")
        torch.manual_seed(cfg.seed)  # the untrained weights: the same for a seed, as in training's first step
        return None, instantiate(cfg.model).eval()
    checkpoint = Path(cfg.checkpoint)
    if not checkpoint.exists():
        raise FileNotFoundError(f"checkpoint: {checkpoint} does not exist")
    return stored_config(checkpoint), load_model(checkpoint)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Evaluate `cfg.checkpoint` on every configured set; returns {'<set>/<metric>': value}.

    Raises:
        FileNotFoundError: naming the checkpoint, a shard pattern or the tokenizer that is missing.
        ValueError: naming the config key of a missing or inconsistent setting.
    """
    stored, model = load_evaluated_model(cfg)
    val_shards, zeroshot_specs = evaluation_sets(cfg, stored)
    zeroshot = zeroshot_tasks(zeroshot_specs, list(val_shards))
    datamodule = CLAPDataModule(train_shards=[], val_shards=val_shards, **data_settings(cfg, stored, model))
    datamodule.check_model(getattr(model.audio_encoder, "enable_fusion", False), model.frontend.config())
    datamodule.setup("validate")  # fails here, naming data.val_shards.<set>, when shards are missing
    module = CLAPModule(model, loss=None, optimizer=None, val_names=datamodule.val_names, zeroshot=zeroshot)
    trainer = instantiate(cfg.trainer)
    trainer.validate(module, datamodule=datamodule, verbose=False)
    metrics = {f"{name}/{key}": value for name, result in module.last_results.items()
               for key, value in result.metrics.items()}
    if trainer.is_global_zero:
        out_dir = Path(cfg.out_dir)
        html_path = write_outputs(cfg, datamodule, module, metrics)
        used = OmegaConf.to_container(cfg, resolve=True)
        used["data"] = {**datamodule_settings(datamodule), "val_shards": val_shards}
        used["evaluation"] = {"zeroshot": zeroshot_specs}
        (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(used))
        print("\n" + format_table(metrics) + f"\nreport: {html_path}\nmetrics: {out_dir / 'metrics.json'}\n",
              flush=True)
        if cfg.get("logger"):
            log_to_logger(cfg, metrics, html_path, datamodule.sample_rate)
    return metrics


def datamodule_settings(datamodule: CLAPDataModule) -> dict:
    """The preprocessing the evaluation actually used, for the written config."""
    settings = {key: value for key, value in datamodule.stage_args.items() if key != "caption_probs"}
    return {"tokenizer": datamodule.tokenizer_path, "max_text_length": datamodule.max_text_length, **settings}
