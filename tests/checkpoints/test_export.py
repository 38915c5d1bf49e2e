"""clap_train -> export -> transformers ClapModel / ClapProcessor -> the same embeddings."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from transformers import ClapModel, ClapProcessor

from clap_train import load_model
from clap_train.data.tokenizer import train_bpe_tokenizer
from clap_train.export import main
from clap_train.export_hf import export_hf
from clap_train.inference import embed_audio, embed_text
from tests._weights import randomise_
from tests.checkpoints._clap import hf_features

CONF = Path(__file__).resolve().parents[2] / "conf" / "model"
CLIP_SAMPLES = 32000  # 2 s at 16 kHz -> 201 frames, within htsat_debug's 256
CAPTIONS = ["a dog barks twice", "rain on a tin roof", "a low hum"]


def debug_model_config(fused: bool, preset: str = "htsat_debug") -> dict:
    config = OmegaConf.load(CONF / f"{preset}.yaml")
    if fused:
        config.audio_encoder.enable_fusion = True
        config.frontend.mel_scale, config.frontend.norm = "htk", None
    return OmegaConf.to_container(OmegaConf.create({"model": config}), resolve=True)["model"]


def randomise(model: torch.nn.Module) -> None:
    torch.manual_seed(0)
    randomise_(model)


@pytest.fixture(scope="module", params=[False], ids=["unfused"])
def exported(request, tmp_path_factory):
    """A clap_train checkpoint of the htsat_debug preset (random weights), exported with the CLI. Fused models
    export only with 64 mel bins (transformers' fusion features hard-code them): the 48 kHz presets, fused and
    unfused, go through ClapProcessor in test_export_processor.py."""
    from hydra.utils import instantiate

    root = tmp_path_factory.mktemp("export")
    tokenizer = train_bpe_tokenizer([c * 3 for c in CAPTIONS] * 20, vocab_size=300)
    tokenizer.save(str(root / "tokenizer.json"))
    config = debug_model_config(request.param)
    model = instantiate(config)
    randomise(model)
    checkpoint = {"clap_train_config": {"model": config, "data": {"tokenizer": str(root / "tokenizer.json"),
                                                                  "clip_samples": CLIP_SAMPLES}},
                  "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}
    torch.save(checkpoint, root / "last.ckpt")
    main([str(root / "last.ckpt"), str(root / "hf")])
    ours = load_model(root / "last.ckpt")
    hf, info = ClapModel.from_pretrained(root / "hf", output_loading_info=True)
    return ours, hf.eval(), info, root / "hf", request.param


def test_exported_files_load_strictly(exported):
    _, _, info, out, fused = exported
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "preprocessor_config.json",
                                                     "tokenizer.json", "tokenizer_config.json"]
    prep = json.loads((out / "preprocessor_config.json").read_text())
    assert prep["truncation"] == ("fusion" if fused else "rand_trunc") and prep["max_length_s"] == 2 and isinstance(prep["max_length_s"], int)


def test_exported_features_give_same_embeddings(exported):
    ours, hf, _, _, fused = exported
    features = torch.randn(3, 4 if fused else 1, 201, 16, generator=torch.Generator().manual_seed(3)) * 10 - 30
    flags = torch.tensor([True, False, True])
    with torch.no_grad():
        reference = hf_features(hf.get_audio_features(input_features=features, is_longer=flags[:, None]))
        assert (ours.encode_audio(features, flags) - reference).abs().max() < 1e-4


def test_exported_processor_end_to_end(exported):
    ours, hf, _, out, fused = exported
    processor = ClapProcessor.from_pretrained(out)
    text_inputs = processor(text=CAPTIONS, return_tensors="pt", padding=True)
    with torch.no_grad():
        reference = hf_features(hf.get_text_features(**text_inputs))
    assert (embed_text(ours, CAPTIONS) - reference).abs().max() < 1e-4
    if fused:  # HF's extractor forces a random row into fusion for short clips; compared on features above
        return
    wave = np.random.default_rng(0).standard_normal(CLIP_SAMPLES).astype(np.float32) * 0.1
    audio_inputs = processor(audio=[wave], sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        reference = hf_features(hf.get_audio_features(input_features=audio_inputs["input_features"]))
    assert (embed_audio(ours, [wave], 16000) - reference).abs().max() < 1e-4


def test_export_rejects_non_htsat(tmp_path):
    from hydra.utils import instantiate

    with pytest.raises(ValueError, match="only HTSAT"):
        export_hf(instantiate(debug_model_config(False, preset="debug")), tmp_path)


def test_export_cli_user_error_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "missing.ckpt"), str(tmp_path / "hf")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("clap_train.export: error: ") and "missing.ckpt" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "hf").exists()


def test_export_cli_refuses_a_whisper_model_in_one_line(tmp_path, capsys):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    conf = str(Path(__file__).resolve().parents[2] / "conf")
    with initialize_config_dir(config_dir=conf, version_base=None):
        config = OmegaConf.to_container(compose("train", overrides=["model=whisper_debug"]).model, resolve=True)
    model = instantiate(config)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"clap_train_config": {"model": config}, "state_dict": state}, tmp_path / "whisper.ckpt")
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "whisper.ckpt"), str(tmp_path / "hf")])
    assert exit_info.value.code == 2
    assert "WhisperEncoder" in capsys.readouterr().err and not (tmp_path / "hf").exists()
