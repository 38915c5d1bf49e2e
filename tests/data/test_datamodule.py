"""CLAPDataModule: epoch length, equal batches, per-epoch and resume seeds, int16, caption pools, and the
fusion path training a fused model end to end under Lightning."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from clap_train.data.datamodule import CLAPDataModule
from clap_train.losses.contrastive import ClipLoss
from clap_train.signal.audio_ops import int16_roundtrip, int16_to_float
from clap_train.signal.frontend import LogMelFrontend
from clap_train.training.module import CLAPModule
from data_pipelines.keyword_to_caption import TemplateCaptioner, augment_shards
from tests.data.conftest import CLIP_SAMPLES, SAMPLE_RATE

REPO = Path(__file__).resolve().parents[2]
FUSION_FRONTEND = {"n_fft": 512, "hop_length": 160, "n_mels": 16, "f_min": 50, "f_max": 8000}


def _datamodule(tokenizer_path, train_dir, val_dir=None, trainer=None, **kwargs) -> CLAPDataModule:
    args = {"batch_size": 4, "num_workers": 0, "shuffle_buffer": 8, "seed": 3, **kwargs}
    dm = CLAPDataModule(str(train_dir / "train-*.tar"), {"val": str((val_dir or train_dir) / "train-*.tar")},
                        tokenizer_path, SAMPLE_RATE, CLIP_SAMPLES, **args)
    dm.trainer = trainer
    dm.setup("fit")
    return dm


def _fake_trainer(epoch=0, step=0, rank=0, world=1):
    return SimpleNamespace(current_epoch=epoch, global_step=step, global_rank=rank, world_size=world)


def _keys(loader) -> list[list[str]]:
    return [batch["key"] for batch in loader]


def test_epoch_length_from_sizes_json_and_from_config(tokenizer_path, source_a):
    dm = _datamodule(tokenizer_path, source_a)
    assert dm.epoch_samples == 48 and dm.batches_per_rank == 12 == len(_keys(dm.train_dataloader()))
    configured = _datamodule(tokenizer_path, source_a, epoch_samples=20, trainer=_fake_trainer(world=2))
    assert configured.batches_per_rank == 2 == len(_keys(configured.train_dataloader()))
    with pytest.raises(ValueError, match="data.epoch_samples"):
        _datamodule(tokenizer_path, source_a, epoch_samples=0)
    with pytest.raises(ValueError, match="data.train_weights"):
        _datamodule(tokenizer_path, source_a, train_weights=[1.0, 2.0])


def test_equal_batch_counts_on_every_rank(tokenizer_path, one_shard):
    counts = [len(_keys(_datamodule(tokenizer_path, one_shard, epoch_samples=37,
                                    trainer=_fake_trainer(rank=r, world=3)).train_dataloader())) for r in range(3)]
    assert counts == [3, 3, 3]


def test_new_order_each_epoch_and_no_replay_after_resume(tokenizer_path, source_a):
    trainer = _fake_trainer()
    dm = _datamodule(tokenizer_path, source_a, trainer=trainer)
    loader = dm.train_dataloader()
    epoch0 = _keys(loader)
    trainer.current_epoch, trainer.global_step = 1, 12
    epoch1 = _keys(loader)  # Lightning iterates the same loader again for the next epoch
    assert epoch0 != epoch1
    # a run that resumes at step 3 of epoch 0 builds a new datamodule; it must not replay batches 0..2
    resumed = _keys(_datamodule(tokenizer_path, source_a, trainer=_fake_trainer(0, 3)).train_dataloader())
    assert resumed[:3] != epoch0[:3]
    restarted = _keys(_datamodule(tokenizer_path, source_a, trainer=_fake_trainer(0, 0)).train_dataloader())
    assert restarted == epoch0  # same seed, epoch and step: the same stream


def test_int16_waveforms_are_quantised(tokenizer_path, source_b):
    """int16 batches carry LAION's q; the front end's reading q / 32767 is the float round trip of the clip."""
    quantised = next(iter(_datamodule(tokenizer_path, source_b, int16=True).train_dataloader()))
    plain = next(iter(_datamodule(tokenizer_path, source_b, int16=False).train_dataloader()))
    assert quantised["key"] == plain["key"]  # same seed, same clips and crops
    assert quantised["waveform"].dtype == torch.int16 and quantised["waveform"].abs().max() > 3000
    assert torch.equal(int16_to_float(quantised["waveform"]), int16_roundtrip(plain["waveform"].flatten()).view_as(plain["waveform"]))
    frontend = LogMelFrontend(16000, 512, 160, 32, 0, 8000)
    assert torch.equal(frontend(quantised["waveform"]), frontend(int16_to_float(quantised["waveform"])))


def test_augmented_caption_pool_from_keyword_to_caption(tokenizer_path, source_b, tmp_path):
    augmented = tmp_path / "aug"
    augment_shards(sorted(str(p) for p in source_b.glob("train-*.tar")), augmented, TemplateCaptioner(), 0.0)
    for probs, prefix in (({"augmented": 1.0}, "the sound of"), ({"original": 1.0}, "b ")):
        dm = _datamodule(tokenizer_path, augmented, caption_probs=probs)
        batch = next(iter(dm.train_dataloader()))
        texts = dm.tokenizer._tokenizer.decode_batch(batch["input_ids"].tolist())
        assert len(texts) == 4 and all(t.startswith(prefix) for t in texts), texts


def _fused_model():
    cfg = OmegaConf.load(REPO / "conf/model/debug.yaml")
    cfg.frontend.update(sample_rate=SAMPLE_RATE, mel_scale="htk", norm=None, **FUSION_FRONTEND)
    cfg.audio_encoder = {"_target_": "clap_train.models.audio.htsat.HTSATEncoder", "embed_dim": 16,
                         "depths": [2, 2, 2], "num_heads": [1, 2, 4], "window_size": 4, "spec_size": 64,
                         "num_mel_bins": 16, "enable_fusion": True}
    cfg.text_encoder.vocab_size = 300
    return instantiate(cfg)


class _KeyRecorder(L.Callback):
    def __init__(self):
        self.keys = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        assert batch["features"].shape == (4, 4, CLIP_SAMPLES // 160 + 1, 16) and "waveform" not in batch
        self.keys.append(batch["key"])


def _fit(dm, model, max_steps, root, ckpt_path=None) -> list[list[str]]:
    recorder = _KeyRecorder()
    module = CLAPModule(model, ClipLoss(), lambda params: torch.optim.AdamW(params, lr=1e-3), val_names=["val"])
    trainer = L.Trainer(accelerator="cpu", max_steps=max_steps, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                        default_root_dir=root, callbacks=[recorder])
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    assert trainer.global_step == max_steps
    return recorder.keys


@pytest.mark.slow  # two short Lightning fits: 1-25 s on the shared 2-core box
def test_fused_model_trains_and_resumes_without_replay(tokenizer_path, source_a, tmp_path, capsys):
    model = _fused_model()
    fusion = {"truncation": "fusion", "frontend": model.frontend}  # data.frontend: ${model.frontend}
    longer = {}
    for batch in _datamodule(tokenizer_path, source_a, **fusion).val_dataloader()[0]:
        assert batch["features"].shape[1:] == (4, CLIP_SAMPLES // 160 + 1, 16) and "waveform" not in batch
        longer.update(zip(batch["key"], batch["is_longer"].tolist()))
    # clip i lasts 0.2, 0.4 or 0.6 s for i % 3 = 0, 1, 2; the window is 0.4 s
    assert longer == {f"a_{i:04d}": i % 3 == 2 for i in range(48)}

    first = _fit(_datamodule(tokenizer_path, source_a, **fusion), model, 3, tmp_path)
    assert "0 bad training samples skipped" in capsys.readouterr().out  # the rank-0 end-of-epoch line
    checkpoint = next((tmp_path / "checkpoints").glob("*.ckpt"))
    resumed = _fit(_datamodule(tokenizer_path, source_a, **fusion), _fused_model(), 5, tmp_path, str(checkpoint))
    assert len(first) == 3 and len(resumed) == 2 and resumed != first[:2]


def test_start_up_check_fusion_flag_and_front_end_agree(tokenizer_path, source_a):
    model = _fused_model()
    fused = _datamodule(tokenizer_path, source_a, truncation="fusion", frontend=model.frontend)
    fused.check_model(True, model.frontend.config())
    with pytest.raises(ValueError, match="enable_fusion=False needs data.truncation rand_trunc or head"):
        fused.check_model(False, model.frontend.config())
    with pytest.raises(ValueError, match="enable_fusion=True needs data.truncation=fusion"):
        _datamodule(tokenizer_path, source_a).check_model(True, model.frontend.config())
    with pytest.raises(ValueError, match=r"data.frontend differs from model.frontend in \['n_mels'\]"):
        fused.check_model(True, {**model.frontend.config(), "n_mels": 8})
    with pytest.raises(ValueError, match="data.frontend: truncation 'fusion'"):
        _datamodule(tokenizer_path, source_a, truncation="fusion")
