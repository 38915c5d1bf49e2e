"""The embedded demo through the real entry point, and start-up errors that name their cause."""

import json

import pytest

from tests.foundation._entry import TINY_DEMO, run_entry


@pytest.mark.slow
def test_demo_learns_through_entry_point(tmp_path):
    result = run_entry(tmp_path, "+experiment=demo", *TINY_DEMO, "trainer.max_steps=60",
                       "module.scheduler.warmup_steps=5")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run_dir = tmp_path / "runs" / "demo"
    summary = json.loads((run_dir / "summary.json").read_text())
    before, after = summary["before"], summary["after"]
    assert summary["global_step"] == 60
    # 64 held-out clips: chance R@10 is 10/64; training must lift both directions well above the start
    for metric in ("t2a_R@10", "a2t_R@10"):
        key = f"val/synthetic/{metric}"
        assert after[key] > before[key] + 0.1, (metric, before[key], after[key])
    assert "retrieval on 'synthetic'" in result.stdout
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "config.yaml").is_file()
    assert list((run_dir / "hydra").glob("*/config.yaml")), "hydra's per-launch config must land in the run dir"
    # the demo data are real tar shards with sizes.json
    demo = tmp_path / "cache" / "demo"
    assert sorted(p.name for p in demo.glob("train-*.tar")) == [f"train-{i:06d}.tar" for i in range(4)]
    assert sum(json.loads((demo / "sizes.json").read_text()).values()) == 512 + 64


def test_print_resolved_config(tmp_path):
    result = run_entry(tmp_path, "--cfg", "job", "trainer.max_steps=7")
    assert result.returncode == 0, result.stderr
    assert "max_steps: 7" in result.stdout and "_target_: clap_train.models.clap.CLAPModel" in result.stdout


@pytest.mark.parametrize(
    "override, named",
    [("model=does_not_exist", "does_not_exist"), ("trainer.no_such_key=1", "no_such_key"),
     ("+experiment=nope", "nope")],
)
def test_unknown_config_fails_naming_it(tmp_path, override, named):
    result = run_entry(tmp_path, override)
    assert result.returncode != 0
    assert named in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_data_path_fails_at_startup(tmp_path):
    result = run_entry(tmp_path, "data.prepare=null", f"data.train_shards='{tmp_path}/none/train-{{000000..000003}}.tar'",
                       f"data.tokenizer={tmp_path}/none/tokenizer.json")
    assert result.returncode == 2
    assert "data.tokenizer" in result.stderr or "data.train_shards" in result.stderr
    assert str(tmp_path / "none") in result.stderr
    assert "Traceback" not in result.stderr
