"""Initialising towers for pretraining from pretrained single-modality checkpoints.

Selected per tower in the run config's `init` block, one knob each:
    init.text_encoder=/path/to/roberta-base              # a transformers RoBERTa directory
    init.audio_encoder=/path/to/HTSAT_AudioSet.ckpt      # the HTSAT repo's Lightning checkpoint

`init_towers` is the build's one init step (`clap_train.train.build`), run on the freshly built model:
towers never read files themselves, so checkpoints -> models is the only import direction. Tensors whose (converted) name
and shape match the tower are copied; the rest is listed in an `InitReport` and logged: file keys the
tower has no use for (RoBERTa's `lm_head`, HTSAT's `tscam_conv` / `head` / STFT constants) are
skipped, tower parameters the file lacks (RoBERTa checkpoints have no `pooler`; AudioSet HTSAT has
no fusion layers) keep their fresh initialisation. A matching name with a different shape is a
configuration error and raises. `load_model` needs none of this (a checkpoint has the trained weights).
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from clap_train.checkpoints.hf_text import hf_text_to_roberta
from clap_train.checkpoints.state_dict import read_state_dict
from clap_train.models.audio.htsat import HTSATEncoder
from clap_train.models.audio.whisper import WhisperEncoder
from clap_train.models.text.modernbert import ModernBertEncoder
from clap_train.models.text.roberta import RobertaEncoder

log = logging.getLogger(__name__)
HTSAT_PREFIX = "sed_model."  # the HTSAT repo's LightningModule holds the network as `sed_model`
ROBERTA_PREFIX = "roberta."  # RobertaForMaskedLM / hub roberta-base nest the encoder here


@dataclass
class InitReport:
    """What `load_matching` did: `loaded` tower keys, `skipped` file keys, `kept` tower keys left as initialised."""

    source: str
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.source}: loaded {len(self.loaded)} tensors; skipped {len(self.skipped)} file keys "
                f"{self.skipped}; kept initialisation for {len(self.kept)} {self.kept}")


def load_matching(module: nn.Module, state_dict: dict[str, torch.Tensor], source: str,
                  skipped: list[str] | None = None) -> InitReport:
    """Copy the entries of `state_dict` whose names are in `module.state_dict()`.

    Args:
        skipped: file keys the caller already set aside (reported alongside the unknown ones).
    Raises:
        ValueError: if a shared name has a different shape, or nothing matches at all.
    """
    own = module.state_dict()
    wrong = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in state_dict.items()
             if k in own and v.shape != own[k].shape]
    if wrong:
        raise ValueError(f"{source}: pretrained shapes do not match the configured tower: {wrong[:10]}")
    matching = {k: v for k, v in state_dict.items() if k in own}
    if not matching:
        raise ValueError(f"{source}: no tensor matches the tower (file keys start {sorted(state_dict)[:5]})")
    module.load_state_dict(matching, strict=False)
    report = InitReport(source, loaded=sorted(matching), kept=sorted(set(own) - set(matching)),
                        skipped=sorted((skipped or []) + [k for k in state_dict if k not in own]))
    log.info(report.summary())
    return report


def load_pretrained_roberta(encoder: nn.Module, path: str | Path) -> InitReport:
    """Initialise a `RobertaEncoder` from a transformers RoBERTa directory (config.json + model.safetensors
    or pytorch_model.bin; `RobertaModel` or `RobertaForMaskedLM` layout) or a single weights file.

    Raises:
        FileNotFoundError: no weights at `path`. ValueError: see `load_matching`.
    """
    path = Path(path)
    if path.is_dir():
        state = read_state_dict(path)
    elif path.suffix == ".safetensors":
        state = load_file(path)
    elif path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"pretrained RoBERTa: {path} does not exist")
    prefix = ROBERTA_PREFIX if any(k.startswith(ROBERTA_PREFIX) for k in state) else ""
    converted, unknown = hf_text_to_roberta(state, prefix=prefix)
    outside = [k for k in state if not k.startswith(prefix)]  # e.g. lm_head.* of a masked-LM checkpoint
    return load_matching(encoder, converted, str(path), skipped=unknown + outside)


def load_pretrained_htsat(encoder: nn.Module, path: str | Path) -> InitReport:
    """Initialise an `HTSATEncoder` from an AudioSet-pretrained HTSAT checkpoint (the HTSAT repo's `.ckpt`,
    keys `sed_model.*`, or a plain HTSAT state dict), read with torch.load(weights_only=True).

    Raises:
        FileNotFoundError: missing file. ValueError: a file that cannot be read safely, or see `load_matching`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained HTSAT: {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(f"{path}: cannot be loaded with weights_only=True ({error}); re-save only its "
                         "'state_dict' with torch.save on a trusted machine") from error
    state = checkpoint.get("state_dict", checkpoint)
    if any(k.startswith(HTSAT_PREFIX) for k in state):
        outside = [k for k in state if not k.startswith(HTSAT_PREFIX)]
        state = {k[len(HTSAT_PREFIX):]: v for k, v in state.items() if k.startswith(HTSAT_PREFIX)}
    else:
        outside = []
    return load_matching(encoder, state, str(path), skipped=outside)


WHISPER_PREFIXES = ("model.encoder.", "encoder.")  # WhisperForConditionalGeneration, WhisperModel
MODERNBERT_PREFIX = "model."  # ModernBertForMaskedLM nests the encoder here


def _read_weights(path: Path, what: str) -> dict[str, torch.Tensor]:
    """A transformers directory's weights, or one .safetensors / torch file (weights_only)."""
    if path.is_dir():
        return read_state_dict(path)
    if path.suffix == ".safetensors":
        return load_file(path)
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"pretrained {what}: {path} does not exist")


