"""transformers CLAP directories (`ClapModel.save_pretrained`, hub `laion/clap-htsat-*`) <-> `CLAPModel`.

A directory holds config.json, model.safetensors (or pytorch_model.bin, or a sharded
model.safetensors.index.json), optionally preprocessor_config.json and tokenizer.json. Hub
config files only list non-default values, so missing entries take transformers' class defaults
(CLAP_SPEC §1.2). Key map (CLAP_SPEC §8.2): `audio_model.audio_encoder.` -> `audio_encoder.`
(`hf_audio`), `text_model.` -> `text_encoder.` (`hf_text`), projections keep `linear1/linear2`,
logit scales are () in HF and (1,) here.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from clap_train.checkpoints.hf_audio import hf_audio_to_htsat, htsat_to_hf_audio
from clap_train.checkpoints.hf_text import hf_text_to_roberta, roberta_to_hf_text
from clap_train.checkpoints.state_dict import load_state_dict_strict, read_state_dict
from clap_train.models.audio.htsat import HTSATEncoder, relative_position_index
from clap_train.models.clap import CLAPModel
from clap_train.models.text.roberta import RobertaEncoder
from clap_train.signal.frontend import LogMelFrontend

HF_AUDIO = "audio_model.audio_encoder."
HF_TEXT = "text_model."
PROJECTIONS = ("audio_projection.", "text_projection.")
LOGIT_SCALES = ("logit_scale_a", "logit_scale_t")

# transformers' class defaults, for the keys a hub "diff" config leaves out
AUDIO_DEFAULTS = {
    "window_size": 8, "num_mel_bins": 64, "spec_size": 256, "patch_size": 4, "patch_stride": [4, 4],
    "hidden_size": 768, "depths": [2, 2, 6, 2], "num_attention_heads": [4, 8, 16, 32], "enable_fusion": False,
    "fusion_type": None, "patch_embeds_hidden_size": 96, "mlp_ratio": 4.0, "aff_block_r": 4, "layer_norm_eps": 1e-5,
    "hidden_act": "gelu", "drop_path_rate": 0.0, "patch_embed_input_channels": 1, "flatten_patch_embeds": True,
    "enable_patch_layer_norm": True, "qkv_bias": True, "projection_hidden_act": "relu",
}
TEXT_DEFAULTS = {
    "vocab_size": 50265, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": 3072, "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 514, "type_vocab_size": 1, "layer_norm_eps": 1e-12, "pad_token_id": 1,
    "projection_hidden_act": "relu",
}
PREPROCESSOR_DEFAULTS = {  # hub values of laion/clap-htsat-* (the class default frequency_min 0 is not theirs)
    "feature_size": 64, "sampling_rate": 48000, "hop_length": 480, "fft_window_size": 1024, "frequency_min": 50,
    "frequency_max": 14000, "max_length_s": 10,
}


def _settings(config: dict, defaults: dict) -> dict:
    return {**defaults, **{k: v for k, v in config.items() if k in defaults}}


def _check_supported(audio: dict, text: dict, source: str) -> None:
    """Raise ValueError for HF options `HTSATEncoder` / `RobertaEncoder` do not implement."""
    required = [
        ("audio_config.fusion_type", audio["fusion_type"] in (None, "aff_2d")),
        ("audio_config.patch_stride", list(audio["patch_stride"]) == [audio["patch_size"]] * 2),
        ("audio_config.patch_embed_input_channels", audio["patch_embed_input_channels"] == 1),
        ("audio_config.flatten_patch_embeds", audio["flatten_patch_embeds"] is True),
        ("audio_config.enable_patch_layer_norm", audio["enable_patch_layer_norm"] is True),
        ("audio_config.qkv_bias", audio["qkv_bias"] is True),
        ("audio_config.layer_norm_eps", audio["layer_norm_eps"] == 1e-5),
        ("audio_config.hidden_act", audio["hidden_act"] == "gelu"),
        ("audio_config.projection_hidden_act", audio["projection_hidden_act"] == "relu"),
        ("text_config.hidden_act", text["hidden_act"] == "gelu"),
        ("text_config.projection_hidden_act", text["projection_hidden_act"] == "relu"),
    ]
    bad = [name for name, ok in required if not ok]
    if bad:
        raise ValueError(f"{source}: unsupported transformers CLAP settings {bad} (clap_train implements the "
                         "released LAION architecture)")


def build_from_hf_config(config: dict, preprocessor: dict | None, source: str = "config") -> CLAPModel:
    """An (untrained) `CLAPModel` with the geometry of an HF `ClapConfig` dict.

    The front end follows `preprocessor` (preprocessor_config.json): HTK filters without
    normalisation when its truncation is "fusion", Slaney otherwise (as ClapFeatureExtractor does);
    without one, the model's fusion flag decides and the hub values (50-14000 Hz) are used.
    """
    audio = _settings(config.get("audio_config", {}), AUDIO_DEFAULTS)
    text = _settings(config.get("text_config", {}), TEXT_DEFAULTS)
    _check_supported(audio, text, source)
    prep = {**PREPROCESSOR_DEFAULTS, "feature_size": audio["num_mel_bins"], **(preprocessor or {})}
    fused_frontend = prep.get("truncation", "fusion" if audio["enable_fusion"] else "rand_trunc") == "fusion"
    frontend = LogMelFrontend(
        sample_rate=prep["sampling_rate"], n_fft=prep["fft_window_size"], hop_length=prep["hop_length"],
        n_mels=prep["feature_size"], f_min=float(prep["frequency_min"]), f_max=float(prep["frequency_max"]),
        mel_scale="htk" if fused_frontend else "slaney", norm=None if fused_frontend else "slaney",
    )
    audio_encoder = HTSATEncoder(
        embed_dim=audio["patch_embeds_hidden_size"], depths=tuple(audio["depths"]),
        num_heads=tuple(audio["num_attention_heads"]), window_size=audio["window_size"], spec_size=audio["spec_size"],
        num_mel_bins=audio["num_mel_bins"], patch_size=audio["patch_size"], mlp_ratio=audio["mlp_ratio"],
        drop_path_rate=audio["drop_path_rate"], enable_fusion=audio["enable_fusion"],
    )
    if audio_encoder.output_dim != audio["hidden_size"]:
        raise ValueError(f"{source}: audio hidden_size {audio['hidden_size']} != patch_embeds_hidden_size * "
                         f"2**(len(depths)-1) = {audio_encoder.output_dim}")
    text_encoder = RobertaEncoder(
        vocab_size=text["vocab_size"], hidden_size=text["hidden_size"], num_layers=text["num_hidden_layers"],
        num_heads=text["num_attention_heads"], intermediate_size=text["intermediate_size"],
        max_position_embeddings=text["max_position_embeddings"], type_vocab_size=text["type_vocab_size"],
        layer_norm_eps=text["layer_norm_eps"], dropout=text["hidden_dropout_prob"],
        attention_dropout=text["attention_probs_dropout_prob"], pad_token_id=text["pad_token_id"],
    )
    return CLAPModel(
        audio_encoder, text_encoder, frontend, embed_dim=config.get("projection_dim", 512),
        logit_scale_init=config.get("logit_scale_init_value", 1 / 0.07),
        clip_samples=int(prep["max_length_s"] * prep["sampling_rate"]),
    )


def hf_to_clap_state_dict(state_dict: dict[str, torch.Tensor], source: str = "state dict") -> dict[str, torch.Tensor]:
    """HF `ClapModel` keys -> `CLAPModel` keys. Raises KeyError listing keys that belong to neither tower,
    the projections nor the logit scales."""
    out = {f"audio_encoder.{k}": v for k, v in hf_audio_to_htsat(state_dict, prefix=HF_AUDIO).items()}
    text, unknown = hf_text_to_roberta(state_dict, prefix=HF_TEXT)
    out.update({f"text_encoder.{k}": v for k, v in text.items()})
    for key, tensor in state_dict.items():
        if key in LOGIT_SCALES:
            out[key] = tensor.reshape(1)
        elif key.startswith(PROJECTIONS):
            out[key] = tensor
        elif not key.startswith((HF_AUDIO, HF_TEXT)):
            unknown.append(key)
    if unknown:
        raise KeyError(f"{source}: {len(unknown)} unexpected keys {sorted(unknown)[:10]}")
    return out


def clap_to_hf_state_dict(model: CLAPModel) -> dict[str, torch.Tensor]:
    """`CLAPModel` -> HF `ClapModel` state dict, including the derived buffers HF stores
    (relative_position_index, text position_ids / token_type_ids), so it loads strictly."""
    out = {}
    for key, tensor in model.state_dict().items():
        if key.startswith(("audio_encoder.", "text_encoder.")):
            continue
        out[key] = tensor.reshape(()) if key in LOGIT_SCALES else tensor
    out.update(htsat_to_hf_audio(model.audio_encoder.state_dict(), prefix=HF_AUDIO))
    out.update(roberta_to_hf_text(model.text_encoder.state_dict(), prefix=HF_TEXT))
    for stage, layer in enumerate(model.audio_encoder.layers):
        for index, block in enumerate(layer.blocks):
            out[f"{HF_AUDIO}layers.{stage}.blocks.{index}.attention.self.relative_position_index"] = (
                relative_position_index(block.window))
    positions = model.text_encoder.max_position_embeddings
    out[f"{HF_TEXT}embeddings.position_ids"] = torch.arange(positions)[None]  # (1, P)
    out[f"{HF_TEXT}embeddings.token_type_ids"] = torch.zeros(1, positions, dtype=torch.long)
    return {k: v.detach().contiguous() for k, v in out.items()}


def load_hf_directory(directory: Path) -> CLAPModel:
    """`CLAPModel` (eval mode) from a transformers CLAP directory; attaches its tokenizer.json if present.

    Raises:
        FileNotFoundError: no config.json or weights. ValueError: an unsupported config.
        KeyError: weights that do not match the config (lists the keys).
    """
    config = json.loads((directory / "config.json").read_text())
    if config.get("model_type") != "clap":
        raise ValueError(f"{directory}: config.json model_type is {config.get('model_type')!r}, expected 'clap'")
    prep_file = directory / "preprocessor_config.json"
    preprocessor = json.loads(prep_file.read_text()) if prep_file.is_file() else None
    model = build_from_hf_config(config, preprocessor, str(directory))
    load_state_dict_strict(model, hf_to_clap_state_dict(read_state_dict(directory), str(directory)), str(directory))
    if (directory / "tokenizer.json").is_file():
        model.tokenizer_path = str(directory / "tokenizer.json")
    return model.eval()
