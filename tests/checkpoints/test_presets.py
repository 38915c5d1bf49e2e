"""conf/model presets and the htsat_roberta experiment compose and instantiate at the published sizes."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

CONF = str(Path(__file__).resolve().parents[2] / "conf")
HEADS = 2 * (768 * 512 + 512 + 512 * 512 + 512)  # two projection heads from 768-d towers
ROBERTA_BASE = 124_645_632  # CLAP_SPEC §1.2
PRESETS = {  # audio tower parameters, CLAP_SPEC §1.2 / docs/towers.md
    "htsat_tiny_roberta": 27_534_488 + ROBERTA_BASE + HEADS + 2,
    "htsat_tiny_roberta_fusion": 27_549_128 + ROBERTA_BASE + HEADS + 2,
    "htsat_base_roberta": 67_824_408 + ROBERTA_BASE + HEADS + 2 + 256 * 512,  # 1024-d audio projection input
}


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        return compose("train", overrides=list(overrides))


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_published_presets_have_the_published_sizes(preset):
    model = instantiate(_compose(f"model={preset}").model)
    assert sum(p.numel() for p in model.parameters()) == PRESETS[preset]


def test_htsat_debug_and_pann_presets_instantiate():
    model = instantiate(_compose("model=htsat_debug").model)
    assert model.audio_encoder.enable_fusion is False and model.frontend.sample_rate == 16000
    config = _compose("model=pann14_roberta").model
    assert config.audio_encoder._target_.endswith("Cnn14Encoder") and config.frontend.mel_scale == "slaney"


def test_htsat_roberta_experiment_composes():
    cfg = _compose("+experiment=htsat_roberta", "data.train_shards='/x/{0..1}.tar'", "data.tokenizer=/x/tok.json")
    assert cfg.run_name == "htsat_roberta" and cfg.module.optimizer.lr == 1e-4
    assert cfg.model.audio_encoder.embed_dim == 96 and cfg.data.sample_rate == 48000
    fused = _compose("+experiment=htsat_roberta", "model=htsat_tiny_roberta_fusion")
    assert fused.model.audio_encoder.enable_fusion and fused.model.frontend.mel_scale == "htk"
