"""LightningDataModule wiring shard sources, stages and loaders together."""

from __future__ import annotations

import logging
from collections.abc import Callable

import lightning as L
from torch.utils.data import DataLoader

from clap_train.data.pipeline import (
    batches_per_worker,
    build_eval_dataset,
    build_train_dataset,
    count_samples,
    expand_shards,
)
from clap_train.data.stages import ChooseCaption, Collate, CropPad, DecodeSample, SkipCounter
from clap_train.data.tokenizer import CaptionTokenizer

log = logging.getLogger(__name__)


class CLAPDataModule(L.LightningDataModule):
    """Audio-caption shards -> batches (docs/ARCHITECTURE.md).

    Args:
        train_shards: shard pattern (brace notation) or list of patterns mixed with `train_weights`.
        val_shards: {set name: shard pattern} evaluated as `val/<name>/...`.
        tokenizer: path to tokenizer.json (or its directory).
        sample_rate, clip_samples: the model's audio rate and window.
        truncation, padding: see `audio_ops.crop_or_pad`. int16: LAION's int16 round trip.
        batch_size: per-device batch. epoch_samples: samples per epoch (all ranks); None reads sizes.json.
        augmented_caption_prob: probability of training on a keyword-to-caption caption.
        prepare: optional callable run once on rank 0 before anything is read (builds demo data).
        multiprocessing_context: start method of data workers; "forkserver"/"spawn" avoid
            deadlocks of audio libraries in forked workers.
    """

    def __init__(
        self,
        train_shards: str | list[str],
        val_shards: dict[str, str] | None,
        tokenizer: str,
        sample_rate: int,
        clip_samples: int,
        batch_size: int = 32,
        val_batch_size: int | None = None,
        num_workers: int = 2,
        epoch_samples: int | None = None,
        train_weights: list[float] | None = None,
        truncation: str = "rand_trunc",
        padding: str = "repeatpad",
        int16: bool = False,
        augmented_caption_prob: float = 0.0,
        max_text_length: int = 77,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        multiprocessing_context: str | None = "forkserver",
        prepare: Callable[[], None] | None = None,
    ):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        if clip_samples < 1:
            raise ValueError(f"data.clip_samples must be >= 1, got {clip_samples}")
        self.train_sources = [train_shards] if isinstance(train_shards, str) else list(train_shards)
        if train_weights is not None and len(train_weights) != len(self.train_sources):
            raise ValueError(f"data.train_weights has {len(train_weights)} entries for {len(self.train_sources)} sources")
        self.val_shards = dict(val_shards or {})
        self.tokenizer_path = tokenizer
        self.sample_rate, self.clip_samples = sample_rate, clip_samples
        self.batch_size, self.val_batch_size = batch_size, val_batch_size or batch_size
        self.num_workers, self.epoch_samples, self.train_weights = num_workers, epoch_samples, train_weights
        self.truncation, self.padding, self.int16 = truncation, padding, int16
        self.augmented_caption_prob, self.max_text_length = augmented_caption_prob, max_text_length
        self.shuffle_buffer, self.seed = shuffle_buffer, seed
        self.multiprocessing_context = multiprocessing_context if num_workers > 0 else None
        self.prepare = prepare
        self.start_step = 0  # set by a resumed run so the stream does not replay seen samples

    def prepare_data(self) -> None:
        if self.prepare is not None:
            self.prepare()

    def setup(self, stage: str | None = None) -> None:
        """Check every path up front so a bad one fails at start-up, naming the config field."""
        self.train_urls = [expand_shards(p, "data.train_shards") for p in self.train_sources]
        self.val_urls = {name: expand_shards(p, f"data.val_shards.{name}") for name, p in self.val_shards.items()}
        try:
            self.tokenizer = CaptionTokenizer(self.tokenizer_path, self.max_text_length)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"data.tokenizer: {exc}") from None
        if self.epoch_samples is None:
            self.epoch_samples = sum(count_samples(urls) for urls in self.train_urls)

    @property
    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _stages(self, train: bool):
        skip = SkipCounter()
        decode = DecodeSample(self.sample_rate)
        crop = CropPad(self.clip_samples, self.truncation, self.padding, self.int16, deterministic=not train)
        caption = ChooseCaption(self.augmented_caption_prob if train else 0.0, keep_all=not train)
        return decode, crop, caption, Collate(self.tokenizer, skip), skip

    def _loader(self, dataset, num_workers: int) -> DataLoader:
        return DataLoader(
            dataset, batch_size=None, num_workers=num_workers, pin_memory=False,
            multiprocessing_context=self.multiprocessing_context if num_workers > 0 else None,
            persistent_workers=False,
        )

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank_world
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        # a fresh seed per epoch and per resume point: new order each epoch, no replay after a restart
        seed = self.seed + 1_000_003 * epoch + self.start_step
        decode, crop, caption, collate, skip = self._stages(train=True)
        per_worker = batches_per_worker(self.epoch_samples, self.batch_size, world, self.num_workers)
        dataset = build_train_dataset(
            self.train_urls, self.train_weights, decode, crop, caption, collate, skip, self.batch_size,
            per_worker, self.shuffle_buffer, seed, rank,
        )
        return self._loader(dataset, self.num_workers)

    def val_dataloader(self) -> list[DataLoader]:
        rank, world = self._rank_world
        loaders = []
        for name, urls in self.val_urls.items():
            workers = min(self.num_workers, len(urls) // world)
            decode, crop, caption, collate, skip = self._stages(train=False)
            dataset = build_eval_dataset(urls, decode, crop, caption, collate, skip, self.val_batch_size, rank, world,
                                         workers, f"data.val_shards.{name}")
            loaders.append(self._loader(dataset, workers))
        return loaders

    @property
    def val_names(self) -> list[str]:
        return list(self.val_shards)
