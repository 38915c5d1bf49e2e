"""Distillation set-up: `+distill.teacher=SOURCE [+distill.weight=W]` wraps the configured loss in a
`DistillationLoss` whose teacher is any `load_model` source, loaded by the build (`clap_train.train`;
docs/losses.md)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torchaudio.functional as AF
from torch import nn

from clap_train.data.tokenizer import CaptionTokenizer
from clap_train.losses.distill import DistillationLoss

DISTILL_KEYS = ("teacher", "weight")


class Teacher(nn.Module):
    """A frozen CLAP model that embeds training batches without gradient, always in eval mode.

    Args:
        model: a `CLAPModel` (from `load_model`).
        sample_rate: the rate of the batch waveforms (the student's); resampled to the teacher's own.
        tokenizer_path: the batch's tokenizer; when the teacher has a different `tokenizer_path`, the
            captions are tokenised again with the teacher's.
    Embedding runs in whatever precision the caller runs (autocast under bf16-mixed; a bf16-true module
    casts the teacher with the student), so the teacher runs in the student's precision.
    """

    def __init__(self, model: nn.Module, sample_rate: int, tokenizer_path: str | None = None):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.sample_rate = sample_rate
        own = getattr(model, "tokenizer_path", None)
        self.tokenizer = CaptionTokenizer(own) if own and str(own) != str(tokenizer_path) else None

    def train(self, mode: bool = True) -> Teacher:  # the teacher never trains (no dropout, no SpecAugment)
        super().train(False)
        return self

    @torch.no_grad()
    def forward(self, batch: Mapping) -> dict[str, torch.Tensor]:
        """{'teacher_audio', 'teacher_text' (B, D_t), 'teacher_logit_scale' ()} for the batch's rows."""
        inputs = {key: batch[key] for key in ("waveform", "features", "is_longer") if key in batch}
        if "waveform" in inputs and self.model.frontend.sample_rate != self.sample_rate:
            wave = inputs["waveform"]
            wave = wave.float() / 32767 if wave.dtype == torch.int16 else wave
            inputs["waveform"] = AF.resample(wave, self.sample_rate, self.model.frontend.sample_rate)
        if self.tokenizer is not None:
            tokens = self.tokenizer(batch["captions"])
            inputs.update({key: value.to(batch["input_ids"].device) for key, value in tokens.items()})
        else:
            inputs.update(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        embeds = self.model(inputs)
        return {"teacher_audio": embeds["audio_embeds"], "teacher_text": embeds["text_embeds"],
                "teacher_logit_scale": self.model.logit_scale_a.exp().squeeze()}


def check_distill_config(distill: Mapping) -> None:
    """Raise ValueError naming `distill.teacher` for unknown `distill.*` keys or a missing teacher."""
    unknown = sorted(set(distill) - set(DISTILL_KEYS))
    if unknown or not distill.get("teacher"):
        raise ValueError(f"distill: needs distill.teacher=SOURCE (a load_model source) and optionally "
                         f"distill.weight; got keys {sorted(distill)}")


def with_distillation(loss: nn.Module, teacher: nn.Module, weight: float, sample_rate: int,
                      tokenizer_path: str | None = None) -> DistillationLoss:
    """A `DistillationLoss` around `loss` with `teacher` (a loaded CLAP model) frozen in a `Teacher`."""
    return DistillationLoss(loss, weight=weight, teacher=Teacher(teacher, sample_rate, tokenizer_path))
