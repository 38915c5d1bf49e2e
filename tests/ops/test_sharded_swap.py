"""Sharded (FSDP2 / DCP directory) checkpoints are swapped in atomically and recovered after a kill."""

import os

from clap_train.training.checkpointing import recover_swapped, swap_in_directory
from clap_train.training.resume import local_checkpoints


def _shard_dir(path, step):
    path.mkdir(parents=True)
    (path / "__0_0.distcp").write_text(f"step {step}")
    (path / "meta.pt").write_text(f"meta {step}")
    return path


def test_swap_replaces_a_directory_whole(tmp_path):
    last = _shard_dir(tmp_path / "last.ckpt", 1)
    new = _shard_dir(tmp_path / "last.ckpt.tmp", 2)
    swap_in_directory(new, last)
    assert (last / "__0_0.distcp").read_text() == "step 2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_kill_between_renames_is_recovered_by_resume(tmp_path):
    ckpts = tmp_path / "checkpoints"
    _shard_dir(ckpts / "last.ckpt", 1)
    _shard_dir(ckpts / "last.ckpt.tmp", 2)
    os.replace(ckpts / "last.ckpt", ckpts / "last.ckpt.old")  # the state a kill after the first rename leaves
    assert local_checkpoints(tmp_path) == [ckpts / "last.ckpt"]
    assert (ckpts / "last.ckpt" / "__0_0.distcp").read_text() == "step 1"  # the previous complete checkpoint


def test_recover_leaves_a_complete_checkpoint_alone(tmp_path):
    last = _shard_dir(tmp_path / "last.ckpt", 3)
    _shard_dir(tmp_path / "last.ckpt.old", 2)
    recover_swapped(last)
    assert (last / "__0_0.distcp").read_text() == "step 3"
