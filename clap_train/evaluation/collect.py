"""Accumulate validation embeddings per rank and gather them into one de-duplicated set.

Metrics are computed on the full set (every rank gets it), so they do not depend on the number of
processes: padding a DistributedSampler adds to the last batches is removed by de-duplicating on
the clip `key`, and the rows are sorted by key so every world size yields identical tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from clap_train.distributed.gather import gather_variable_rows, world_info


@dataclass
class EmbeddingSet:
    """A full evaluation set, one row per unique clip, sorted by key.

    audio_embeds: (Na, D); keys: Na clip keys; text_embeds: (Nt, D) or None; text_to_audio: (Nt,)
    int64 row of each caption's clip, or None; clip_fields: per-clip tensors with Na rows
    (targets, folds, ...); tags: Na per-clip tag lists (shard `tags`), or None; captions: Nt caption
    strings aligned with text_embeds, or None.
    """

    audio_embeds: torch.Tensor
    keys: list[str]
    text_embeds: torch.Tensor | None = None
    text_to_audio: torch.Tensor | None = None
    clip_fields: dict[str, torch.Tensor] = field(default_factory=dict)
    tags: list[list[str]] | None = None
    captions: list[str] | None = None


def _gather_rows(x: torch.Tensor) -> torch.Tensor:
    """`gather_variable_rows` on the backend's device (NCCL needs CUDA tensors); result on the CPU."""
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else x.device
    return gather_variable_rows(x.to(device)).cpu()


def _all_gather_objects(item) -> list:
    gathered = [None] * world_info()[1]
    dist.all_gather_object(gathered, item)
    return gathered


class NoClipsCollected(ValueError):
    """A validation set none of whose samples reached the model (every one skipped, or none read)."""


