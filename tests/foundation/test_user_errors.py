"""Bad input to `python -m clap_train`: one line `clap_train: error: ...` naming the key, exit status 2,
reported before the heavy imports where the config alone shows it, and no run directory left behind."""

import json

import pytest

from tests.foundation._entry import TINY_DEMO, run_entry


def assert_one_line_error(result, *named):
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("clap_train: error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    for text in named:
        assert text in errors[0], errors[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("overrides, named", [
    (["trainer.max_step=3"], ["trainer.max_step", "+trainer.max_step=3"]),
    (["+experiment=nope"], ["experiment/nope", "htsat_roberta"]),
    (["data.train_shards=/d/train-{000000..000003}.tar"], ["data.train_shards=/d/train-{000000..000003}.tar"]),
    (["resume=/nowhere/last.ckpt"], ["resume", "/nowhere/last.ckpt"]),
    (["trainer.max_steps=0"], ["trainer.max_steps"]),
    (["module.scheduler.warmup_steps=-2"], ["module.scheduler.warmup_steps"]),
    (["data=webdataset", "evaluation=demo", "data.train_shards=/d/x.tar", "data.tokenizer=/d/t.json"],
     ["evaluation.zeroshot.synthetic"]),
    (["data=webdataset", "data.train_shards='/d/train-{000000..000003}.tar'", "data.tokenizer=/d/t.json"],
     ["data.train_shards", "/d/train-000000.tar"]),
])
def test_config_and_path_errors_before_heavy_imports(tmp_path, overrides, named):
    result = run_entry(tmp_path, *overrides)
    assert_one_line_error(result, *named)
    assert not (tmp_path / "runs").exists()


def test_error_found_after_start_leaves_no_run_dir(tmp_path):
    """A mistake only the built objects show (a tokenizer larger than the text tower) fails after Hydra made
    the run directory: the directory goes, since this launch created it."""
    result = run_entry(tmp_path, *TINY_DEMO, "model.text_encoder.vocab_size=10")
    assert_one_line_error(result, "vocab_size")
    assert not (tmp_path / "runs" / "demo").exists()


@pytest.mark.slow
def test_training_without_validation_set(tmp_path):
    result = run_entry(tmp_path, *TINY_DEMO, "data.val_shards=null", "evaluation=retrieval", "trainer.max_steps=3",
                       "module.scheduler.warmup_steps=1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run_dir = tmp_path / "runs" / "demo"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary == {"before": None, "after": None, "global_step": 3}
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert "no validation set" in result.stdout and "trained 3 steps" in result.stdout


def test_entry_point_checks_import_no_torch():
    """What runs before the checks stays light: torch and Lightning take tens of seconds on a busy machine."""
    import subprocess
    import sys

    from tests.foundation._entry import REPO

    code = ("import sys, clap_train.__main__, clap_train.preflight, clap_train.data.shard_format\n"
            "heavy = [m for m in ('torch', 'lightning', 'webdataset', 'soundfile') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
