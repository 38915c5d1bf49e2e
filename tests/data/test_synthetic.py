"""The demo dataset is written through data_pipelines.shards and read back by the online pipeline."""

from __future__ import annotations

import json

from clap_train.data.pipeline import count_samples
from clap_train.data.synthetic import ensure_synthetic_dataset
from data_pipelines.shards import expand_shards, iter_tar, read_meta


def test_synthetic_dataset_layout_reuse_and_rebuild(tmp_path):
    args = {"num_train": 12, "num_val": 4, "samples_per_shard": 5, "duration": 0.25, "vocab_size": 300}
    out = ensure_synthetic_dataset(str(tmp_path), **args)
    train = expand_shards(str(out / "train-*.tar"))
    assert [p.rsplit("/", 1)[1] for p in train] == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    assert count_samples(train) == 12 and count_samples(expand_shards(str(out / "val-*.tar"))) == 4
    key, members = next(iter_tar(train[0]))
    assert key == "train_000000" and set(members) == {"flac", "json"} and read_meta(members)["text"][0]
    assert (out / "tokenizer.json").is_file()

    stamp = (out / "train-000000.tar").stat().st_mtime_ns
    ensure_synthetic_dataset(str(tmp_path), **args)
    assert (out / "train-000000.tar").stat().st_mtime_ns == stamp  # complete: reused as is

    ensure_synthetic_dataset(str(tmp_path), **{**args, "num_train": 6})
    assert json.loads((out / "sizes.json").read_text()) == {
        "train-000000.tar": 5, "train-000001.tar": 1, "val-000000.tar": 2, "val-000001.tar": 2}
    assert not (out / "train-000002.tar").exists()
