"""ONNX export of a CLAP model's two encoders (`python -m clap_train.export SOURCE OUT --format onnx`).

OUT receives
- `audio_encoder.onnx`: `features` (B, C, T, F) float32 dB log-mel (C = 1 unfused; C = 4 fused, the
  [global, front, middle, back] views) and, fused only, `is_longer` (B,) bool -> `audio_embeds` (B, D);
- `text_encoder.onnx`: `input_ids`, `attention_mask` (B, L) int64 -> `text_embeds` (B, D);
- `onnx_export.json`: the front-end settings (`LogMelFrontend.config()`), clip_samples, embed_dim and
  the input names, so a runtime can compute the log-mel the same way.
Embeddings are unit-norm, as `CLAPModel.encode_audio` / `encode_text`; the batch axis is dynamic (and L; T is the
model window's frame count).

The fused tower picks the rows it fuses with `is_longer` (`torch.nonzero`), a data-dependent shape that a
traced graph would freeze. `OnnxAudioEncoder` computes the same embedding densely instead: every row's
fused patch tokens, then `where(is_longer, fused, plain)`; the fusion block is per row in eval mode, so
each row's result is unchanged. The text tower's padding trim (`trim_padding`) leaves the output
unchanged, so tracing with a full-length row records no trim at all.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from clap_train.models.audio.htsat import gather_tokens, inverse_permutation, window_order

OPSET = 17


class OnnxAudioEncoder(nn.Module):
    """features (B, C, T, F) [+ is_longer (B,) bool, fused] -> unit-norm (B, D), without data-dependent shapes."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.fused = bool(model.audio_encoder.enable_fusion)

    def patch_tokens(self, image: torch.Tensor, is_longer: torch.Tensor | None) -> torch.Tensor:
        embed = self.model.audio_encoder.patch_embed
        x = embed.proj(image[:, :1])  # (B, D, G, G)
        if self.fused:
            batch, _, height, width = image.shape
            local = embed.mel_conv2d(image[:, 1:4].reshape(batch * 3, 1, height, width))  # (B*3, D, G, g)
            _, dim, grid_h, grid_w = local.shape
            local = local.view(batch, 3, dim, grid_h, grid_w).permute(0, 2, 3, 1, 4).flatten(3)  # (B, D, G, 3g)
            local = F.pad(local, (0, x.shape[-1] - local.shape[-1]))  # (B, D, G, G)
            x = torch.where(is_longer.reshape(-1, 1, 1, 1), embed.fusion_model(x, local), x)
        return embed.norm(x.flatten(2).transpose(1, 2))  # (B, G*G, D)

    def forward(self, features: torch.Tensor, is_longer: torch.Tensor | None = None) -> torch.Tensor:
        encoder = self.model.audio_encoder
        if not self.fused:
            features = features[:, :1]
        x = encoder.bn0(features.transpose(1, 3)).transpose(1, 3)  # BatchNorm2d over F
        x = self.patch_tokens(encoder._fold(x), is_longer)
        order = window_order(encoder.patch_embed.grid_size, encoder.layers[0].blocks[0].window, device=x.device)
        x = gather_tokens(x, order, inverse_permutation(order))
        for stage in encoder.layers:
            for block in stage.blocks:
                x = block(x)
            if stage.downsample is not None:
                x = stage.downsample(x)
        pooled = encoder.norm(x).mean(dim=1)  # (B, output_dim)
        return F.normalize(self.model.audio_projection(pooled), dim=-1)


class OnnxTextEncoder(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(input_ids, attention_mask)


def example_inputs(model: nn.Module, batch: int = 2) -> tuple[tuple, tuple]:
    """(audio inputs, text inputs) to trace with: a full window of frames; a text mask whose first row is
    all real tokens (so no padding trim is recorded)."""
    audio = model.audio_encoder
    frames = model.frontend.num_frames(model.clip_samples)
    channels = 4 if audio.enable_fusion else 1
    features = torch.randn(batch, channels, frames, audio.num_mel_bins, generator=torch.Generator().manual_seed(0))
    audio_inputs = (features * 10 - 30, torch.tensor([True, False] * (batch // 2) + [True] * (batch % 2)))
    length = 16
    input_ids = torch.randint(5, model.text_encoder.vocab_size, (batch, length), generator=torch.Generator().manual_seed(1))
    input_ids[:, 0] = 0
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    attention_mask[1:, length // 2:] = 0
    input_ids[1:, length // 2:] = model.text_encoder.pad_token_id
    return audio_inputs if audio.enable_fusion else audio_inputs[:1], (input_ids, attention_mask)


def export_onnx(model: nn.Module, out_dir: str | Path) -> Path:
    """Write `audio_encoder.onnx`, `text_encoder.onnx` and `onnx_export.json` (module docstring) into `out_dir`.

    Raises:
        TypeError: for towers other than HTSAT + RoBERTa.
    """
    import warnings

    if type(model.audio_encoder).__name__ != "HTSATEncoder" or type(model.text_encoder).__name__ != "RobertaEncoder":
        raise TypeError(f"ONNX export supports HTSAT + RoBERTa models, got {type(model.audio_encoder).__name__} + "
                        f"{type(model.text_encoder).__name__}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval().float().cpu()  # the wrappers below are eval too: export restores their mode on exit
    audio_inputs, text_inputs = example_inputs(model)
    fused = bool(model.audio_encoder.enable_fusion)
    audio_names = ["features", "is_longer"] if fused else ["features"]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python ints: constants by design here
        torch.onnx.export(OnnxAudioEncoder(model).eval(), audio_inputs, out / "audio_encoder.onnx", dynamo=False,
                          input_names=audio_names, output_names=["audio_embeds"], opset_version=OPSET,
                          dynamic_axes={"features": {0: "batch"}, "is_longer": {0: "batch"},
                                        "audio_embeds": {0: "batch"}} if fused else
                          {"features": {0: "batch"}, "audio_embeds": {0: "batch"}})
        torch.onnx.export(OnnxTextEncoder(model).eval(), text_inputs, out / "text_encoder.onnx", dynamo=False,
                          input_names=["input_ids", "attention_mask"], output_names=["text_embeds"],
                          opset_version=OPSET, dynamic_axes={"input_ids": {0: "batch", 1: "length"},
                                                             "attention_mask": {0: "batch", 1: "length"},
                                                             "text_embeds": {0: "batch"}})
    info = {"frontend": model.frontend.config(), "clip_samples": model.clip_samples, "embed_dim": model.embed_dim,
            "enable_fusion": fused, "audio_inputs": audio_names, "text_inputs": ["input_ids", "attention_mask"],
            "opset": OPSET}
    (out / "onnx_export.json").write_text(json.dumps(info, indent=2))
    return out
