"""LAION-CLAP `.pt` checkpoints (`630k-*.pt`, `music_*.pt`; CLAP_SPEC §8.1) -> `CLAPModel`.

The file is a dict with `state_dict` (or the state dict itself), keys maybe prefixed `module.`.
`audio_branch.*` already has `HTSATEncoder`'s names; `text_branch.*` is an HF RobertaModel;
projections are nn.Sequential (`.0`, `.2` -> `linear1`, `linear2`). The geometry is read from the
tensors: fusion from `patch_embed.mel_conv2d`, HTSAT width / depths / heads / window from shapes.
Keys LAION has and CLAPModel does not are dropped by name (`LAION_DROPPED`); any other extra key
raises. HTSAT audio towers only (LAION's PANN variants are not supported).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch

from clap_train.checkpoints.hf_text import hf_text_to_roberta
from clap_train.checkpoints.state_dict import load_state_dict_strict
from clap_train.models.audio.htsat import HTSATEncoder
from clap_train.models.clap import CLAPModel
from clap_train.models.text.roberta import RobertaEncoder
from clap_train.signal.frontend import LogMelFrontend

AUDIO, TEXT = "audio_branch.", "text_branch."
ROBERTA_HEAD_DIM = 64  # LAION's text tower is roberta-base (12 heads of 64); heads are not visible in the weights
LAION_TEXT_EPS = 1e-5  # roberta-base's config; HF conversions run 1e-12 (CLAP_SPEC §7.9)
# Fixed LAION recipe (CLAP_SPEC §1.1): 48 kHz, 1024 / 480, 64 mels, 50-14000 Hz, 10 s windows, spec_size 256
# (spec_size is read from the stage-0 shift mask when the file has one).
LAION_AUDIO = {"sample_rate": 48000, "n_fft": 1024, "hop_length": 480, "f_min": 50.0, "f_max": 14000.0}
LAION_CLIP_SAMPLES = 480000
LAION_SPEC_SIZE = 256

# Keys LAION checkpoints carry that CLAPModel has no counterpart for, as regexes on the stripped key.
LAION_DROPPED = (
    r"audio_branch\.spectrogram_extractor\..*",  # STFT as conv weights (constants)
    r"audio_branch\.logmel_extractor\..*",  # mel filter bank (constant)
    r"audio_branch\.layers\.\d+\.blocks\.\d+\.attn_mask",  # shift masks (computed in forward)
    r"audio_branch\.layers\.\d+\.blocks\.\d+\.attn\.relative_position_index",  # derived
    r"audio_branch\.tscam_conv\..*",  # AudioSet tagging head
    r"audio_branch\.head\..*",  # unused classifier
    r"(audio|text)_transform\..*",  # mlp-loss MLPs, not part of the embeddings
    r"text_branch\.embeddings\.(position_ids|token_type_ids)",  # derived buffers of older transformers
)
_DROPPED = re.compile("|".join(f"(?:{p})" for p in LAION_DROPPED))


def laion_state_dict(checkpoint, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The state dict of a loaded LAION `.pt` object (a dict with `state_dict`, or the state dict
    itself) with the DDP prefix `module.` stripped. Raises KeyError if it has no LAION branches."""
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    state = {k.removeprefix("module."): v for k, v in state.items()} if isinstance(state, dict) else {}
    if not (any(k.startswith(AUDIO) for k in state) and any(k.startswith(TEXT) for k in state)):
        raise KeyError(f"{source}: not a LAION-CLAP checkpoint (no audio_branch. / text_branch. keys)")
    return state


def _count(state: dict, pattern: str) -> int:
    """Number of distinct integers captured by `pattern` over the keys."""
    return len({m.group(1) for k in state if (m := re.match(pattern, k))})


