"""WebDataset pipelines: resampled, seeded streams for training; split, finite ones for evaluation.

Training (`TrainStream`): each (rank, worker) draws shards with replacement from every source,
mixes the sources with their weights, shuffles samples in a buffer and yields exactly
`batches_per_worker` full batches. All randomness derives from (seed, rank, worker), so a stream
is reproducible for a seed, differs between seeds, and never hangs whatever the shard count.
Every rank yields the same number of batches, so DDP never waits on a rank that ran out.

Evaluation (`build_eval_dataset`): one finite pass, each shard read by exactly one (rank, worker).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import random
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset

from clap_train.data.shard_format import SIZES_FILE, is_remote
from clap_train.data.stages import Collate, SkipCounter

log = logging.getLogger(__name__)
SHARD_READ_BUFFER = 1 << 20  # bytes; webdataset opens local files with the 8 KiB default (~0.1 ms/clip more)


def count_samples(urls: list[str]) -> int:
    """Total samples of `urls` from the `sizes.json` beside them.

    Raises FileNotFoundError when a folder has no sizes.json, KeyError when a shard is not listed.
    """
    total, sizes_by_dir = 0, {}
    for url in urls:
        folder = Path(url).parent
        if folder not in sizes_by_dir:
            sizes_path = folder / SIZES_FILE
            if not sizes_path.is_file():
                raise FileNotFoundError(f"no sizes.json beside {url}: set the epoch length with data.epoch_samples")
            sizes_by_dir[folder] = json.loads(sizes_path.read_text())
        name = Path(url).name
        if name not in sizes_by_dir[folder]:
            raise KeyError(f"{folder / SIZES_FILE} has no entry for {name}")
        total += sizes_by_dir[folder][name]
    return total


def derive_seed(*words: int) -> int:
    """A 63-bit seed mixing non-negative integers (numpy SeedSequence: stable across processes)."""
    return int(np.random.SeedSequence([int(w) for w in words]).generate_state(2, dtype=np.uint64)[0] >> 1)


def batches_per_worker(epoch_samples: int, batch_size: int, world_size: int, num_workers: int) -> int:
    """Equal batch count on every rank: ceil(epoch batches per rank / workers) per worker (at least 1)."""
    per_rank = max(1, epoch_samples // (batch_size * world_size))
    return math.ceil(per_rank / max(num_workers, 1))


class ResampleShards(IterableDataset):
    """Endless stream of {'url'} drawn with replacement by a seeded generator."""

    def __init__(self, urls: list[str], seed: int):
        if not urls:
            raise ValueError("urls must name at least one shard")
        self.urls, self.seed = list(urls), seed

    def __iter__(self) -> Iterator[dict]:
        rng = random.Random(self.seed)
        while True:
            yield {"url": rng.choice(self.urls)}


class MixSources(IterableDataset):
    """Endless stream that takes each sample from source i with probability weights[i] / sum(weights).

    Raises ValueError naming `weights` if they do not match the sources or are not positive.
    """

    def __init__(self, sources: list, weights: list[float] | None, seed: int):
        weights = [1.0] * len(sources) if weights is None else [float(w) for w in weights]
        if len(weights) != len(sources) or any(w <= 0 for w in weights):
            raise ValueError(f"weights must be {len(sources)} positive numbers, got {weights}")
        self.sources, self.weights, self.seed = sources, weights, seed

    def __iter__(self) -> Iterator[dict]:
        rng = random.Random(self.seed)
        iterators = [iter(s) for s in self.sources]
        while True:
            yield next(iterators[rng.choices(range(len(iterators)), self.weights)[0]])


class SeededShuffle:
    """Sample shuffle buffer of `bufsize` with its own seeded generator."""

    def __init__(self, bufsize: int, seed: int):
        self.bufsize, self.seed = bufsize, seed

    def __call__(self, src: Iterator[dict]) -> Iterator[dict]:
        rng = random.Random(self.seed)
        buf = []
        for sample in src:
            buf.append(sample)
            if len(buf) >= self.bufsize:
                yield buf.pop(rng.randrange(len(buf)))
        rng.shuffle(buf)
        yield from buf


class TrainStream(IterableDataset):
    """Training batches of one rank: in each dataloader worker, `batches_per_worker` full batches.

    The epoch is a pure function of (seed, rank, worker slot): a worker's batches come in segments of
    `reseed_every` (None: one segment), each drawn by a pipeline seeded from (seed, rank, slot, segment).
    `set_position(seed, start)` makes the next iteration continue an epoch after its first `start` batches
    on this rank (a resume): the loader's round robin over its workers is rotated so batch `start` comes
    first, and each worker enters its segment by drawing and dropping the batches before its position
    (fewer than `reseed_every` per worker). Iterated without a DataLoader, the stream is one worker.

    Args:
        sources: shard URL lists, one per source. weights: sampling weight per source (None: equal).
        stages: per-sample stages (`stages.sample_stages`); stages with `set_seed` are reseeded per segment.
        collate: builds the batch. skip: the exception handler counting bad samples.
        batch_size, batches_per_worker, shuffle_buffer: stream geometry.
        rank: this process's rank, fixed at construction (spawned workers cannot ask torch.distributed).
        seed: base seed; `set_seed`/`set_position` change it (the datamodule does so before every epoch).
        reseed_every: batches per worker between reseeds (bounds what a resume draws and drops).
    """

    def __init__(self, sources: list[list[str]], weights: list[float] | None, stages: list, collate: Collate,
                 skip: SkipCounter, batch_size: int, batches_per_worker: int, shuffle_buffer: int, rank: int,
                 seed: int = 0, reseed_every: int | None = None):
        super().__init__()
        if batch_size < 1 or batches_per_worker < 1:
            raise ValueError(f"batch_size and batches_per_worker must be >= 1, got {batch_size}, {batches_per_worker}")
        if reseed_every is not None and reseed_every < 1:
            raise ValueError(f"reseed_every must be >= 1 or None, got {reseed_every}")
        MixSources(sources, weights, 0)  # validates weights
        self.sources, self.weights, self.stages = [list(s) for s in sources], weights, stages
        self.collate, self.skip = collate, skip
        self.batch_size, self.batches_per_worker, self.shuffle_buffer = batch_size, batches_per_worker, shuffle_buffer
        self.rank, self.seed, self.start = rank, seed, 0
        self.reseed_every = reseed_every or batches_per_worker

    def set_seed(self, seed: int) -> None:
        self.set_position(seed, 0)

    def set_position(self, seed: int, start: int = 0) -> None:
        """The next iteration yields the epoch of `seed` from its batch `start` on (0: the whole epoch)."""
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        self.seed, self.start = seed, start

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # batch b of the epoch comes from worker slot b % workers, as that slot's batch b // workers
        slot, first = (self.start + worker) % workers, (self.start + worker) // workers
        per_segment = self.reseed_every
        for segment in range(first // per_segment, math.ceil(self.batches_per_worker / per_segment)):
            begin = segment * per_segment
            end = min(begin + per_segment, self.batches_per_worker)
            batches = self._segment(derive_seed(self.seed, self.rank, slot, segment))
            yield from itertools.islice(batches, max(first - begin, 0), end - begin)

    def _segment(self, base: int) -> Iterator[dict]:
        for i, stage in enumerate(self.stages):
            if hasattr(stage, "set_seed"):
                stage.set_seed(derive_seed(base, 1, i))
        sources = [
            wds.DataPipeline(ResampleShards(urls, derive_seed(base, 2, i)), tar_samples(handler=self.skip))
            for i, urls in enumerate(self.sources)
        ]
        pipeline = wds.DataPipeline(
            MixSources(sources, self.weights, derive_seed(base, 3)),
            SeededShuffle(self.shuffle_buffer, derive_seed(base, 4)),
            *[wds.map(stage, handler=self.skip) for stage in self.stages],
            wds.batched(self.batch_size, collation_fn=self.collate, partial=False),
        )
        return iter(pipeline)


def open_shards(src: Iterator[dict], handler: Callable[[Exception], bool]) -> Iterator[dict]:
    """{'url'} -> {'url', 'stream'}: local shards opened with a `SHARD_READ_BUFFER` read buffer, URLs with
    a scheme (pipe:, file:, s3://, ...) through webdataset's gopen. Each stream is closed once read."""
    for sample in src:
        url = sample["url"]
        try:
            stream = wds.gopen(url) if is_remote(url) else open(url, "rb", buffering=SHARD_READ_BUFFER)  # noqa: SIM115 (closed below)
        except Exception as error:
            error.args = (*error.args, url)
            if handler(error):
                continue
            raise
        try:
            yield {**sample, "stream": stream}
        finally:
            stream.close()


def _tar_samples(src: Iterator[dict], handler: Callable[[Exception], bool]) -> Iterator[dict]:
    files = wds.tariterators.tar_file_expander(open_shards(src, handler), handler=handler)
    return wds.tariterators.group_by_keys(files, handler=handler)


tar_samples = wds.pipelinefilter(_tar_samples)  # wds.tarfile_to_samples with `open_shards`


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: workers ignore SIGTERM, SIGINT and SIGUSR1, which a terminal's Ctrl-C or
    `scancel` send to the whole process group. The main process saves a checkpoint on them
    (`clap_train.training.preemption`) and ends its workers itself; a worker killed under it would make
    torch raise in the middle of that save."""
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_IGN)


class ReseedingLoader(DataLoader):
    """DataLoader that positions its `TrainStream` from `seed_fn()` and `start_fn()` each time it is iterated.

    Lightning iterates the training loader once per epoch (and once on resume); with non-persistent
    workers the stream is pickled into fresh workers after `set_position`, so every epoch gets its own
    order and a resumed epoch continues where it stopped. Its length is the whole epoch's batch count, a
    resumed iteration yields the rest of it. The loader draws its workers' base seed from a generator of
    its own (seeded from the stream seed), so creating it leaves the global torch RNG untouched.
    """

    def __init__(self, dataset: TrainStream, seed_fn: Callable[[], int], start_fn: Callable[[], int] | None = None,
                 **kwargs):
        super().__init__(dataset, batch_size=None, persistent_workers=False, generator=torch.Generator(),
                         worker_init_fn=ignore_stop_signals, **kwargs)
        self.seed_fn, self.start_fn = seed_fn, start_fn

    def __len__(self) -> int:
        return max(self.num_workers, 1) * self.dataset.batches_per_worker

    def __iter__(self):
        seed = self.seed_fn()
        self.dataset.set_position(seed, self.start_fn() if self.start_fn is not None else 0)
        self.generator.manual_seed(seed)
        return super().__iter__()


class SplitByRank:
    """Shard-list split by rank, with the rank fixed at construction (safe under spawned workers)."""

    def __init__(self, rank: int, world_size: int):
        self.rank, self.world_size = rank, world_size

    def __call__(self, urls):
        yield from list(urls)[self.rank::self.world_size]


def build_eval_dataset(
    urls: list[str], stages: list, collate: Collate, skip: SkipCounter, batch_size: int, rank: int, world_size: int,
    num_workers: int, field: str = "data.val_shards",
) -> wds.DataPipeline:
    """Finite pass over `urls`, each shard read by exactly one (rank, worker): no duplicates, none lost.
    The last batch of each worker may be partial; ranks may get different batch counts.

    Raises ValueError naming `field` when there are fewer shards than ranks x workers.
    """
    if len(urls) < world_size * max(num_workers, 1):
        raise ValueError(
            f"{field}: {len(urls)} shards cannot be split over {world_size} ranks x {max(num_workers, 1)} workers; "
            f"use more shards or fewer data.num_workers"
        )
    return wds.DataPipeline(
        wds.SimpleShardList(urls),
        SplitByRank(rank, world_size),
        wds.split_by_worker,
        tar_samples(handler=skip),
        *[wds.map(stage, handler=skip) for stage in stages],
        wds.batched(batch_size, collation_fn=collate, partial=True),
    )
