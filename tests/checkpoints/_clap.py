"""Shared helpers: random transformers ClapModels, their inputs, and the LAION key layout."""

from __future__ import annotations

import re

import torch
from transformers import ClapConfig, ClapModel

from tests._weights import randomise_

SMALL_AUDIO = {"patch_embeds_hidden_size": 16, "hidden_size": 64, "depths": [2, 2, 2], "num_attention_heads": [1, 2, 4],
               "window_size": 4, "spec_size": 64, "num_mel_bins": 16}
SMALL_TEXT = {"vocab_size": 300, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
              "intermediate_size": 64, "max_position_embeddings": 80}
SMALL_FRAMES = 250  # stretched to 256 = spec_size * freq_ratio, like 1001 -> 1024
TINY_FRAMES = 1001
LONGER_MIXES = {"none": [False, False, False], "some": [True, False, True], "all": [True, True, True]}


def random_hf_clap(audio: dict, text: dict, enable_fusion: bool, projection_dim: int = 24, seed: int = 0,
                   text_eps: float | None = None) -> ClapModel:
    """ClapModel in eval mode with every parameter and BatchNorm statistic random (HF's init zeroes
    the bias tables and leaves BN at identity)."""
    torch.manual_seed(seed)
    text = dict(text) if text_eps is None else {**text, "layer_norm_eps": text_eps}
    config = ClapConfig(audio_config={**audio, "enable_fusion": enable_fusion}, text_config=text,
                        projection_dim=projection_dim)
    model = ClapModel(config).eval()
    randomise_(model)
    return model


def log_mel(batch: int, channels: int, frames: int, bins: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, channels, frames, bins, generator=torch.Generator().manual_seed(seed)) * 10.0 - 30.0


def tokens(batch: int, length: int, vocab: int, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids with <s> first and right padding (pad id 1) of varied lengths."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, vocab, (batch, length), generator=generator)
    input_ids[:, 0] = 0
    mask = torch.ones(batch, length, dtype=torch.long)
    for row in range(batch):
        real = length - 3 * row
        input_ids[row, real - 1] = 2
        input_ids[row, real:] = 1
        mask[row, real:] = 0
    return input_ids, mask


def hf_features(output) -> torch.Tensor:
    """transformers 5.x get_*_features returns an output object whose pooler_output is the embedding."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


# ---- the LAION layout: the inverse of HF's conversion rules (CLAP_SPEC §8.3), plus LAION-only keys ----
_AUDIO_BLOCK = (("layernorm_before", "norm1"), ("layernorm_after", "norm2"),
                ("attention.self.relative_position_bias_table", "attn.relative_position_bias_table"),
                ("attention.self.relative_position_index", "attn.relative_position_index"),
                ("attention.output.dense", "attn.proj"), ("intermediate.dense", "mlp.fc1"),
                ("output.dense", "mlp.fc2"))


def hf_to_laion_layout(hf_state: dict[str, torch.Tensor], extras: bool = True) -> dict[str, torch.Tensor]:
    """HF ClapModel state dict -> a LAION `state_dict` (with `module.` prefixes), written independently of
    clap_train's key maps. `extras` adds the keys LAION has and HF drops (STFT constants, masks, heads...)."""
    out, qkv = {}, {}
    for key, tensor in hf_state.items():
        if key in ("text_model.embeddings.token_type_ids",):
            continue
        key = key.replace("text_model.", "text_branch.").replace("audio_model.audio_encoder.", "audio_branch.")
        key = key.replace("batch_norm.", "bn0.")
        key = re.sub(r"_projection\.linear1\.", "_projection.0.", key)
        key = re.sub(r"_projection\.linear2\.", "_projection.2.", key)
        block = re.match(r"^(audio_branch\.layers\.\d+\.blocks\.\d+\.)(.*)$", key)
        if block:
            head, rest = block.groups()
            part = re.fullmatch(r"attention\.self\.(query|key|value)\.(weight|bias)", rest)
            if part:
                qkv.setdefault(f"{head}attn.qkv.{part.group(2)}", {})[part.group(1)] = tensor
                continue
            for old, new in _AUDIO_BLOCK:
                if rest.startswith(old):
                    rest = new + rest[len(old):]
                    break
            key = head + rest
        out[key] = tensor.clone()
    for key, parts in qkv.items():
        out[key] = torch.cat([parts["query"], parts["key"], parts["value"]])
    if extras:
        width = out["audio_projection.2.weight"].shape[0]
        out.update({
            "audio_branch.spectrogram_extractor.stft.conv_real.weight": torch.randn(9, 1, 16),
            "audio_branch.spectrogram_extractor.stft.conv_imag.weight": torch.randn(9, 1, 16),
            "audio_branch.logmel_extractor.melW": torch.randn(9, 4),
            "audio_branch.layers.0.blocks.1.attn_mask": torch.zeros(16, 16, 16),  # 16 windows of 4x4 on 16x16
            "audio_branch.tscam_conv.weight": torch.randn(5, 4, 2, 3), "audio_branch.tscam_conv.bias": torch.randn(5),
            "audio_branch.head.weight": torch.randn(5, 5), "audio_branch.head.bias": torch.randn(5),
            "audio_transform.sequential.0.weight": torch.randn(width, width),
            "text_transform.sequential.3.bias": torch.randn(width),
        })
    return {f"module.{k}": v for k, v in out.items()}
