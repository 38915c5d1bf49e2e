"""Fine-tuning from a released checkpoint: `model.init_from=SOURCE` (docs/inference.md).

SOURCE is anything `load_model` reads: a transformers CLAP directory, a LAION-CLAP `.pt` (fused or not)
or a clap_train `.ckpt`. `apply_init_from(cfg)` runs before anything is built and rewrites the config:

- `model` becomes SOURCE's architecture as a full model config (`model_config`), so the run's
  config.yaml and its checkpoints describe the model like any preset does. Every other key the user's
  model node holds is compared with it: training-only knobs (`TRAINING_KNOBS`: dropout, stochastic
  depth, SpecAugment, activation checkpointing) are applied, any other difference (a preset that is not
  SOURCE's architecture) raises ValueError listing the differing fields;
- the preprocessing follows SOURCE: a fused model trains on fusion features with its own (HTK) front end
  (`data.truncation=fusion`; `data.frontend` is the model's), an unfused one on rand_trunc crops;
- `data.tokenizer: null` takes SOURCE's tokenizer (a transformers directory's tokenizer.json, or the one a
  clap_train checkpoint trained with); a LAION `.pt` carries none, so then it must be given;
- `init_from` records {source, kind, num_params, fused}.
The weights are copied strictly into the built model by `load_init_weights`. The run itself is a new
one: step 0, fresh optimizer and schedule (unlike `resume=`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from clap_train.checkpoints.build import stored_model_config
from clap_train.checkpoints.load import load_model, load_state_dict_strict

log = logging.getLogger(__name__)
TRAINING_KNOBS = {"audio_encoder.drop_path_rate", "audio_encoder.spec_augment", "audio_encoder.dropout",
                  "audio_encoder.activation_checkpointing", "text_encoder.dropout", "text_encoder.attention_dropout",
                  "text_encoder.activation_checkpointing", "logit_scale_init"}
HTSAT = "clap_train.models.audio.htsat.HTSATEncoder"
ROBERTA = "clap_train.models.text.roberta.RobertaEncoder"
RETIRED = ("pretrained", "tokenizer_path")  # arguments old checkpoints store that no constructor takes (registry)


def without_retired(config):
    """A stored model config without the retired arguments (tower init paths, tokenizer_path)."""
    if isinstance(config, dict):
        return {k: without_retired(v) for k, v in config.items() if k not in RETIRED}
    return config


def source_kind(source: Path) -> str:
    """'transformers' (a directory), 'clap_train' (a .ckpt) or 'laion' (any other file)."""
    if source.is_dir():
        return "transformers"
    return "clap_train" if source.suffix == ".ckpt" else "laion"


def model_config(model: nn.Module) -> dict:
    """The model config (the keys of a conf/model preset) that builds `model`'s architecture: an HTSAT +
    RoBERTa `CLAPModel` as loaded from a transformers directory or a LAION `.pt`.

    Raises:
        ValueError: for other towers (their configs come from a clap_train checkpoint only).
    """
    audio, text, frontend = model.audio_encoder, model.text_encoder, model.frontend
    if type(audio).__name__ != "HTSATEncoder" or type(text).__name__ != "RobertaEncoder":
        raise ValueError(f"model.init_from: cannot describe {type(audio).__name__} + {type(text).__name__}")
    layer = text.layers[0]
    drop_path = [b.drop_path.p for stage in audio.layers for b in stage.blocks if hasattr(b, "drop_path")]
    return {
        "_target_": "clap_train.models.clap.CLAPModel",
        "clip_samples": model.clip_samples,
        "embed_dim": model.embed_dim,
        "frontend": {"_target_": "clap_train.signal.frontend.LogMelFrontend", **frontend.config()},
        "audio_encoder": {
            "_target_": HTSAT, "embed_dim": audio.embed_dim, "depths": list(audio.depths),
            "num_heads": list(audio.num_heads), "window_size": audio.window_size, "spec_size": audio.spec_size,
            "num_mel_bins": audio.num_mel_bins, "patch_size": audio.patch_size, "mlp_ratio": audio.mlp_ratio,
            "drop_path_rate": max(drop_path, default=0.0), "enable_fusion": audio.enable_fusion,
            "spec_augment": audio.spec_augment,
        },
        "text_encoder": {
            "_target_": ROBERTA, "vocab_size": text.vocab_size, "hidden_size": text.hidden_size,
            "num_layers": text.num_layers, "num_heads": text.num_heads, "intermediate_size": text.intermediate_size,
            "max_position_embeddings": text.max_position_embeddings, "type_vocab_size": text.type_vocab_size,
            "layer_norm_eps": text.layer_norm_eps, "dropout": layer.dropout.p,
            "attention_dropout": layer.attention_dropout, "pad_token_id": text.pad_token_id,
            "position_offset": text.position_offset,
        },
    }


def _leaves(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out.update(_leaves(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: list(node) if isinstance(node, tuple) else node}


def _same(a, b) -> bool:
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
    if numbers:
        return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(a)))
    return a == b


def merge_user_model(source_config: dict, user: dict, source: str) -> dict:
    """`source_config` with the user's training knobs applied. Raises ValueError listing every other user
    field that differs from (or is absent in) SOURCE's architecture."""
    theirs = _leaves(source_config)
    merged = OmegaConf.create(source_config)
    differing = []
    for name, value in _leaves(user).items():
        if name in TRAINING_KNOBS:
            OmegaConf.update(merged, name, value, force_add=True)
        elif name not in theirs or not _same(theirs[name], value):
            differing.append(f"model.{name}: preset {value!r} vs source {theirs.get(name, '<absent>')!r}")
    if differing:
        raise ValueError(f"model.init_from={source}: the model preset disagrees with the checkpoint's "
                         f"architecture in {len(differing)} fields: {'; '.join(differing)}")
    return OmegaConf.to_container(merged)


