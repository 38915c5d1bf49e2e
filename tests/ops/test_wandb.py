"""`logger=wandb` for real in W&B's offline mode, and `resume=wandb://...` at the W&B API boundary."""

from __future__ import annotations

import json
import os

import pytest
import wandb
from hydra import compose, initialize_config_dir

from clap_train.train import train
from tests.ops._entry import REPO, TINY_DEMO, run_entry
from tests.ops.wandb_fakes import FakeApi, offline_run_file, wandb_env
from tests.ops.wandb_records import artifacts, config_keys, history_keys, read_finished_records

pytestmark = pytest.mark.slow
LOGGED = {"train/loss", "lr-AdamW/towers", "train/logit_scale_a", "train/logit_scale_t", "perf/samples_per_sec",
          "val/synthetic/t2a_R@1", "val/synthetic/a2t_R@10"}


def test_wandb_offline_logs_and_resume_from_wandb(tmp_path, monkeypatch):
    env = wandb_env(tmp_path)
    run = ["logger=wandb", "run_name=wb", "trainer.max_steps=4", "callbacks.last.every_n_steps=2"]
    result = run_entry(tmp_path, *run, **env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    records = read_finished_records(offline_run_file(tmp_path / "runs" / "wb", "wb"))
    assert [r.run.run_id for r in records if r.WhichOneof("record_type") == "run"] == ["wb"]
    assert LOGGED <= history_keys(records), LOGGED - history_keys(records)
    assert {"model", "data", "module", "trainer", "run_name"} <= config_keys(records)  # the resolved config
    logged = artifacts(records)
    assert logged and {a.name for a in logged} == {"model-wb"} and all(a.type == "model" for a in logged)
    assert "latest" in logged[-1].aliases
    assert not (tmp_path / "home" / ".local" / "share" / "wandb").exists(), "W&B wrote under $HOME"

    # resume=wandb://ENTITY/PROJECT/wb in a fresh run directory, in this process so wandb.Api can be replaced
    for name in [k for k in os.environ if k.startswith(("SLURM_", "WANDB_"))]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CLAP_CACHE_DIR", os.environ["CLAP_TEST_CACHE"])
    monkeypatch.setenv("CLAP_RUNS_DIR", str(tmp_path / "runs"))
    requested = []
    monkeypatch.setattr(wandb, "Api", lambda: FakeApi(tmp_path / "runs" / "wb" / "checkpoints" / "last.ckpt",
                                                      requested))
    overrides = [*TINY_DEMO, "logger=wandb", "run_name=moved", "trainer.max_steps=6", "resume=wandb://ent/proj/wb"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    try:
        summary = train(cfg)
    finally:
        wandb.finish()
    moved = tmp_path / "runs" / "moved"
    assert requested == ["ent/proj/model-wb:latest"]
    assert (moved / "checkpoints" / "wandb" / "model.ckpt").is_file()
    assert summary["global_step"] == 6
    resumed = read_finished_records(offline_run_file(moved, "wb"))  # the same W&B run id continues
    run_record = next(r.run for r in resumed if r.WhichOneof("record_type") == "run")
    assert (run_record.run_id, run_record.entity, run_record.project) == ("wb", "ent", "proj")
    steps = [json.loads(i.value_json) for r in resumed if r.WhichOneof("record_type") == "history"
             for i in r.history.item if (i.key or "/".join(i.nested_key)) == "trainer/global_step"]
    assert min(steps) >= 4, "the resumed run logs from the downloaded checkpoint's step on"
