"""The new losses through the real entry point on the shrunk demo: recall after training beats before."""

import pytest

from tests._demo_run import recall_sum, run_demo


@pytest.mark.slow
@pytest.mark.parametrize(("run_name", "overrides"), [
    ("multipos", ["loss=multipos"]),
    ("hn_nce", ["loss.hard_negative_beta=0.5"]),
])
def test_loss_trains_through_the_entry_point(tmp_path, run_name, overrides):
    summary = run_demo(tmp_path, run_name, *overrides)
    assert recall_sum(summary["after"]) > recall_sum(summary["before"]) + 0.3, summary


@pytest.mark.slow
def test_distillation_from_a_trained_checkpoint_through_the_entry_point(tmp_path):
    run_demo(tmp_path, "teacher", "trainer.max_steps=32")
    teacher = tmp_path / "runs" / "teacher" / "checkpoints" / "last.ckpt"
    # a different student architecture (Whisper tower) learns from the CNN14 teacher's similarities
    summary = run_demo(tmp_path, "student", "model=whisper_debug", f"+distill.teacher={teacher}",
                       "+distill.weight=1.0")
    assert recall_sum(summary["after"]) > recall_sum(summary["before"]) + 0.3, summary
    # FSDP2 on 2 CPU ranks: the teacher is sharded per block / tower / root like the student
    fsdp = run_demo(tmp_path, "student_fsdp", "trainer=fsdp", "trainer.devices=2", "trainer.accelerator=cpu",
                    f"+distill.teacher={teacher}", "data.batch_size=16", "trainer.max_steps=2")
    assert fsdp["global_step"] == 2


@pytest.mark.parametrize("override", ["+distill.teachr=/x.ckpt", "+distill.teacher=/no/such.ckpt"])
def test_bad_distill_settings_are_one_line(tmp_path, override):
    import subprocess
    import sys

    from tests._demo_run import REPO, SHORT_DEMO
    from tests.ops._entry import clean_env

    proc = subprocess.run([sys.executable, "-m", "clap_train", *SHORT_DEMO, override], cwd=REPO, check=False,
                          env=clean_env(tmp_path), capture_output=True, text=True, timeout=300)
    expected = "distill.teacher" if "teachr" in override else "/no/such.ckpt"
    assert proc.returncode != 0 and expected in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
