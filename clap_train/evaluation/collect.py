"""Accumulate validation embeddings on each rank and gather them into full sets."""

from __future__ import annotations

import torch
import torch.distributed as dist

from clap_train.distributed.gather import world_info


class EmbeddingCollector:
    """Per-batch embeddings -> full (de-duplicated) sets across ranks.

    `update(audio_embeds (B, D), text_embeds (N, D), text_to_audio (N,) batch-local, keys (B))`;
    `compute()` gathers every rank's rows (all_gather_object on CPU copies, so ranks may hold
    different counts), drops clips whose key was already seen (padding duplicates), and returns
    (audio (Na, D), text (Nt, D), text_to_audio (Nt,) global, keys).
    """

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self._audio, self._text, self._text_to_audio, self._keys = [], [], [], []

    def update(self, audio_embeds, text_embeds, text_to_audio, keys) -> None:
        self._audio.append(audio_embeds.detach().float().cpu())
        self._text.append(text_embeds.detach().float().cpu())
        self._text_to_audio.append(text_to_audio.detach().cpu())
        self._keys.append(list(keys))

    def compute(self):
        local = list(zip(self._audio, self._text, self._text_to_audio, self._keys))
        _, world_size = world_info()
        if world_size > 1:
            gathered = [None] * world_size
            dist.all_gather_object(gathered, local)
            local = [batch for rank_batches in gathered for batch in rank_batches]
        audio, text, text_to_audio, keys, seen = [], [], [], [], set()
        for batch_audio, batch_text, batch_t2a, batch_keys in local:
            offset = {}
            for i, key in enumerate(batch_keys):
                if key not in seen:
                    seen.add(key)
                    offset[i] = len(keys)
                    keys.append(key)
                    audio.append(batch_audio[i])
            for j, clip in enumerate(batch_t2a.tolist()):
                if clip in offset:
                    text.append(batch_text[j])
                    text_to_audio.append(offset[clip])
        if not audio:
            raise RuntimeError("no validation embeddings were collected")
        return torch.stack(audio), torch.stack(text), torch.tensor(text_to_audio), keys
