"""Initialising towers from pretrained RoBERTa directories and AudioSet HTSAT checkpoints."""

import pytest
import torch
from transformers import RobertaConfig, RobertaForMaskedLM

from clap_train import load_model
from clap_train.checkpoints import build_model_from_config
from clap_train.checkpoints.pretrained import init_towers, load_pretrained_htsat, load_pretrained_roberta
from clap_train.models.audio.htsat import HTSATEncoder
from clap_train.models.text.roberta import RobertaEncoder
from tests.checkpoints.test_export import debug_model_config

TEXT = {"vocab_size": 1000, "hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64,
        "max_position_embeddings": 80}
AUDIO = {"embed_dim": 16, "depths": (2, 2, 2), "num_heads": (1, 2, 4), "window_size": 4, "spec_size": 64,
         "num_mel_bins": 16}


@pytest.fixture(scope="module")
def roberta_dir(tmp_path_factory):
    """A tiny masked-LM RoBERTa as the hub's roberta-base is stored (keys roberta.*, lm_head.*, no pooler)."""
    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=80, layer_norm_eps=1e-5, type_vocab_size=1)
    model = RobertaForMaskedLM(config)
    directory = tmp_path_factory.mktemp("roberta")
    model.save_pretrained(directory)
    return directory, model.state_dict()


def test_roberta_from_masked_lm_directory(roberta_dir):
    directory, reference = roberta_dir
    encoder = RobertaEncoder(**TEXT)
    report = load_pretrained_roberta(encoder, directory)
    assert report.kept == ["pooler.bias", "pooler.weight"]  # roberta-base has no pooler: kept as initialised
    assert report.skipped and all(k.startswith("lm_head.") for k in report.skipped)
    assert torch.equal(encoder.layers[1].ffn_in.weight, reference["roberta.encoder.layer.1.intermediate.dense.weight"])
    assert torch.equal(encoder.embeddings.layer_norm.bias, reference["roberta.embeddings.LayerNorm.bias"])


def test_roberta_geometry_mismatch_raises(roberta_dir):
    with pytest.raises(ValueError, match="shapes do not match"):
        load_pretrained_roberta(RobertaEncoder(**{**TEXT, "intermediate_size": 48}), roberta_dir[0])


def _htsat_repo_checkpoint(path, source: HTSATEncoder) -> None:
    """The HTSAT repo's Lightning layout: sed_model.* with its STFT constants and tagging heads."""
    state = {f"sed_model.{k}": v for k, v in source.state_dict().items()}
    state.update({"sed_model.tscam_conv.weight": torch.zeros(5, 64, 2, 3), "sed_model.head.weight": torch.zeros(5, 5),
                  "sed_model.spectrogram_extractor.stft.conv_real.weight": torch.zeros(3, 1, 4)})
    torch.save({"epoch": 10, "global_step": 5, "state_dict": state}, path)


def test_htsat_from_audioset_checkpoint_into_fused_tower(tmp_path):
    torch.manual_seed(1)
    source = HTSATEncoder(**AUDIO)
    _htsat_repo_checkpoint(tmp_path / "htsat.ckpt", source)
    encoder = HTSATEncoder(**AUDIO, enable_fusion=True)
    report = load_pretrained_htsat(encoder, tmp_path / "htsat.ckpt")
    assert sorted(report.skipped) == ["head.weight", "spectrogram_extractor.stft.conv_real.weight",
                                      "tscam_conv.weight"]
    assert report.kept and all(k.startswith(("patch_embed.mel_conv2d", "patch_embed.fusion_model")) for k in report.kept)
    for key, value in source.state_dict().items():
        assert torch.equal(encoder.state_dict()[key], value), key


def test_htsat_with_nothing_matching_raises(tmp_path):
    torch.save({"state_dict": {"sed_model.other.weight": torch.zeros(2)}}, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError, match="no tensor matches"):
        load_pretrained_htsat(HTSATEncoder(**AUDIO), tmp_path / "bad.ckpt")


def test_init_step_names_the_knob_and_old_checkpoints_with_init_paths_still_load(roberta_dir, tmp_path):
    """`init.text_encoder` is applied by the build's init step (`init_towers`), not by the tower; a checkpoint
    written before issue 12 stores `pretrained` inside the tower config and still loads (the key is ignored)."""
    config = debug_model_config(False)
    model = build_model_from_config(config, "test")
    (report,) = init_towers(model, text_encoder=str(roberta_dir[0]))
    assert len(report.loaded) > 0
    assert torch.equal(model.text_encoder.layers[1].ffn_in.weight,
                       roberta_dir[1]["roberta.encoder.layer.1.intermediate.dense.weight"])
    with pytest.raises(ValueError, match="init.audio_encoder: initialises a HTSATEncoder or WhisperEncoder, but model.audio_encoder"):
        init_towers(build_model_from_config(debug_model_config(False, "debug"), "test"), audio_encoder="x.ckpt")
    with pytest.raises(FileNotFoundError, match="init.audio_encoder"):
        init_towers(model, audio_encoder=str(tmp_path / "missing.ckpt"))
    checkpoint = {"clap_train_config": {"model": {**config, "text_encoder": {**config["text_encoder"],
                                                                              "pretrained": "/gone/roberta"}}},
                  "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}
    torch.save(checkpoint, tmp_path / "last.ckpt")
    reloaded = load_model(tmp_path / "last.ckpt")  # the init path is ignored: the checkpoint has the weights
    assert torch.equal(reloaded.text_encoder.layers[0].query.weight, model.text_encoder.layers[0].query.weight)
