"""The progress bar's epoch count and per-epoch total follow the step budget and the datamodule's epoch."""

from types import SimpleNamespace

from clap_train.training.cpu_threads import main_process_threads, set_spin_policy
from clap_train.training.progress import StepProgressBar


def bar_for(global_step: int, max_steps: int = 800, batches_per_rank: int | None = 64) -> StepProgressBar:
    bar = StepProgressBar()
    trainer = SimpleNamespace(max_steps=max_steps, max_epochs=-1, global_step=global_step, num_training_batches=float("inf"),
                              datamodule=SimpleNamespace(batches_per_rank=batches_per_rank))
    bar._trainer = trainer
    return bar


def test_epoch_of_the_step_budget_and_fixed_totals():
    first = bar_for(0)
    assert first._get_train_description(0).strip() == "Epoch 0/12"  # 800 steps of 64 batches: epochs 0..12
    assert first.total_train_batches == 64
    assert bar_for(128)._get_train_description(2).strip() == "Epoch 2/12" and bar_for(128).total_train_batches == 64
    last = bar_for(768)
    assert last._get_train_description(12).strip() == "Epoch 12/12" and last.total_train_batches == 32
    resumed = bar_for(100)  # resumed at step 100 in epoch 1: a fresh 64-batch epoch, 700 steps left -> 11 epochs
    assert resumed._get_train_description(1).strip() == "Epoch 1/11" and resumed.total_train_batches == 64


def test_thread_choice_leaves_room_for_workers():
    assert main_process_threads(2, 1) == 1 and main_process_threads(2, 0) == 2 and main_process_threads(16, 6) == 10
    assert main_process_threads(16, 6, processes_per_machine=2) == 2 and main_process_threads(4, 8) == 1
    environ = {"OMP_WAIT_POLICY": "ACTIVE"}
    set_spin_policy(environ)
    assert environ == {"OMP_WAIT_POLICY": "ACTIVE", "KMP_BLOCKTIME": "0"}  # the user's setting stays
