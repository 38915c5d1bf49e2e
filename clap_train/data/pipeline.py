"""WebDataset pipelines: resampled, seeded streams for training; split, finite ones for evaluation."""

from __future__ import annotations

import glob
import json
import math
import random
from pathlib import Path

import braceexpand
import torch
import webdataset as wds

from clap_train.data.stages import ChooseCaption, Collate, CropPad, DecodeSample, SkipCounter


def expand_shards(pattern: str, field: str = "data.shards") -> list[str]:
    """Expand a shard pattern (brace notation `train-{000000..000099}.tar` or a glob `train-*.tar`).

    Raises FileNotFoundError naming `field` and the missing files.
    """
    if any(c in pattern for c in "*?["):
        urls = sorted(glob.glob(pattern))
        if not urls:
            raise FileNotFoundError(f"{field}: no shards match {pattern!r}")
        return urls
    urls = list(braceexpand.braceexpand(pattern))
    missing = [u for u in urls if "://" not in u and not Path(u).is_file()]
    if not urls or missing:
        shown = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise FileNotFoundError(f"{field}: {len(missing)} of {len(urls)} shards not found for {pattern!r}: {shown}")
    return urls


def count_samples(urls: list[str]) -> int:
    """Total samples of `urls` from the `sizes.json` beside them; raise if one is not listed."""
    total, sizes_by_dir = 0, {}
    for url in urls:
        folder = Path(url).parent
        if folder not in sizes_by_dir:
            sizes_path = folder / "sizes.json"
            if not sizes_path.is_file():
                raise FileNotFoundError(f"no sizes.json beside {url}: set the epoch length with data.epoch_samples")
            sizes_by_dir[folder] = json.loads(sizes_path.read_text())
        name = Path(url).name
        if name not in sizes_by_dir[folder]:
            raise KeyError(f"{folder / 'sizes.json'} has no entry for {name}")
        total += sizes_by_dir[folder][name]
    return total


class WorkerSeed:
    """Distinct seed per (rank, dataloader worker) for ResampledShards."""

    def __init__(self, rank: int):
        self.rank = rank

    def __call__(self) -> int:
        info = torch.utils.data.get_worker_info()
        return self.rank * 1000 + (info.id if info else 0)


class SeededShuffle:
    """Sample shuffle buffer seeded by (seed, rank, worker), so runs are reproducible."""

    def __init__(self, bufsize: int, seed: int, rank: int):
        self.bufsize, self.seed, self.rank = bufsize, seed, rank

    def __call__(self, src):
        info = torch.utils.data.get_worker_info()
        rng = random.Random(hash((self.seed, self.rank, info.id if info else 0)))
        buf = []
        for sample in src:
            buf.append(sample)
            if len(buf) >= self.bufsize:
                yield buf.pop(rng.randrange(len(buf)))
        rng.shuffle(buf)
        yield from buf


class SplitByRank:
    """Shard-list split by rank, with the rank fixed at construction (safe under spawned workers)."""

    def __init__(self, rank: int, world_size: int):
        self.rank, self.world_size = rank, world_size

    def __call__(self, urls):
        yield from list(urls)[self.rank::self.world_size]


def build_train_dataset(
    sources: list[str], weights: list[float] | None, decode: DecodeSample, crop: CropPad, caption: ChooseCaption,
    collate: Collate, skip: SkipCounter, batch_size: int, batches_per_worker: int, shuffle_buffer: int,
    seed: int, rank: int,
):
    """Endless resampled stream cut into `batches_per_worker` full batches per worker.

    Shards are drawn with replacement, seeded by (seed, rank, worker): no hang whatever the
    shard count, a different order for each seed (the datamodule derives it from the epoch and
    the step a resumed run starts from).
    """
    streams = [
        wds.DataPipeline(
            wds.ResampledShards(urls, seed=seed + i, worker_seed=WorkerSeed(rank), deterministic=True),
            wds.tarfile_to_samples(handler=skip),
        )
        for i, urls in enumerate(sources)
    ]
    mixed = streams[0] if len(streams) == 1 else wds.RandomMix(streams, probs=weights)
    return wds.DataPipeline(
        mixed,
        SeededShuffle(shuffle_buffer, seed, rank),
        wds.map(decode, handler=skip),
        wds.map(crop, handler=skip),
        wds.map(caption, handler=skip),
        wds.batched(batch_size, collation_fn=collate, partial=False),
    ).with_epoch(batches_per_worker)


def build_eval_dataset(
    urls: list[str], decode: DecodeSample, crop: CropPad, caption: ChooseCaption, collate: Collate,
    skip: SkipCounter, batch_size: int, rank: int, world_size: int, num_workers: int, field: str,
):
    """Finite pass over `urls`, each shard read by exactly one (rank, worker): no duplicates.

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
        wds.tarfile_to_samples(handler=skip),
        wds.map(decode, handler=skip),
        wds.map(crop, handler=skip),
        wds.map(caption, handler=skip),
        wds.batched(batch_size, collation_fn=collate, partial=True),
    )


def batches_per_worker(epoch_samples: int, batch_size: int, world_size: int, num_workers: int) -> int:
    """Equal batch count on every rank: ceil(epoch batches per rank / workers) per worker."""
    per_rank = max(1, epoch_samples // (batch_size * world_size))
    return math.ceil(per_rank / max(num_workers, 1))
