"""A training set smaller than one global batch or than the epoch gets a warning naming the knobs."""

import logging

from clap_train.data.datamodule import CLAPDataModule
from tests.data.conftest import CLIP_SAMPLES, SAMPLE_RATE


def _setup(tokenizer_path, train_dir, caplog, **kwargs):
    dm = CLAPDataModule(str(train_dir / "train-*.tar"), None, tokenizer_path, SAMPLE_RATE, CLIP_SAMPLES,
                        num_workers=0, **kwargs)
    with caplog.at_level(logging.WARNING, logger="clap_train.data.datamodule"):
        caplog.clear()
        dm.setup("fit")
    return [record.getMessage() for record in caplog.records]


def test_warns_when_fewer_clips_than_a_batch_or_an_epoch(tokenizer_path, source_a, caplog):
    # source_a: 48 clips
    assert _setup(tokenizer_path, source_a, caplog, batch_size=16) == []
    [batch_warning] = _setup(tokenizer_path, source_a, caplog, batch_size=96)
    assert "48 clips" in batch_warning and "global batch of 96" in batch_warning and "data.batch_size" in batch_warning
    [epoch_warning] = _setup(tokenizer_path, source_a, caplog, batch_size=16, epoch_samples=480)
    assert "data.epoch_samples 480" in epoch_warning and "10.0 times" in epoch_warning
