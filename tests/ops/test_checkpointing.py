"""Unit tests: atomic writes, step/time triggers, superseded HPC checkpoints, RNG round trip, metadata."""

from __future__ import annotations

import os
import random
import time

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from clap_train.training.checkpointing import (
    AtomicCheckpointIO,
    BestCheckpoints,
    LastCheckpoint,
    RunMetadata,
    capture_rng_states,
    code_version,
    remove_superseded_hpc_checkpoints,
    restore_rng_states,
)


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("simulated failure in the middle of a checkpoint write")


def test_atomic_save_replaces_and_leaves_no_tmp(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "sub" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(3)}, path)
    io.save_checkpoint({"global_step": 2, "w": torch.zeros(3)}, path)
    assert io.load_checkpoint(path)["global_step"] == 2
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def test_failed_save_keeps_previous_checkpoint(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1}, path)
    with pytest.raises(RuntimeError, match="simulated failure"):
        io.save_checkpoint({"global_step": 2, "bad": Unpicklable()}, path)
    assert io.load_checkpoint(path)["global_step"] == 1


class CountingIO(AtomicCheckpointIO):
    def __init__(self):
        super().__init__()
        self.saved = []

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        super().save_checkpoint(checkpoint, path, storage_options)
        self.saved.append((checkpoint["global_step"], os.path.basename(path)))


class TinyModule(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit_tiny(tmp_path, callbacks, max_steps: int) -> CountingIO:
    io = CountingIO()
    trainer = L.Trainer(accelerator="cpu", max_steps=max_steps, callbacks=callbacks, plugins=[io], logger=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    data = DataLoader(TensorDataset(torch.randn(64, 4)), batch_size=4)
    trainer.fit(TinyModule(), data)
    return io


@pytest.fixture
def no_slurm(monkeypatch):
    for name in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(name)


def test_last_checkpoint_every_n_steps_and_at_end(tmp_path, no_slurm):
    io = fit_tiny(tmp_path, [LastCheckpoint(str(tmp_path / "ckpt"), every_n_steps=3)], max_steps=7)
    assert io.saved == [(3, "last.ckpt"), (6, "last.ckpt"), (7, "last.ckpt")]
    assert torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["global_step"] == 7


def test_last_checkpoint_time_trigger(tmp_path, no_slurm):
    # a 0.6 ms interval: every step after the first is due by time although the step trigger (1000) never
    # fires (the first step may finish within 0.6 ms of the timer's start on a fast machine)
    io = fit_tiny(tmp_path, [LastCheckpoint(str(tmp_path / "ckpt"), every_n_steps=1000, every_n_minutes=1e-5)],
                  max_steps=4)
    assert [step for step, _ in io.saved][-3:] == [2, 3, 4]
    io = fit_tiny(tmp_path / "b", [LastCheckpoint(str(tmp_path / "b" / "ckpt"), every_n_steps=1000)], max_steps=4)
    assert [step for step, _ in io.saved] == [4]


def test_last_checkpoint_removes_superseded_hpc_checkpoints(tmp_path, no_slurm):
    stale = tmp_path / "hpc_ckpt_1.ckpt"
    stale.write_bytes(b"old")
    old = time.time() - 60
    os.utime(stale, (old, old))
    fit_tiny(tmp_path, [LastCheckpoint(str(tmp_path / "ckpt"), every_n_steps=2)], max_steps=2)
    assert not stale.exists()


def test_remove_superseded_keeps_newer_hpc_checkpoint(tmp_path):
    last = tmp_path / "last.ckpt"
    last.write_bytes(b"x")
    older, newer = tmp_path / "hpc_ckpt_1.ckpt", tmp_path / "hpc_ckpt_2.ckpt"
    older.write_bytes(b"x")
    newer.write_bytes(b"x")
    t = time.time()
    os.utime(older, (t - 20, t - 20))
    os.utime(last, (t - 10, t - 10))
    os.utime(newer, (t, t))
    assert remove_superseded_hpc_checkpoints(tmp_path, last) == [older]
    assert newer.exists() and last.exists()


@pytest.mark.parametrize("kwargs, named", [({"every_n_steps": 0}, "every_n_steps"),
                                           ({"every_n_minutes": 0.0}, "every_n_minutes")])
def test_last_checkpoint_validates(tmp_path, kwargs, named):
    with pytest.raises(ValueError, match=named):
        LastCheckpoint(str(tmp_path), **kwargs)


def test_best_checkpoints_validates(tmp_path):
    with pytest.raises(ValueError, match="save_top_k"):
        BestCheckpoints(str(tmp_path), save_top_k=0)


def test_rng_states_round_trip_through_a_safe_load(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    torch.save(capture_rng_states(), tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(2))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng_states(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(2), expected[2])


def test_run_metadata_in_checkpoint(tmp_path, no_slurm):
    class WithData(L.LightningDataModule):
        train_sources, train_weights, val_shards = ["/data/a-{000..009}.tar"], None, {"clotho": "/data/c-*.tar"}

        def train_dataloader(self):
            return DataLoader(TensorDataset(torch.randn(16, 4)), batch_size=4)

    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_progress_bar=False,
                        callbacks=[RunMetadata(), LastCheckpoint(str(tmp_path), every_n_steps=1)],
                        plugins=[AtomicCheckpointIO()], default_root_dir=tmp_path)
    trainer.fit(TinyModule(), datamodule=WithData())
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert checkpoint["clap_train_data"] == {"train": ["/data/a-{000..009}.tar"], "train_weights": None,
                                             "val": {"clotho": "/data/c-*.tar"}}
    assert checkpoint["clap_train_version"]["clap_train"] == "0.1.0"
    assert "torch" in checkpoint["callbacks"]["RunMetadata"]["rng"]


def test_code_version_reads_git():
    version = code_version()
    assert isinstance(version["git"], str) and version["git"]  # this checkout is a git work tree


class ScoredModule(TinyModule):
    """Logs `val/toy/score` = the given score of each validation round."""

    def __init__(self, scores):
        super().__init__()
        self.scores = list(scores)

    def validation_step(self, batch, batch_idx):
        self.log("val/toy/score", self.scores[self.current_epoch])


class ToyData(L.LightningDataModule):
    val_names = ("toy",)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=4)  # 2 steps per epoch

    def val_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(4, 4)), batch_size=4)


