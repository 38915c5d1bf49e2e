"""Key maps between transformers' CLAP audio encoder (CLAP_SPEC §8.2) and `HTSATEncoder`.

`HTSATEncoder` uses LAION's parameter names, so the HF -> own map is the inverse of HF's
LAION -> HF conversion (CLAP_SPEC §8.3): rename the block sub-modules and concatenate the separate
query / key / value projections into one `qkv`. HF's `relative_position_index` buffers are
derived constants and are dropped (the encoder computes them).
"""

from __future__ import annotations

import re

import torch

HF_AUDIO_PREFIX = "audio_encoder."  # ClapAudioModel; ClapModel nests it under "audio_model."

# (HF name, own name) for the renames inside a Swin block, applied to the part after "layers.{s}.blocks.{b}."
_BLOCK_RENAMES = (
    ("layernorm_before.", "norm1."),
    ("layernorm_after.", "norm2."),
    ("attention.self.relative_position_bias_table", "attn.relative_position_bias_table"),
    ("attention.output.dense.", "attn.proj."),
    ("intermediate.dense.", "mlp.fc1."),
    ("output.dense.", "mlp.fc2."),
)
_TOP_RENAMES = (("batch_norm.", "bn0."),)
_QKV = ("query", "key", "value")
_BLOCK_KEY = re.compile(r"^(layers\.\d+\.blocks\.\d+\.)(.*)$")


def hf_audio_to_htsat(state_dict: dict[str, torch.Tensor], prefix: str = HF_AUDIO_PREFIX) -> dict[str, torch.Tensor]:
    """Convert the audio-encoder entries of an HF state dict to `HTSATEncoder.state_dict()` names.

    Args:
        state_dict: an HF `ClapAudioModel` (prefix "audio_encoder.") or `ClapModel` (prefix
            "audio_model.audio_encoder.") state dict; keys outside `prefix` are ignored.
        prefix: where the audio encoder sits in `state_dict`.
    Returns:
        A new dict, ready for `HTSATEncoder.load_state_dict(..., strict=True)`.
    Raises:
        ValueError: if a key under `prefix` has no counterpart, or a q/k/v triple is incomplete.
    """
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}  # "layers.s.blocks.b.attn.qkv.weight" -> {"query": ...}
    for full_key, tensor in state_dict.items():
        if not full_key.startswith(prefix):
            continue
        key = full_key[len(prefix):]
        block = _BLOCK_KEY.match(key)
        if block is None:
            out[_rename(key, _TOP_RENAMES)] = tensor
            continue
        head, rest = block.groups()
        if rest.endswith("relative_position_index"):
            continue
        qkv_match = re.fullmatch(r"attention\.self\.(query|key|value)\.(weight|bias)", rest)
        if qkv_match:
            part, kind = qkv_match.groups()
            qkv.setdefault(f"{head}attn.qkv.{kind}", {})[part] = tensor
            continue
        renamed = _rename(rest, _BLOCK_RENAMES)
        if renamed == rest:
            raise ValueError(f"unexpected HF audio key {full_key!r}")
        out[head + renamed] = tensor
    for key, parts in qkv.items():
        if set(parts) != set(_QKV):
            raise ValueError(f"incomplete query/key/value for {key!r}: have {sorted(parts)}")
        out[key] = torch.cat([parts[name] for name in _QKV])  # rows: q, k, v
    return out


def htsat_to_hf_audio(state_dict: dict[str, torch.Tensor], prefix: str = HF_AUDIO_PREFIX) -> dict[str, torch.Tensor]:
    """Inverse of `hf_audio_to_htsat`: `HTSATEncoder` names -> HF names under `prefix`, splitting `qkv`
    into thirds. The HF `relative_position_index` buffers are not produced (HF rebuilds them at init;
    load with strict=False or fill them from a fresh HF model)."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        block = _BLOCK_KEY.match(key)
        if block is None:
            out[prefix + _rename(key, tuple((own, hf) for hf, own in _TOP_RENAMES))] = tensor
            continue
        head, rest = block.groups()
        qkv_match = re.fullmatch(r"attn\.qkv\.(weight|bias)", rest)
        if qkv_match:
            for name, chunk in zip(_QKV, tensor.chunk(3)):
                out[f"{prefix}{head}attention.self.{name}.{qkv_match.group(1)}"] = chunk
            continue
        out[prefix + head + _rename(rest, tuple((own, hf) for hf, own in _BLOCK_RENAMES))] = tensor
    return out


def _rename(key: str, renames: tuple[tuple[str, str], ...]) -> str:
    """Apply the first rename whose source is a prefix of `key` (keys are unambiguous by prefix)."""
    for old, new in renames:
        if key.startswith(old):
            return new + key[len(old):]
    return key
