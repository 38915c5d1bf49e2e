"""The training stream and the evaluation split over shards written by data_pipelines.make_shards."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
import torch
import webdataset as wds
from torch.utils.data import DataLoader

from clap_train.data.pipeline import (
    MixSources,
    ReseedingLoader,
    TrainStream,
    batches_per_worker,
    build_eval_dataset,
    count_samples,
    tar_samples,
)
from clap_train.data.stages import Collate, SkipCounter, sample_stages
from clap_train.data.tokenizer import CaptionTokenizer
from data_pipelines.shards import expand_shards
from tests.data.conftest import BAD_KEYS, CLIP_SAMPLES, SAMPLE_RATE


def _urls(directory) -> list[str]:
    return expand_shards(str(directory / "train-*.tar"))


def _stream(tokenizer_path, sources, batch_size=4, per_worker=5, seed=0, rank=0, weights=None, shuffle=8,
            reseed_every=None, **stage_kw):
    skip = SkipCounter()
    stages = sample_stages(SAMPLE_RATE, CLIP_SAMPLES, **stage_kw)
    return TrainStream(sources, weights, stages, Collate(CaptionTokenizer(tokenizer_path, 77), skip), skip,
                       batch_size, per_worker, shuffle, rank, seed, reseed_every)


def _eval(tokenizer_path, urls, rank=0, world=1, workers=0, batch_size=4):
    skip = SkipCounter()
    stages = sample_stages(SAMPLE_RATE, CLIP_SAMPLES, train=False)
    return build_eval_dataset(urls, stages, Collate(CaptionTokenizer(tokenizer_path, 77), skip), skip, batch_size,
                              rank, world, workers)


def _keys(batches) -> list[str]:
    return [k for b in batches for k in b["key"]]


def test_eval_pass_skips_and_counts_corrupt_members(tokenizer_path, corrupt_dir):
    batches = list(_eval(tokenizer_path, _urls(corrupt_dir)))
    keys = _keys(batches)
    assert sum(int(b["num_skipped"]) for b in batches) == len(BAD_KEYS)
    assert not set(keys) & set(BAD_KEYS) and len(keys) == len(set(keys)) == 13  # 12 good + unicode
    assert all(b["waveform"].shape[1] == CLIP_SAMPLES and torch.isfinite(b["waveform"]).all() for b in batches)
    unicode_batch = next(b for b in batches if "u_unicode" in b["key"])
    assert unicode_batch["input_ids"].shape[1] == 77
    # evaluation keeps both captions of every make_shards clip and the one of the unicode clip
    assert sum(len(b["text_to_audio"]) for b in batches) == 2 * 12 + 1


def test_train_stream_survives_corrupt_shards(tokenizer_path, corrupt_dir):
    batches = list(_stream(tokenizer_path, [_urls(corrupt_dir)], batch_size=5, per_worker=8))
    assert len(batches) == 8 and all(len(b["key"]) == 5 for b in batches)
    assert not set(_keys(batches)) & set(BAD_KEYS)
    assert sum(int(b["num_skipped"]) for b in batches) > 0


def test_eval_split_over_two_ranks_loses_and_duplicates_nothing(tokenizer_path, source_a):
    urls = _urls(source_a)
    per_rank = [_keys(_eval(tokenizer_path, urls, rank, 2)) for rank in range(2)]
    assert not set(per_rank[0]) & set(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == [f"a_{i:04d}" for i in range(48)]


def test_eval_split_two_ranks_two_forkserver_workers(tokenizer_path, source_a):
    urls = _urls(source_a)
    keys = []
    for rank in range(2):
        dataset = _eval(tokenizer_path, urls, rank, 2, workers=2)
        loader = DataLoader(dataset, batch_size=None, num_workers=2, multiprocessing_context="forkserver")
        keys += _keys(loader)
    assert sorted(keys) == [f"a_{i:04d}" for i in range(48)]  # none lost, none duplicated


def test_eval_split_refuses_too_few_shards(tokenizer_path, source_b):
    with pytest.raises(ValueError, match="2 shards cannot be split over 2 ranks x 2 workers"):
        _eval(tokenizer_path, _urls(source_b), 0, 2, workers=2)


def test_train_stream_deterministic_per_seed(tokenizer_path, source_a):
    urls = [_urls(source_a)]
    first = [_keys(_stream(tokenizer_path, urls, seed=s)) for s in (1, 1, 2)]
    assert first[0] == first[1] and first[0] != first[2]
    waves = [b["waveform"] for b in _stream(tokenizer_path, urls, seed=1)]
    assert all(torch.equal(x, y["waveform"]) for x, y in zip(waves, _stream(tokenizer_path, urls, seed=1)))


def test_reseeding_loader_gives_each_epoch_a_new_order(tokenizer_path, source_a):
    epochs = iter(range(10))
    loader = ReseedingLoader(_stream(tokenizer_path, [_urls(source_a)]), lambda: next(epochs))
    orders = [_keys(loader) for _ in range(3)]
    assert len({tuple(o) for o in orders}) == 3 and all(len(o) == 20 for o in orders)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_positioned_loader_continues_the_epoch(tokenizer_path, source_a, workers):
    """Started at batch s (a resume), the loader yields exactly the epoch's batches s, s+1, ...: same keys
    and crops, its workers rotated, each dropping what precedes its position in a 2-batch segment."""
    def epoch(start):
        stream = _stream(tokenizer_path, [_urls(source_a)], per_worker=5, seed=7, reseed_every=2)
        loader = ReseedingLoader(stream, lambda: 7, lambda: start, num_workers=workers,
                                 multiprocessing_context="forkserver" if workers else None)
        return [(b["key"], b["waveform"]) for b in loader], len(loader)

    full, length = epoch(0)
    assert length == len(full) == 5 * max(workers, 1)
    for start in (1, 4) if workers else (2, 3, 5):
        resumed, _ = epoch(start)
        assert [k for k, _ in resumed] == [k for k, _ in full[start:]]
        assert all(torch.equal(a, b) for (_, a), (_, b) in zip(resumed, full[start:], strict=True))


def test_one_shard_two_ranks_two_workers_equal_batches(tokenizer_path, one_shard):
    per_worker = batches_per_worker(epoch_samples=30, batch_size=4, world_size=2, num_workers=2)
    counts = []
    for rank in range(2):
        stream = _stream(tokenizer_path, [_urls(one_shard)], per_worker=per_worker, rank=rank)
        loader = ReseedingLoader(stream, lambda: 3, num_workers=2, multiprocessing_context="forkserver")
        batches = list(loader)
        assert all(len(b["key"]) == 4 for b in batches)
        counts.append(len(batches))
    assert counts == [2 * per_worker] * 2 == [4, 4]


def test_sources_mixed_with_weights(tokenizer_path, source_a, source_b):
    stream = _stream(tokenizer_path, [_urls(source_a), _urls(source_b)], batch_size=10, per_worker=60,
                     weights=[3.0, 1.0], seed=5)
    prefixes = Counter(k[0] for k in _keys(stream))
    assert abs(prefixes["a"] / 600 - 0.75) < 0.05
    with pytest.raises(ValueError, match="weights"):
        MixSources([[], []], [1.0, 0.0], 0)


def test_mix_sources_proportions_exact_generator():
    mixed = MixSources([itertools.repeat("a"), itertools.repeat("b")], [1.0, 4.0], seed=0)
    draws = Counter(itertools.islice(iter(mixed), 5000))
    assert abs(draws["b"] / 5000 - 0.8) < 0.02


def test_count_samples_from_sizes_json(source_a, tmp_path):
    assert count_samples(_urls(source_a)) == 48
    (tmp_path / "x-000000.tar").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="sizes.json"):
        count_samples([str(tmp_path / "x-000000.tar")])
    with pytest.raises(FileNotFoundError, match="data.train_shards"):
        expand_shards(str(tmp_path / "y-{000000..000001}.tar"), "data.train_shards")


def test_batches_per_worker_rounds_up_per_rank():
    assert batches_per_worker(100, 10, 2, 2) == 3  # 5 per rank -> 3 per worker, 6 per rank
    assert batches_per_worker(3, 10, 4, 0) == 1


def test_tar_samples_reads_local_paths_and_pipe_urls_alike(source_a):
    def keys(urls):
        return [s["__key__"] for s in wds.DataPipeline(wds.SimpleShardList(urls), tar_samples(handler=wds.reraise_exception))]

    local = keys(_urls(source_a))
    assert len(local) == 48 and local == keys([f"pipe:cat {url}" for url in _urls(source_a)])