class EmbeddingCollector:
    """Per-batch accumulator of validation embeddings.

    Call `update` once per batch with that batch's outputs (text_to_audio is batch-local, as in the
    batch contract), then `compute()` once at the end; `reset()` before the next epoch. Rows are
    kept detached on the CPU.
    """

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self._audio: list[torch.Tensor] = []
        self._text: list[torch.Tensor] = []
        self._text_to_audio: list[torch.Tensor] = []
        self._keys: list[str] = []
        self._tags: list[list[str]] | None = None
        self._captions: list[str] | None = None
        self._fields: dict[str, list[torch.Tensor]] = {}
        self._num_clips = 0

    def update(
        self,
        audio_embeds: torch.Tensor,
        keys: list[str],
        text_embeds: torch.Tensor | None = None,
        text_to_audio: torch.Tensor | None = None,
        tags: list[list[str]] | None = None,
        captions: list[str] | None = None,
        **clip_fields: torch.Tensor,
    ) -> None:
        """Add one batch.

        Args:
            audio_embeds: (B, D) clip embeddings.
            keys: B clip keys; equal keys must mean the same clip (padding duplicates).
            text_embeds: (N, D) caption embeddings, or None for audio-only (zero-shot) sets.
            text_to_audio: (N,) batch-local clip index of each caption; required with text_embeds.
            tags: B per-clip tag lists (zero-shot targets), or None.
            captions: N caption strings (for reports), or None; only with text_embeds.
            clip_fields: per-clip tensors with B rows (e.g. targets=(B,) or (B, C), folds=(B,)).

        Raises:
            ValueError: on inconsistent sizes, or text, tags or captions given in some batches and not in others.
        """
        batch = audio_embeds.shape[0]
        if len(keys) != batch:
            raise ValueError(f"keys has {len(keys)} entries for {batch} clips")
        if (text_embeds is None) != (text_to_audio is None):
            raise ValueError("text_embeds and text_to_audio must be given together")
        if self._keys and (text_embeds is None) != (not self._text):
            raise ValueError("text_embeds must be given in every batch or in none")
        if tags is not None and len(tags) != batch:
            raise ValueError(f"tags has {len(tags)} entries for {batch} clips")
        if captions is not None and (text_embeds is None or len(captions) != text_embeds.shape[0]):
            raise ValueError("captions must come with text_embeds, one per caption")
        if self._keys and ((tags is None) != (self._tags is None) or (captions is None) != (self._captions is None)):
            raise ValueError("tags and captions must each be given in every batch or in none")
        if text_embeds is not None:
            if text_to_audio.shape != (text_embeds.shape[0],):
                raise ValueError(f"text_to_audio must have shape ({text_embeds.shape[0]},), got {text_to_audio.shape}")
            if len(text_to_audio) and (text_to_audio.min() < 0 or text_to_audio.max() >= batch):
                raise ValueError(f"text_to_audio must index the batch's {batch} clips")
            self._text.append(text_embeds.detach().float().cpu())
            self._text_to_audio.append(text_to_audio.detach().long().cpu() + self._num_clips)
        if self._keys and set(clip_fields) != set(self._fields):
            raise ValueError(f"clip_fields {sorted(clip_fields)} differ from earlier batches' {sorted(self._fields)}")
        for name, value in clip_fields.items():
            if value.shape[0] != batch:
                raise ValueError(f"clip field {name!r} has {value.shape[0]} rows for {batch} clips")
            self._fields.setdefault(name, []).append(value.detach().cpu())
        self._audio.append(audio_embeds.detach().float().cpu())
        self._keys.extend(keys)
        if tags is not None:
            self._tags = self._tags if self._tags is not None else []
            self._tags.extend(list(t) for t in tags)
        if captions is not None:
            self._captions = self._captions if self._captions is not None else []
            self._captions.extend(captions)
        self._num_clips += batch

    def compute(self, gather: bool = True) -> EmbeddingSet:
        """The de-duplicated set, from all ranks if `gather` (a collective: every rank must call it).

        Captions of a duplicated clip are dropped with it (the first occurrence in rank order is kept),
        and rows are sorted by key. A rank that collected nothing contributes no rows.

        Raises:
            ValueError: if nothing was collected on any rank.
        """
        local = self._local_tensors()
        keys, tags, captions = list(self._keys), self._tags, self._captions
        rank, world_size = world_info()
        if gather and world_size > 1:
            # keys, strings, row counts and tensor layouts first, so ranks that saw nothing can join in
            layout = {name: (tuple(t.shape[1:]), t.dtype) for name, t in local.items()}
            infos = _all_gather_objects((keys, layout, tags, captions))
            keys = [key for rank_keys, *_ in infos for key in rank_keys]
            tags = _concat_optional([info[2] for info in infos if info[0]])
            captions = _concat_optional([info[3] for info in infos if info[0]])
            layouts = {}
            for _, rank_layout, *_ in infos:
                layouts.update(rank_layout)
            clip_offset = sum(len(rank_keys) for rank_keys, *_ in infos[:rank])
            if "text_to_audio" in local:
                local["text_to_audio"] = local["text_to_audio"] + clip_offset  # rows of the all-rank audio
            local = {
                name: _gather_rows(local.get(name, torch.zeros((0, *shape), dtype=dtype)))
                for name, (shape, dtype) in sorted(layouts.items())
            }
        if not keys:
            raise NoClipsCollected("EmbeddingCollector.compute: no clips were collected")
        text, text_to_audio = local.pop("text_embeds", None), local.pop("text_to_audio", None)
        audio = local.pop("audio_embeds")
        return _deduplicate(keys, audio, text, text_to_audio, local, tags, captions)

    def _local_tensors(self) -> dict[str, torch.Tensor]:
        """This rank's rows: audio_embeds, text_embeds, text_to_audio (global on this rank), fields."""
        if not self._keys:
            return {}
        tensors = {"audio_embeds": torch.cat(self._audio)}
        if self._text:
            tensors["text_embeds"] = torch.cat(self._text)
            tensors["text_to_audio"] = torch.cat(self._text_to_audio)
        tensors.update({name: torch.cat(values) for name, values in self._fields.items()})
        return tensors


def _concat_optional(parts: list[list | None]) -> list | None:
    """Concatenate per-rank lists; None when the ranks that collected clips kept no such list."""
    if not parts or any(part is None for part in parts):
        return None
    return [item for part in parts for item in part]


def _deduplicate(keys, audio, text, text_to_audio, fields, tags=None, captions=None) -> EmbeddingSet:
    """Keep the first row of each key, drop captions of dropped rows, sort rows by key."""
    first_row = {}
    for row, key in enumerate(keys):
        first_row.setdefault(key, row)
    kept_keys = sorted(first_row)
    kept_rows = torch.tensor([first_row[k] for k in kept_keys], dtype=torch.long)
    new_index = torch.full((len(keys),), -1, dtype=torch.long)
    new_index[kept_rows] = torch.arange(len(kept_rows))
    result = EmbeddingSet(
        audio_embeds=audio[kept_rows],
        keys=kept_keys,
        clip_fields={name: value[kept_rows] for name, value in fields.items()},
        tags=[tags[row] for row in kept_rows.tolist()] if tags is not None else None,
    )
    if text is not None:
        mapped = new_index[text_to_audio]  # (Nt,) -1 for captions of dropped duplicate rows
        keep = mapped >= 0
        order = torch.argsort(mapped[keep], stable=True)  # captions grouped in clip (key) order
        result.text_embeds = text[keep][order]
        result.text_to_audio = mapped[keep][order]
        if captions is not None:
            kept_captions = [caption for caption, kept in zip(captions, keep.tolist()) if kept]
            result.captions = [kept_captions[i] for i in order.tolist()]
    return result
