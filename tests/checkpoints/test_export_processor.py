"""An exported 48 kHz model used as transformers users use it: ClapProcessor(audio=...) -> ClapModel.

The front ends are the real `htsat_tiny_roberta(_fusion)` presets (48 kHz, 10 s windows, 64 mels); the
towers are shrunk by overrides so the test runs in seconds. Waveforms are short (padded) and long
(cropped, or fused), and the processor's random crop choices are recorded so that our side sees the
same window.
"""

import json
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from transformers import ClapModel, ClapProcessor

from clap_train import load_model
from clap_train.data.tokenizer import train_bpe_tokenizer
from clap_train.export import main
from clap_train.inference import embed_audio
from clap_train.signal.fusion import build_fusion_features
from tests._weights import randomise_
from tests.checkpoints._clap import hf_features

CONF = Path(__file__).resolve().parents[2] / "conf" / "model"
RATE = 48000
SHRINK = {"audio_encoder": {"embed_dim": 8, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2], "drop_path_rate": 0.0},
          "text_encoder": {"vocab_size": 300, "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                           "intermediate_size": 64, "max_position_embeddings": 80}}


def preset(name: str) -> dict:
    config = OmegaConf.load(CONF / f"{name}.yaml")
    if "defaults" in config:  # the fused preset extends the unfused one
        base = OmegaConf.load(CONF / "htsat_tiny_roberta.yaml")
        config = OmegaConf.merge(base, {k: v for k, v in config.items() if k != "defaults"})
    config = OmegaConf.merge(config, SHRINK)
    return OmegaConf.to_container(OmegaConf.create({"model": config}), resolve=True)["model"]


@pytest.fixture(scope="module", params=["htsat_tiny_roberta", "htsat_tiny_roberta_fusion"])
def exported(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("export48k")
    train_bpe_tokenizer(["a dog barks twice", "rain on a tin roof"] * 20, vocab_size=300).save(str(root / "tok.json"))
    config = preset(request.param)
    model = instantiate(config)
    torch.manual_seed(0)
    randomise_(model)
    torch.save({"clap_train_config": {"model": config, "data": {"tokenizer": str(root / "tok.json")}},
                "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, root / "last.ckpt")
    main([str(root / "last.ckpt"), str(root / "hf")])
    hf = ClapModel.from_pretrained(root / "hf").eval()
    return load_model(root / "last.ckpt"), hf, ClapProcessor.from_pretrained(root / "hf"), root / "hf"


def waves() -> tuple[np.ndarray, np.ndarray]:
    """A 3.7 s clip (padded to 10 s) and a 13.3 s one (cropped, or fused), noise plus a tone."""
    rng = np.random.default_rng(0)
    short, long = (rng.standard_normal(n).astype(np.float32) * 0.1 for n in (177_600, 638_400))
    long += 0.3 * np.sin(2 * np.pi * 440 * np.arange(len(long)) / RATE).astype(np.float32)
    return short, long


def recorded(monkeypatch, name: str) -> list:
    """Record what numpy.random.<name> returns while the processor draws its crops."""
    draws, original = [], getattr(np.random, name)

    def record(*args, **kwargs):
        draws.append(original(*args, **kwargs))
        return draws[-1]

    monkeypatch.setattr(np.random, name, record)
    return draws


def test_exported_config_is_integral_and_readable(exported):
    _, _, _, out = exported
    _, info = ClapModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    prep = json.loads((out / "preprocessor_config.json").read_text())
    for key in ("max_length_s", "sampling_rate", "hop_length", "fft_window_size", "feature_size"):
        assert isinstance(prep[key], int), (key, prep[key])
    assert prep["max_length_s"] == 10 and prep["sampling_rate"] == RATE
    assert stat.S_IMODE((out / "model.safetensors").stat().st_mode) == 0o644


def test_processor_audio_matches_embed_audio(exported, monkeypatch):
    ours, hf, processor, _ = exported
    fused = ours.audio_encoder.enable_fusion
    short, long = waves()
    draws = recorded(monkeypatch, "choice" if fused else "randint")
    # one batch with both: the extractor forces a random short row into fusion only when none is longer
    inputs = processor(audio=[short, long], sampling_rate=RATE, return_tensors="pt")
    assert inputs["is_longer"].flatten().tolist() == [False, True]
    with torch.no_grad():
        reference = hf_features(hf.get_audio_features(**inputs))
        if fused:  # the processor's front / middle / back crop starts, fed to our fusion features
            features, is_longer = build_fusion_features(long, ours.frontend, ours.clip_samples,
                                                        crop_starts=tuple(int(d) for d in draws))
            assert is_longer
            assert (features - inputs["input_features"][1]).abs().max() < 2e-3  # dB, float32 vs float64 STFT
            long_embed = ours.encode_audio(features[None], torch.tensor([True]))
        else:  # the processor's random 10 s window of the long clip
            start = int(draws[0])
            long_embed = embed_audio(ours, [long[start:start + ours.clip_samples]], RATE)
        short_embed = embed_audio(ours, [short], RATE)
    assert (short_embed[0] - reference[0]).abs().max() < 1e-4
    assert (long_embed[0] - reference[1]).abs().max() < 1e-4
