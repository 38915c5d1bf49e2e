"""Which checkpoint a launch resumes from; `resume=wandb://...` at the W&B API boundary (local stand-in)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch
import wandb
from omegaconf import OmegaConf

from clap_train.training.loggers import download_wandb_checkpoint, parse_wandb_url
from clap_train.training.resume import (
    checkpoint_step,
    local_checkpoints,
    resolve_resume_checkpoint,
    wandb_resume_overrides,
)
from tests.ops.wandb_fakes import FakeApi

RANK_VARS = ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK")


def write_ckpt(path: Path, step: int, age_s: float = 0.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": step}, path)
    t = time.time() - age_s
    os.utime(path, (t, t))
    return path


@pytest.fixture
def first_rank(monkeypatch):
    for var in RANK_VARS:
        monkeypatch.delenv(var, raising=False)


def test_newest_of_last_and_hpc_wins(tmp_path):
    last = write_ckpt(tmp_path / "checkpoints" / "last.ckpt", 10, age_s=30)
    hpc = write_ckpt(tmp_path / "hpc_ckpt_1.ckpt", 12, age_s=10)
    write_ckpt(tmp_path / "checkpoints" / "best-step0000005.ckpt", 5)  # top-k files are never resumed from
    assert local_checkpoints(tmp_path) == [last, hpc]
    assert resolve_resume_checkpoint(OmegaConf.create({"resume": None}), tmp_path) == hpc
    assert checkpoint_step(hpc) == 12
    write_ckpt(last, 14)  # a newer last.ckpt after the resume
    assert resolve_resume_checkpoint(OmegaConf.create({"resume": None}), tmp_path) == last


def test_fresh_run_and_explicit_path(tmp_path):
    assert resolve_resume_checkpoint(OmegaConf.create({"resume": None}), tmp_path) is None
    seed = write_ckpt(tmp_path / "elsewhere.ckpt", 3)
    assert resolve_resume_checkpoint(OmegaConf.create({"resume": str(seed)}), tmp_path / "run") == seed
    with pytest.raises(FileNotFoundError, match="resume="):
        resolve_resume_checkpoint(OmegaConf.create({"resume": str(tmp_path / "none.ckpt")}), tmp_path / "run")


def test_local_checkpoint_wins_over_resume_key(tmp_path):
    last = write_ckpt(tmp_path / "checkpoints" / "last.ckpt", 10)
    cfg = OmegaConf.create({"resume": "wandb://ent/proj/abc"})  # must not download: a requeue continues locally
    assert resolve_resume_checkpoint(cfg, tmp_path) == last


@pytest.mark.parametrize("url", ["wandb://ent/proj", "wandb://ent/proj/id/x", "ent/proj/id", "wandb:///proj/id"])
def test_parse_wandb_url_rejects(url):
    with pytest.raises(ValueError, match="wandb://ENTITY/PROJECT/RUN_ID"):
        parse_wandb_url(url)


def test_wandb_resume_overrides_name_the_run_and_leave_the_config_alone():
    cfg = OmegaConf.create({"resume": "wandb://ent/proj/abc123", "run_name": "demo", "logger": {
        "_target_": "clap_train.training.loggers.wandb_logger", "project": "clap_train", "entity": None,
        "run_id": "${run_name}"}})
    assert wandb_resume_overrides(cfg) == {"entity": "ent", "project": "proj", "run_id": "abc123"}
    assert (cfg.logger.entity, cfg.logger.project, cfg.logger.run_id) == (None, "clap_train", "demo")
    csv = OmegaConf.create({"resume": "wandb://ent/proj/abc123", "logger": {"_target_": "x.CSVLogger"}})
    assert wandb_resume_overrides(csv) == {}


def test_wandb_resume_downloads_latest_artifact(tmp_path, monkeypatch, first_rank):
    """Stand-in at the W&B API boundary: `wandb.Api` is replaced by `FakeApi`, which copies a local
    checkpoint instead of downloading from a W&B server (no network in tests)."""
    source = write_ckpt(tmp_path / "remote" / "model.ckpt", 42)
    requested = []
    monkeypatch.setattr(wandb, "Api", lambda: FakeApi(source, requested))
    path = resolve_resume_checkpoint(OmegaConf.create({"resume": "wandb://ent/proj/abc123"}), tmp_path / "run")
    assert requested == ["ent/proj/model-abc123:latest"]
    assert path == tmp_path / "run" / "checkpoints" / "wandb" / "model.ckpt"
    assert checkpoint_step(path) == 42


def test_other_ranks_wait_for_the_download(tmp_path, monkeypatch, first_rank):
    """Stand-in W&B API as above; rank 1 must not call it but use rank 0's completed download."""
    monkeypatch.setattr(wandb, "Api", lambda: pytest.fail("only the first process downloads"))
    monkeypatch.setenv("SLURM_PROCID", "1")
    dest = tmp_path / "dl"
    with pytest.raises(TimeoutError, match="rank 0"):
        download_wandb_checkpoint("wandb://ent/proj/abc", dest, timeout_s=0.2)
    write_ckpt(dest / "model.ckpt", 7)
    (dest / "DOWNLOAD_COMPLETE").write_text("model.ckpt")
    assert download_wandb_checkpoint("wandb://ent/proj/abc", dest, timeout_s=0.2) == dest / "model.ckpt"


def test_sharded_checkpoint_directory(tmp_path):
    """Under FSDP (trainer=fsdp) last.ckpt is a DCP directory whose meta.pt holds the non-tensor state."""
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.mkdir(parents=True)
    torch.save({"global_step": 9}, last / "meta.pt")
    (last / "__0_0.distcp").write_bytes(b"shard")
    assert local_checkpoints(tmp_path) == [last]
    assert checkpoint_step(last) == 9