def _load_prefixed(encoder: nn.Module, path: str | Path, prefixes: tuple[str, ...], what: str) -> InitReport:
    """Copy the tensors under the first of `prefixes` the file uses (or all, unprefixed) into `encoder`;
    the file's other keys are reported as skipped."""
    state = _read_weights(Path(path), what)
    prefix = next((p for p in prefixes if any(k.startswith(p) for k in state)), "")
    encoder_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    outside = [k for k in state if not k.startswith(prefix)]
    return load_matching(encoder, encoder_state, str(path), skipped=outside)


def load_pretrained_whisper(encoder: nn.Module, path: str | Path) -> InitReport:
    """Initialise a `WhisperEncoder` from a transformers Whisper directory (or one weights file): the encoder's
    tensors under `model.encoder.` or `encoder.` (or unprefixed), transformers' names; the decoder and
    `proj_out` are skipped and reported. Raises FileNotFoundError, or ValueError (see `load_matching`)."""
    return _load_prefixed(encoder, path, WHISPER_PREFIXES, "Whisper")


def load_pretrained_modernbert(encoder: nn.Module, path: str | Path) -> InitReport:
    """Initialise a `ModernBertEncoder` from a transformers ModernBERT directory (`ModernBertModel`, or
    `ModernBertForMaskedLM` whose `model.` prefix is stripped and `head` / `decoder` skipped) or weights file.
    Raises FileNotFoundError, or ValueError (see `load_matching`)."""
    return _load_prefixed(encoder, path, (MODERNBERT_PREFIX,), "ModernBERT")


# per tower slot: the tower classes a pretrained file can initialise, with their loaders
INIT_LOADERS = {
    "audio_encoder": {HTSATEncoder: load_pretrained_htsat, WhisperEncoder: load_pretrained_whisper},
    "text_encoder": {RobertaEncoder: load_pretrained_roberta, ModernBertEncoder: load_pretrained_modernbert},
}


def init_towers(model: nn.Module, audio_encoder: str | None = None, text_encoder: str | None = None) -> list[InitReport]:
    """Initialise the towers of a freshly built `CLAPModel` from pretrained single-modality files (the
    run config's `init.audio_encoder` / `init.text_encoder`; None leaves a tower as initialised). The
    loader follows the tower's class (`INIT_LOADERS`): HTSAT from an AudioSet checkpoint, Whisper from a
    transformers Whisper directory, RoBERTa / XLM-R and ModernBERT from transformers directories.

    Raises:
        ValueError: naming `init.<tower>` when the tower's class has no pretrained loader, or see
            `load_matching`.
        FileNotFoundError: a missing file.
    """
    reports = []
    for key, path in (("audio_encoder", audio_encoder), ("text_encoder", text_encoder)):
        if not path:
            continue
        tower = getattr(model, key)
        load = INIT_LOADERS[key].get(type(tower))
        if load is None:
            names = sorted(cls.__name__ for cls in INIT_LOADERS[key])
            raise ValueError(f"init.{key}: initialises a {' or '.join(names)}, but model.{key} is a "
                             f"{type(tower).__name__}")
        try:
            reports.append(load(tower, path))
        except (FileNotFoundError, ValueError) as exc:
            raise type(exc)(f"init.{key}: {exc}") from None
    return reports
