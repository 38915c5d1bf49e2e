"""LightningDataModule wiring shard sources, stages and loaders together (docs/data.md)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import lightning as L
import torch
from torch.utils.data import DataLoader

from clap_train.data.pipeline import (
    ReseedingLoader,
    TrainStream,
    batches_per_worker,
    build_eval_dataset,
    count_samples,
    derive_seed,
    ignore_stop_signals,
)
from clap_train.data.shard_format import expand_shards
from clap_train.data.stages import Collate, SkipCounter, sample_stages
from clap_train.data.tokenizer import CaptionTokenizer
from clap_train.signal.frontend import LogMelFrontend

log = logging.getLogger(__name__)


def _frontend_config(frontend: LogMelFrontend | dict | None) -> dict | None:
    if frontend is None or isinstance(frontend, LogMelFrontend):
        return frontend and frontend.config()
    return LogMelFrontend(**{k: v for k, v in dict(frontend).items() if k != "_target_"}).config()


class CLAPDataModule(L.LightningDataModule):
    """Audio-caption shards -> batches (keys in docs/ARCHITECTURE.md).

    Args:
        train_shards: shard pattern (brace notation or glob) or list of patterns mixed with `train_weights`.
        val_shards: {set name: shard pattern} evaluated as `val/<name>/...`.
        tokenizer: path to tokenizer.json (or its directory).
        sample_rate, clip_samples: the model's audio rate and window.
        truncation: "rand_trunc" / "head" (batch key `waveform`, log-mel on the training device) or
            "fusion" (batch key `features` (B, 4, T, F) built in the workers with `frontend`).
        padding: "repeatpad", "repeat" or "pad". int16: LAION's int16 round trip.
        batch_size: per-device batch. epoch_samples: samples per epoch over all ranks; None sums
            the sizes.json entries of the training shards.
        train_weights: sampling weight of each training source (None: equal).
        caption_probs: training caption pool weights, {"original", "augmented", "all"} -> weight.
        augmented_fields: json fields holding the "augmented" captions (keyword_to_caption --field).
        frontend: the model's `LogMelFrontend` (the YAML interpolates `${model.frontend}`) or its
            `config()` dict: the fusion path builds the features with it in the workers; unused otherwise.
        seed: base seed; each epoch's stream seed mixes it with the epoch, so every epoch has a new
            order. A run resumed mid-epoch continues that epoch's stream after the batches it trained on
            (`train_start_batch`): the same batches as an uninterrupted run.
        reseed_every_n_batches: each worker restarts its stream from a derived seed every N of its
            batches; a resume draws and drops fewer than N batches per worker to reach its position,
            and each restart reads `shuffle_buffer` samples more than it yields.
        prepare: optional callable run once on rank 0 before anything is read (builds demo data).
        multiprocessing_context: start method of data workers; "forkserver"/"spawn" avoid
            deadlocks of audio libraries in forked workers.
    Raises:
        ValueError naming the bad argument.
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
        caption_probs: dict[str, float] | None = None,
        augmented_fields: list[str] | tuple[str, ...] = ("text_augment_t5",),
        frontend: LogMelFrontend | dict | None = None,
        max_text_length: int = 77,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        reseed_every_n_batches: int = 200,
        multiprocessing_context: str | None = "forkserver",
        prepare: Callable[[], None] | None = None,
    ):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        if clip_samples < 1:
            raise ValueError(f"data.clip_samples must be >= 1, got {clip_samples}")
        if num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {num_workers}")
        if reseed_every_n_batches < 1:
            raise ValueError(f"data.reseed_every_n_batches must be >= 1, got {reseed_every_n_batches}")
        if epoch_samples is not None and epoch_samples < 1:
            raise ValueError(f"data.epoch_samples must be >= 1 or null, got {epoch_samples}")
        self.train_sources = [train_shards] if isinstance(train_shards, str) else list(train_shards)
        if train_weights is not None and len(train_weights) != len(self.train_sources):
            raise ValueError(f"data.train_weights has {len(train_weights)} entries for {len(self.train_sources)} sources")
        self.val_shards = dict(val_shards or {})
        self.tokenizer_path = tokenizer
        self.sample_rate, self.clip_samples = sample_rate, clip_samples
        self.batch_size, self.val_batch_size = batch_size, val_batch_size or batch_size
        self.num_workers, self.epoch_samples = num_workers, epoch_samples
        self.train_weights = list(train_weights) if train_weights is not None else None
        self.stage_args = {"sample_rate": sample_rate, "clip_samples": clip_samples, "truncation": truncation,
                           "padding": padding, "int16": int16,
                           "caption_probs": dict(caption_probs) if caption_probs is not None else None,
                           "frontend": _frontend_config(frontend) if truncation == "fusion" else None,
                           "augmented_fields": augmented_fields if isinstance(augmented_fields, str)
                           else tuple(augmented_fields)}
        try:
            sample_stages(**self.stage_args)  # validates truncation, padding, caption_probs, frontend now
        except ValueError as exc:
            raise ValueError(f"data.{exc}") from None
        self.max_text_length, self.shuffle_buffer, self.seed = max_text_length, shuffle_buffer, seed
        self.reseed_every_n_batches = reseed_every_n_batches
        self.multiprocessing_context = multiprocessing_context if num_workers > 0 else None
        self.prepare = prepare

    def check_model(self, enable_fusion: bool, frontend: dict) -> None:
        """Start-up check that the model and the data agree: a fused audio tower
        (`model.audio_encoder.enable_fusion`) needs `data.truncation: fusion` and the reverse, and the
        fusion features must be built with the model's own front end (`frontend`, its `config()`).

        Raises:
            ValueError naming the disagreeing config fields.
        """
        truncation = self.stage_args["truncation"]
        if enable_fusion != (truncation == "fusion"):
            raise ValueError(f"model.audio_encoder.enable_fusion={enable_fusion} needs data.truncation"
                             f"{'=fusion' if enable_fusion else ' rand_trunc or head'}, got data.truncation={truncation}")
        data_frontend = self.stage_args["frontend"]
        if data_frontend is not None and data_frontend != dict(frontend):
            differ = sorted(k for k in set(frontend) | set(data_frontend) if frontend.get(k) != data_frontend.get(k))
            raise ValueError(f"data.frontend differs from model.frontend in {differ}: the fusion features must use "
                             "the model's front end (data.frontend: ${model.frontend})")

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

    def train_seed(self) -> int:
        """The stream seed of the current epoch: (seed, epoch) mixed, so each epoch has its own order."""
        trainer = self.trainer
        return derive_seed(self.seed, trainer.current_epoch if trainer is not None else 0)

    def train_start_batch(self) -> int:
        """Batches of the current epoch this rank has trained on: 0 at an epoch start, the restored
        position on resume (every epoch is `batches_per_rank` optimizer steps long)."""
        trainer = self.trainer
        if trainer is None:
            return 0
        return min(max(trainer.global_step - trainer.current_epoch * self.batches_per_rank, 0), self.batches_per_rank)

    @property
    def batches_per_rank(self) -> int:
        """Training batches every rank yields per epoch (equal on all ranks)."""
        _, world = self._rank_world
        workers = max(self.num_workers, 1)
        return workers * batches_per_worker(self.epoch_samples, self.batch_size, world, self.num_workers)

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank_world
        skip = SkipCounter()
        stream = TrainStream(
            self.train_urls, self.train_weights, sample_stages(**self.stage_args, train=True),
            Collate(self.tokenizer, skip), skip, self.batch_size,
            batches_per_worker(self.epoch_samples, self.batch_size, world, self.num_workers), self.shuffle_buffer,
            rank, self.train_seed(), self.reseed_every_n_batches,
        )
        return ReseedingLoader(stream, self.train_seed, self.train_start_batch, num_workers=self.num_workers,
                               multiprocessing_context=self.multiprocessing_context)

    def val_dataloader(self) -> list[DataLoader]:
        rank, world = self._rank_world
        loaders = []
        for name, urls in self.val_urls.items():
            # fewer workers rather than an error when a small set has few shards; < 1 shard per rank raises
            workers = min(self.num_workers, len(urls) // world)
            if workers < self.num_workers:
                log.info("val set %s: %d shards over %d ranks -> %d workers", name, len(urls), world, workers)
            skip = SkipCounter()
            dataset = build_eval_dataset(urls, sample_stages(**self.stage_args, train=False), Collate(self.tokenizer, skip),
                                         skip, self.val_batch_size, rank, world, workers, f"data.val_shards.{name}")
            # own generator: creating a loader must not draw from the global torch RNG (exact resume)
            loaders.append(DataLoader(dataset, batch_size=None, num_workers=workers, generator=torch.Generator(),
                                      worker_init_fn=ignore_stop_signals,
                                      multiprocessing_context=self.multiprocessing_context if workers else None))
        return loaders

    @property
    def val_names(self) -> list[str]:
        return list(self.val_shards)