def build_from_laion_state_dict(state: dict[str, torch.Tensor], source: str = "checkpoint") -> CLAPModel:
    """An (untrained) `CLAPModel` whose geometry matches a stripped LAION state dict.

    Raises:
        ValueError: if the audio branch is not HTSAT (e.g. LAION's PANN towers).
    """
    if f"{AUDIO}patch_embed.proj.weight" not in state:
        raise ValueError(f"{source}: only HTSAT LAION checkpoints are supported (no audio_branch.patch_embed)")
    fused = f"{AUDIO}patch_embed.mel_conv2d.weight" in state
    embed_dim = state[f"{AUDIO}patch_embed.proj.weight"].shape[0]
    num_stages = _count(state, rf"{re.escape(AUDIO)}layers\.(\d+)\.")
    depths = tuple(_count(state, rf"{re.escape(AUDIO)}layers\.{s}\.blocks\.(\d+)\.") for s in range(num_stages))
    tables = [state[f"{AUDIO}layers.{s}.blocks.0.attn.relative_position_bias_table"] for s in range(num_stages)]
    num_heads = tuple(table.shape[1] for table in tables)
    window = (math.isqrt(tables[0].shape[0]) + 1) // 2  # table rows = (2w - 1)^2
    num_mel_bins = state[f"{AUDIO}bn0.weight"].shape[0]
    patch_size = state[f"{AUDIO}patch_embed.proj.weight"].shape[-1]
    spec_size = LAION_SPEC_SIZE
    first_mask = state.get(f"{AUDIO}layers.0.blocks.1.attn_mask")  # (num_windows, w*w, w*w) of stage 0
    if first_mask is not None:
        spec_size = math.isqrt(first_mask.shape[0]) * window * patch_size
    audio_encoder = HTSATEncoder(embed_dim=embed_dim, depths=depths, num_heads=num_heads, window_size=window,
                                 spec_size=spec_size, num_mel_bins=num_mel_bins, patch_size=patch_size,
                                 enable_fusion=fused)

    words = state[f"{TEXT}embeddings.word_embeddings.weight"]
    hidden = words.shape[1]
    text_encoder = RobertaEncoder(
        vocab_size=words.shape[0], hidden_size=hidden,
        num_layers=_count(state, rf"{re.escape(TEXT)}encoder\.layer\.(\d+)\."),
        num_heads=max(1, hidden // ROBERTA_HEAD_DIM),
        intermediate_size=state[f"{TEXT}encoder.layer.0.intermediate.dense.weight"].shape[0],
        max_position_embeddings=state[f"{TEXT}embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=state[f"{TEXT}embeddings.token_type_embeddings.weight"].shape[0],
        layer_norm_eps=LAION_TEXT_EPS,
    )
    frontend = LogMelFrontend(**LAION_AUDIO, n_mels=num_mel_bins, mel_scale="htk" if fused else "slaney",
                              norm=None if fused else "slaney")
    return CLAPModel(audio_encoder, text_encoder, frontend, embed_dim=state["audio_projection.0.weight"].shape[0],
                     clip_samples=LAION_CLIP_SAMPLES)


def laion_to_clap_state_dict(state: dict[str, torch.Tensor], source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Stripped LAION keys -> `CLAPModel` keys. Raises KeyError listing keys neither mapped nor in
    `LAION_DROPPED`."""
    out, unknown = {}, []
    text, text_unknown = hf_text_to_roberta(state, prefix=TEXT)
    out.update({f"text_encoder.{k}": v for k, v in text.items()})
    for key, tensor in state.items():
        if key.startswith(TEXT) or _DROPPED.fullmatch(key):
            continue
        projection = re.fullmatch(r"(audio|text)_projection\.([02])\.(weight|bias)", key)
        if key.startswith(AUDIO):
            out["audio_encoder." + key[len(AUDIO):]] = tensor
        elif projection:
            tower, index, kind = projection.groups()
            out[f"{tower}_projection.linear{1 if index == '0' else 2}.{kind}"] = tensor
        elif key in ("logit_scale_a", "logit_scale_t"):
            out[key] = tensor.reshape(1)
        else:
            unknown.append(key)
    unknown += [k for k in text_unknown if not _DROPPED.fullmatch(k)]
    if unknown:
        raise KeyError(f"{source}: {len(unknown)} unexpected LAION keys {sorted(unknown)[:10]}")
    return out


def load_laion_checkpoint(checkpoint, source: str = "checkpoint") -> CLAPModel:
    """`CLAPModel` (eval mode) from a LAION-CLAP `.pt`: a path (read with torch.load(weights_only=True))
    or the loaded object. No tokenizer is attached (LAION files carry none): set
    `model.tokenizer_path` to roberta-base's tokenizer.json for `embed_text`.

    Raises:
        KeyError: not a LAION checkpoint, or unexpected / missing keys (listed).
        ValueError: a non-HTSAT audio branch.
    """
    if isinstance(checkpoint, (str, Path)):
        source, checkpoint = str(checkpoint), torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = laion_state_dict(checkpoint, source)
    model = build_from_laion_state_dict(state, source)
    load_state_dict_strict(model, laion_to_clap_state_dict(state, source), source)
    return model.eval()
