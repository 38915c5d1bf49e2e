"""Key maps between transformers' RoBERTa names (`RobertaModel`, CLAP's `text_model`, LAION's
`text_branch`) and `RobertaEncoder`.

`RobertaEncoder` flattens each layer's sub-modules (`layers.{i}.query`, `attn_out`, `ffn_in`, ...);
the map is a one-to-one rename. HF's `position_ids` / `token_type_ids` buffers are derived
constants and are dropped by name.
"""

from __future__ import annotations

import re

import torch

# (HF name, own name), applied to the part after "encoder.layer.{i}." -> "layers.{i}."
_LAYER_RENAMES = (
    ("attention.self.query.", "query."),
    ("attention.self.key.", "key."),
    ("attention.self.value.", "value."),
    ("attention.output.dense.", "attn_out."),
    ("attention.output.LayerNorm.", "attn_norm."),
    ("intermediate.dense.", "ffn_in."),
    ("output.dense.", "ffn_out."),
    ("output.LayerNorm.", "ffn_norm."),
)
_TOP_RENAMES = (
    ("embeddings.word_embeddings.", "embeddings.word_embeddings."),
    ("embeddings.position_embeddings.", "embeddings.position_embeddings."),
    ("embeddings.token_type_embeddings.", "embeddings.token_type_embeddings."),
    ("embeddings.LayerNorm.", "embeddings.layer_norm."),
    ("pooler.dense.", "pooler."),
)
HF_TEXT_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")  # derived, dropped on load
_HF_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.*)$")
_OWN_LAYER = re.compile(r"^layers\.(\d+)\.(.*)$")


def hf_text_to_roberta(state_dict: dict[str, torch.Tensor], prefix: str = "") -> tuple[dict, list[str]]:
    """Convert the RoBERTa entries of an HF state dict under `prefix` to `RobertaEncoder` names.

    Args:
        state_dict: any state dict; only keys starting with `prefix` are read (e.g. "text_model."
            for `ClapModel`, "text_branch." for LAION, "" or "roberta." for a RoBERTa checkpoint).
        prefix: where the RoBERTa model sits.
    Returns:
        (converted dict, unknown keys): keys under `prefix` that are neither RoBERTa parameters nor
        the derived buffers, with the prefix kept, for the caller to reject or report.
    """
    out, unknown = {}, []
    for full_key, tensor in state_dict.items():
        if not full_key.startswith(prefix):
            continue
        key = full_key[len(prefix):]
        if key in HF_TEXT_BUFFERS:
            continue
        renamed = _rename_text(key, _TOP_RENAMES, _LAYER_RENAMES, _HF_LAYER, "layers")
        if renamed is None:
            unknown.append(full_key)
        else:
            out[renamed] = tensor
    return out, unknown


def roberta_to_hf_text(state_dict: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Inverse of `hf_text_to_roberta`: `RobertaEncoder.state_dict()` -> HF names under `prefix`.
    The derived buffers are not produced. Raises ValueError on a key `RobertaEncoder` does not have."""
    out = {}
    top = tuple((own, hf) for hf, own in _TOP_RENAMES)
    layer = tuple((own, hf) for hf, own in _LAYER_RENAMES)
    for key, tensor in state_dict.items():
        renamed = _rename_text(key, top, layer, _OWN_LAYER, "encoder.layer")
        if renamed is None:
            raise ValueError(f"unexpected RobertaEncoder key {key!r}")
        out[prefix + renamed] = tensor
    return out


def _rename_text(key, top, layer, layer_pattern, layer_head) -> str | None:
    match = layer_pattern.match(key)
    if match is not None:
        index, rest = match.groups()
        for old, new in layer:
            if rest.startswith(old):
                return f"{layer_head}.{index}.{new}{rest[len(old):]}"
        return None
    for old, new in top:
        if key.startswith(old):
            return new + key[len(old):]
    return None