def _source_tokenizer(source: Path, kind: str, stored: dict | None) -> str | None:
    if kind == "transformers":
        return str(source / "tokenizer.json") if (source / "tokenizer.json").is_file() else None
    tokenizer = ((stored or {}).get("data") or {}).get("tokenizer")
    return tokenizer if isinstance(tokenizer, str) and Path(tokenizer).exists() else None


def apply_init_from(cfg: DictConfig) -> dict | None:
    """Rewrite `cfg` for `model.init_from` (see the module docstring); returns SOURCE's state dict to load
    into the built model, or None when `model.init_from` is unset.

    Raises:
        FileNotFoundError: SOURCE does not exist. ValueError: a preset that disagrees with SOURCE (the fields
        listed), or no tokenizer (naming data.tokenizer). KeyError: SOURCE's weights do not load strictly.
    """
    if "init_from" not in cfg.model.keys():  # noqa: SIM118 (a ??? value is not `in` a DictConfig)
        return None
    if OmegaConf.is_missing(cfg.model, "init_from"):
        raise ValueError("model.init_from: set it to a transformers CLAP directory, a LAION-CLAP .pt or a "
                         "clap_train .ckpt (model=from_source builds SOURCE's architecture)")
    init_from = cfg.model.init_from
    if init_from is None:
        return None
    source = Path(str(init_from))
    if not source.exists():
        raise FileNotFoundError(f"model.init_from: {source} does not exist")
    kind = source_kind(source)
    model = load_model(source)
    stored = None
    if kind == "clap_train":
        stored = torch.load(source, map_location="cpu", weights_only=True, mmap=True).get("clap_train_config")
        theirs = without_retired(stored_model_config({"clap_train_config": stored}, str(source)))
    else:
        theirs = model_config(model)
    user = {k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items() if k != "init_from"}
    merged = merge_user_model(theirs, user, str(source)) if "_target_" in user else merge_user_model(
        theirs, {k: v for k, v in user.items() if k in ("audio_encoder", "text_encoder")}, str(source))
    fused = bool(merged["audio_encoder"].get("enable_fusion", False))
    num_params = sum(p.numel() for p in model.parameters())
    with open_dict(cfg):
        cfg.model = merged
        cfg.init_from = {"source": str(source), "kind": kind, "num_params": num_params, "fused": fused}
        if cfg.data.get("tokenizer", None) is None:
            tokenizer = _source_tokenizer(source, kind, stored)
            if tokenizer is None:
                raise ValueError(f"data.tokenizer: {source} ({kind}) carries no tokenizer; set "
                                 "data.tokenizer=PATH/tokenizer.json (roberta-base's for the released LAION models)")
            cfg.data.tokenizer = tokenizer
        if fused:
            cfg.data.truncation = "fusion"  # data.frontend interpolates ${model.frontend}: SOURCE's (HTK) mels
        elif cfg.data.get("truncation", "rand_trunc") == "fusion":
            cfg.data.truncation = "rand_trunc"
    log.info("model.init_from: %s (%s checkpoint, %.1fM parameters, %s), data.truncation=%s, tokenizer %s",
             source, kind, num_params / 1e6, "fused" if fused else "unfused", cfg.data.get("truncation", "rand_trunc"),
             cfg.data.tokenizer)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def load_init_weights(model: nn.Module, state_dict: dict, source: str) -> None:
    """Copy SOURCE's weights into the model built from the rewritten config, strictly."""
    load_state_dict_strict(model, state_dict, f"model.init_from={source}")
