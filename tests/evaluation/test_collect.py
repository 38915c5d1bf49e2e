"""EmbeddingCollector: batch-local indices made global, de-duplication, and 2 gloo ranks == one process."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from clap_train.evaluation.collect import EmbeddingCollector
from clap_train.evaluation.retrieval import retrieval_metrics
from clap_train.evaluation.zeroshot import zeroshot_metrics

NUM_CLIPS, CAPTIONS, DIM = 11, 2, 8


def make_dataset():
    """11 clips with 2 captions each, a class target and a fold; keys in reverse order of rows."""
    gen = torch.Generator().manual_seed(0)
    audio = F.normalize(torch.randn(NUM_CLIPS, DIM, generator=gen), dim=-1)
    text = F.normalize(
        audio.repeat_interleave(CAPTIONS, 0) + torch.randn(NUM_CLIPS * CAPTIONS, DIM, generator=gen), dim=-1
    )
    keys = [f"clip{NUM_CLIPS - i:03d}" for i in range(NUM_CLIPS)]
    return audio, text, keys, torch.arange(NUM_CLIPS) % 3, torch.arange(NUM_CLIPS) % 2


def feed(collector, clip_ids, batch_size):
    """Feed the given clip rows (repeats allowed) in batches, captions with batch-local indices."""
    audio, text, keys, targets, folds = make_dataset()
    for start in range(0, len(clip_ids), batch_size):
        ids = clip_ids[start : start + batch_size]
        caption_rows = torch.tensor([c * CAPTIONS + j for c in ids for j in range(CAPTIONS)])
        collector.update(
            audio[ids],
            [keys[c] for c in ids],
            text_embeds=text[caption_rows],
            text_to_audio=torch.arange(len(ids)).repeat_interleave(CAPTIONS),
            tags=[[f"class{int(targets[c])}"] for c in ids],
            captions=[f"{keys[c]}#{j}" for c in ids for j in range(CAPTIONS)],
            targets=targets[ids],
            folds=folds[ids],
        )


def strings_follow_rows(result) -> bool:
    """Tags follow their clip's row, captions their caption's row (and through it the clip's)."""
    _, text, keys, targets, _ = make_dataset()
    tags_ok = result.tags == [[f"class{int(targets[keys.index(k)])}"] for k in result.keys]
    captions_ok = len(result.captions) == len(result.text_embeds)
    for row, caption in enumerate(result.captions):
        key, j = caption.split("#")
        captions_ok &= result.keys[int(result.text_to_audio[row])] == key
        captions_ok &= torch.equal(result.text_embeds[row], text[keys.index(key) * CAPTIONS + int(j)])
    return bool(tags_ok and captions_ok)


def single_process_metrics():
    audio, text, _, targets, folds = make_dataset()
    t2a = torch.arange(NUM_CLIPS).repeat_interleave(CAPTIONS)
    metrics = retrieval_metrics(audio, text, t2a)
    metrics.update(zeroshot_metrics(audio, audio[:3], targets, folds=folds))
    return metrics


def metrics_of(result):
    metrics = retrieval_metrics(result.audio_embeds, result.text_embeds, result.text_to_audio)
    targets, folds = result.clip_fields["targets"], result.clip_fields["folds"]
    audio, _, _, _, _ = make_dataset()
    metrics.update(zeroshot_metrics(result.audio_embeds, audio[:3], targets, folds=folds))
    return metrics


def test_single_process_globalises_indices_and_deduplicates():
    collector = EmbeddingCollector()
    feed(collector, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 3], batch_size=4)  # padding repeats clips 0 and 3
    result = collector.compute()
    audio, text, keys, _, _ = make_dataset()
    assert result.keys == sorted(keys) and len(result.text_embeds) == NUM_CLIPS * CAPTIONS
    row_of_key = {k: i for i, k in enumerate(result.keys)}
    for caption in range(NUM_CLIPS * CAPTIONS):
        clip = caption // CAPTIONS
        matches = (result.text_embeds == text[caption]).all(1).nonzero().flatten()
        assert len(matches) == 1
        assert result.text_to_audio[matches[0]] == row_of_key[keys[clip]]
        assert torch.equal(result.audio_embeds[row_of_key[keys[clip]]], audio[clip])
    assert metrics_of(result) == pytest.approx(single_process_metrics())
    assert strings_follow_rows(result)
    collector.reset()
    with pytest.raises(ValueError, match="no clips"):
        collector.compute()


def test_update_validation():
    collector = EmbeddingCollector()
    with pytest.raises(ValueError, match="keys"):
        collector.update(torch.zeros(2, 4), ["a"])
    with pytest.raises(ValueError, match="together"):
        collector.update(torch.zeros(1, 4), ["a"], text_embeds=torch.zeros(1, 4))
    with pytest.raises(ValueError, match="index the batch"):
        collector.update(torch.zeros(1, 4), ["a"], text_embeds=torch.zeros(1, 4), text_to_audio=torch.tensor([1]))
    with pytest.raises(ValueError, match="tags has 2"):
        collector.update(torch.zeros(1, 4), ["a"], tags=[["x"], ["y"]])
    with pytest.raises(ValueError, match="captions must come with text_embeds"):
        collector.update(torch.zeros(1, 4), ["a"], captions=["a caption"])
    collector.update(torch.zeros(1, 4), ["a"])
    with pytest.raises(ValueError, match="in every batch or in none"):
        collector.update(torch.zeros(1, 4), ["b"], tags=[["x"]])
    with pytest.raises(ValueError, match="every batch"):
        collector.update(torch.zeros(1, 4), ["b"], text_embeds=torch.zeros(1, 4), text_to_audio=torch.tensor([0]))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world_size, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        # DistributedSampler-like split of 11 clips over 2 ranks: 6 each, rank 1 padded with clip 0;
        # batch size 4 leaves an uneven last batch (4 + 2)
        order = [3, 7, 1, 10, 5, 9, 0, 8, 2, 6, 4, 0]
        collector = EmbeddingCollector()
        feed(collector, order[rank::world_size], batch_size=4)
        result = collector.compute()
        # audio-only (zero-shot) set where rank 1 saw no batch at all: it still joins the collectives
        audio_only = EmbeddingCollector()
        if rank == 0:
            audio, _, keys, targets, _ = make_dataset()
            audio_only.update(audio[:3], keys[:3], targets=targets[:3])
            audio_only.update(audio[3:], keys[3:], targets=targets[3:])
        zero_shot = audio_only.compute()
        torch.save(
            {
                "metrics": metrics_of(result),
                "strings_follow_rows": strings_follow_rows(result),
                "keys": result.keys,
                "zero_shot_keys": zero_shot.keys,
                "zero_shot_targets": zero_shot.clip_fields["targets"],
                "zero_shot_has_text": zero_shot.text_embeds is not None,
            },
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_match_single_process(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    expected = single_process_metrics()
    for rank in range(2):
        out = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert out["keys"] == sorted(make_dataset()[2])
        assert out["metrics"] == pytest.approx(expected, abs=1e-12)
        assert out["strings_follow_rows"]
        _, _, keys, targets, _ = make_dataset()
        assert out["zero_shot_keys"] == sorted(keys) and not out["zero_shot_has_text"]
        assert out["zero_shot_targets"].tolist() == [int(targets[keys.index(k)]) for k in sorted(keys)]