def test_best_checkpoints_keep_top_k_by_monitor(tmp_path, no_slurm):
    best = BestCheckpoints(str(tmp_path / "ckpt"), metric="score", mode="max", save_top_k=2)  # val/toy/score
    trainer = L.Trainer(accelerator="cpu", max_epochs=4, callbacks=[best], logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0)
    trainer.fit(ScoredModule([0.1, 0.9, 0.5, 0.7]), datamodule=ToyData())
    # validation after epochs 1..4 = steps 2, 4, 6, 8; the best two scores are 0.9 (step 4) and 0.7 (step 8)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["best-step0000004.ckpt", "best-step0000008.ckpt"]


def test_best_checkpoints_reject_unknown_val_set(tmp_path, no_slurm):
    best = BestCheckpoints(str(tmp_path / "ckpt"), val_set="clotho")
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, callbacks=[best], logger=False, enable_progress_bar=False,
                        default_root_dir=tmp_path)
    with pytest.raises(ValueError, match=r"callbacks.best.val_set='clotho'.*\['toy'\]"):
        trainer.fit(ScoredModule([0.1]), datamodule=ToyData())



class NoValData(ToyData):
    val_names = ()

    def val_dataloader(self):
        return []


def test_best_checkpoints_without_val_sets_save_nothing(tmp_path, no_slurm):
    best = BestCheckpoints(str(tmp_path / "ckpt"))
    trainer = L.Trainer(accelerator="cpu", max_epochs=2, callbacks=[best], logger=False, enable_progress_bar=False,
                        default_root_dir=tmp_path)
    trainer.fit(ScoredModule([0.1, 0.2]), datamodule=NoValData())
    assert not (tmp_path / "ckpt").exists() or not list((tmp_path / "ckpt").iterdir())
