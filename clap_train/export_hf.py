"""Export a CLAP model as a transformers CLAP directory (`python -m clap_train.export`, `clap_train/export.py`).

`export_hf(model, OUT_DIR)` writes config.json, model.safetensors, preprocessor_config.json and, when
the model knows its tokenizer (`tokenizer_path`), tokenizer.json + tokenizer_config.json, so that
`transformers.ClapModel.from_pretrained(OUT_DIR)` and `ClapProcessor.from_pretrained(OUT_DIR)` load
it and give the same embeddings. Only HTSAT + RoBERTa models whose front end is one that
transformers' ClapFeatureExtractor implements are exportable.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from safetensors.torch import save_file

from clap_train.checkpoints.hf import clap_to_hf_state_dict
from clap_train.models.audio.htsat import HTSATEncoder
from clap_train.models.clap import CLAPModel
from clap_train.models.text.roberta import RobertaEncoder

ROBERTA_SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
                   "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>"}


def check_exportable(model: CLAPModel) -> None:
    """Raise ValueError naming what transformers' CLAP cannot represent: towers other than HTSAT + RoBERTa,
    another front end, a window that is not a whole number of seconds."""
    audio, text, frontend = model.audio_encoder, model.text_encoder, model.frontend
    if not isinstance(audio, HTSATEncoder) or not isinstance(text, RobertaEncoder):
        raise ValueError(f"only HTSAT + RoBERTa models export to transformers CLAP, got "  # noqa: TRY004 (a user error)
                         f"{type(audio).__name__} + {type(text).__name__}")
    expected = ("htk", None) if audio.enable_fusion else ("slaney", "slaney")
    if (frontend.mel_scale, frontend.norm) != expected:
        raise ValueError(f"ClapFeatureExtractor uses mel_scale/norm {expected} for enable_fusion="
                         f"{audio.enable_fusion}, the model's front end has {(frontend.mel_scale, frontend.norm)}")
    if audio.enable_fusion and frontend.n_mels != 64:  # its fusion path resizes to a hard-coded 64 mel bins
        raise ValueError(f"ClapFeatureExtractor's fusion needs 64 mel bins, the model's front end has {frontend.n_mels}")
    if not text.position_offset:
        raise ValueError("transformers CLAP's text model uses RoBERTa positions (position_offset=True)")
    grids = [audio.spec_size // audio.patch_size // 2**s for s in range(len(audio.depths))]
    if min(grids) < audio.window_size:
        raise ValueError(f"transformers' Swin needs every stage grid >= window_size {audio.window_size}, got {grids}")
    if model.clip_samples % frontend.sample_rate:
        # ClapFeatureExtractor's window is max_length_s * sampling_rate samples, used as a slice index
        raise ValueError(f"ClapFeatureExtractor needs a whole number of seconds: model.clip_samples "
                         f"{model.clip_samples} at sample_rate {frontend.sample_rate}")


def hf_config(model: CLAPModel) -> dict:
    """The config.json of the equivalent transformers `ClapModel` (all values written out)."""
    audio, text = model.audio_encoder, model.text_encoder
    projection = model.embed_dim
    layer = text.layers[0]
    return {
        "architectures": ["ClapModel"],
        "model_type": "clap",
        "projection_dim": projection,
        "projection_hidden_act": "relu",
        "logit_scale_init_value": 1 / 0.07,
        "audio_config": {
            "model_type": "clap_audio_model", "patch_embeds_hidden_size": audio.embed_dim,
            "hidden_size": audio.output_dim, "depths": list(audio.depths), "num_attention_heads": list(audio.num_heads),
            "window_size": audio.window_size, "spec_size": audio.spec_size, "num_mel_bins": audio.num_mel_bins,
            "patch_size": audio.patch_size, "patch_stride": [audio.patch_size] * 2, "mlp_ratio": audio.mlp_ratio,
            "enable_fusion": audio.enable_fusion, "fusion_type": None, "aff_block_r": 4, "layer_norm_eps": 1e-5,
            "hidden_act": "gelu", "drop_path_rate": 0.0, "projection_dim": projection,
            "projection_hidden_act": "relu",
        },
        "text_config": {
            "model_type": "clap_text_model", "vocab_size": text.vocab_size, "hidden_size": text.hidden_size,
            "num_hidden_layers": text.num_layers, "num_attention_heads": text.num_heads,
            "intermediate_size": text.intermediate_size, "max_position_embeddings": text.max_position_embeddings,
            "type_vocab_size": text.type_vocab_size, "layer_norm_eps": text.layer_norm_eps,
            "pad_token_id": text.pad_token_id, "bos_token_id": 0, "eos_token_id": 2, "hidden_act": "gelu",
            "hidden_dropout_prob": layer.dropout.p, "attention_probs_dropout_prob": layer.attention_dropout,
            "projection_dim": projection, "projection_hidden_act": "relu",
        },
    }


def hf_preprocessor_config(model: CLAPModel) -> dict:
    """preprocessor_config.json for `ClapFeatureExtractor`, matching the model's front end."""
    frontend = model.frontend
    # the extractor slices and pads with these sizes: they must be ints, not floats (a float max_length_s
    # breaks ClapProcessor(audio=...) with "slice indices must be integers")
    return {
        "feature_extractor_type": "ClapFeatureExtractor", "processor_class": "ClapProcessor",
        "feature_size": int(frontend.n_mels), "sampling_rate": int(frontend.sample_rate),
        "hop_length": int(frontend.hop_length), "fft_window_size": int(frontend.n_fft),
        "frequency_min": frontend.f_min, "frequency_max": frontend.f_max,
        "max_length_s": int(model.clip_samples // frontend.sample_rate), "top_db": None, "padding": "repeatpad",
        "padding_value": 0.0, "return_attention_mask": False,
        "truncation": "fusion" if model.audio_encoder.enable_fusion else "rand_trunc",
    }


def export_hf(model: CLAPModel, out_dir: str | Path) -> Path:
    """Write `model` as a transformers CLAP directory; returns `out_dir`.

    Raises:
        ValueError: see `check_exportable`. FileNotFoundError: `model.tokenizer_path` set but missing.
    """
    check_exportable(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(hf_config(model), indent=2))
    save_file(clap_to_hf_state_dict(model), out / "model.safetensors", metadata={"format": "pt"})
    (out / "model.safetensors").chmod(0o644)  # safetensors writes 0600; the other files get the usual mode
    (out / "preprocessor_config.json").write_text(json.dumps(hf_preprocessor_config(model), indent=2))
    if getattr(model, "tokenizer_path", None):
        source = Path(model.tokenizer_path)
        source = source / "tokenizer.json" if source.is_dir() else source
        if not source.is_file():
            raise FileNotFoundError(f"export: model.tokenizer_path {source} does not exist")
        shutil.copyfile(source, out / "tokenizer.json")
        tokenizer_config = {"tokenizer_class": "RobertaTokenizer", "processor_class": "ClapProcessor",
                            "model_max_length": model.text_encoder.max_position_embeddings - 2, **ROBERTA_SPECIAL}
        (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    return out
