"""What each named validation set is scored on: retrieval, zero-shot classification, or both.

A validation set is a name and its shards (`data.val_shards`). Every set is scored by text-audio
retrieval over its captions; a set also listed under `evaluation.zeroshot` is in addition scored
as zero-shot classification of its clips against prompts built from class names (from a label
file, or from the shards' `tags`). `evaluate_set` is the one function that turns a gathered
`EmbeddingSet` into metrics, shared by validation during training and by `clap_train.evaluate`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.distributed.fsdp import FSDPModule

from clap_train.evaluation.collect import EmbeddingSet
from clap_train.evaluation.retrieval import retrieval_metrics
from clap_train.evaluation.zeroshot import (
    DEFAULT_TEMPLATES,
    build_prompts,
    class_names_from_tags,
    confusion_matrix,
    read_label_file,
    targets_from_tags,
    zeroshot_classifier,
    zeroshot_metrics,
)

RETRIEVAL_METRICS = tuple(
    f"{direction}_{name}"
    for direction in ("t2a", "a2t")
    for name in ("R@1", "R@5", "R@10", "mAP@10", "mean_rank", "median_rank")
)
SINGLE_LABEL_METRICS = ("top1_acc", "top5_acc", "num_classes")
MULTI_LABEL_METRICS = ("mAP", "num_classes_scored")


class ZeroShotTask:
    """Zero-shot classification of one validation set (the keys are those of `evaluation.zeroshot.<set>`).

    Args:
        label_file: class labels (`read_label_file`: AudioSet's class_labels_indices.csv or one name
            per line); None takes the sorted unique `tags` of the set's clips as the classes.
        templates: prompt templates with a `{label}` field, ensembled (`zeroshot_classifier`).
        multilabel: clips may carry several tags; report `mAP` instead of `top1_acc`/`top5_acc`.
        retrieval: also score text-audio retrieval on the set's captions.

    Raises:
        ValueError: on no templates or a template without `{label}`.
        FileNotFoundError: if `label_file` does not exist.
    """

    def __init__(self, label_file: str | None = None, templates: Sequence[str] = DEFAULT_TEMPLATES,
                 multilabel: bool = False, retrieval: bool = True):
        if len(templates) == 0:
            raise ValueError("templates must not be empty")
        for template in templates:
            build_prompts(["x"], template)  # raises naming a template without {label}
        self.templates = list(templates)
        self.multilabel, self.retrieval = multilabel, retrieval
        self.labels: tuple[list[str], list[str]] | None = None
        if label_file is not None:
            if not Path(label_file).is_file():
                raise FileNotFoundError(f"label_file {label_file} does not exist")
            self.labels = read_label_file(label_file)

    def metric_names(self) -> tuple[str, ...]:
        return MULTI_LABEL_METRICS if self.multilabel else SINGLE_LABEL_METRICS

    def classes_and_targets(self, tags: Sequence[Sequence[str]]) -> tuple[list[str], torch.Tensor]:
        """Class names and per-clip targets ((N,) int64, or (N, C) bool if multilabel) from clip tags.

        Tags may name a label file's ids (AudioSet mids) or its display names.

        Raises:
            ValueError: on clips without tags (single-label) or tags that are not classes.
        """
        if not self.multilabel:
            untagged = sum(1 for t in tags if len(t) == 0)
            if untagged:
                raise ValueError(f"{untagged} of {len(tags)} clips carry no shard 'tags' (zero-shot needs one per clip)")
        if self.labels is None:
            names = class_names_from_tags(tags)
            return names, targets_from_tags(tags, names, self.multilabel)
        names, ids = self.labels
        seen = set(class_names_from_tags(tags))
        lookup = ids if seen <= set(ids) or not seen <= set(names) else names
        return names, targets_from_tags(tags, lookup, self.multilabel)


def zeroshot_tasks(specs: Mapping[str, Mapping] | None, val_names: Sequence[str]) -> dict[str, ZeroShotTask]:
    """`ZeroShotTask(**spec)` per set of `evaluation.zeroshot`.

    Raises:
        ValueError: naming `evaluation.zeroshot.<name>` when no validation set has that name.
    """
    tasks = {}
    for name, spec in (specs or {}).items():
        if name not in val_names:
            raise ValueError(f"evaluation.zeroshot.{name}: no validation set named {name!r} in data.val_shards "
                             f"(sets: {list(val_names)})")
        tasks[name] = ZeroShotTask(**dict(spec or {}))
    return tasks


def metric_keys(val_names: Sequence[str], tasks: Mapping[str, ZeroShotTask]) -> list[str]:
    """Every `val/<set>/<metric>` key validation logs for these sets (per-fold accuracies come on top when
    the clips carry folds)."""
    keys = []
    for name in val_names:
        task = tasks.get(name)
        names = list(RETRIEVAL_METRICS) if task is None or task.retrieval else []
        names += list(task.metric_names()) if task is not None else []
        keys += [f"val/{name}/{metric}" for metric in (*names, "num_clips")]
    return keys


@dataclass
class SetResult:
    """Metrics of one set, the embeddings they came from and, for single-label zero-shot, the
    (C, C) confusion counts (row = true class) with the C class names."""

    metrics: dict[str, float]
    embeddings: EmbeddingSet
    class_names: list[str] | None = None
    confusion: torch.Tensor | None = None


def evaluate_set(name: str, embeddings: EmbeddingSet, task: ZeroShotTask | None,
                 text_embed_fn: Callable[[list[str]], torch.Tensor] | None) -> SetResult:
    """Score a gathered set: retrieval unless `task.retrieval` is False, zero-shot when `task` is given.

    Args:
        name: the set's name, used in error messages.
        embeddings: the full de-duplicated set (`EmbeddingCollector.compute`); zero-shot needs `tags`; a
            single-label task also reports `fold{f}/top{k}_acc` and `fold_mean/top{k}_acc` when the
            `folds` clip field names a fold (>= 0) for every clip.
        task: the set's zero-shot task or None (retrieval only).
        text_embed_fn: list of N prompts -> (N, D) text embeddings; needed (and called) for zero-shot only.

    Raises:
        ValueError: naming the set when it lacks captions (retrieval), tags or a text_embed_fn (zero-shot).
    """
    metrics: dict[str, float] = {}
    if task is None or task.retrieval:
        if embeddings.text_embeds is None:
            raise ValueError(f"validation set {name!r}: retrieval needs captions")
        metrics.update(retrieval_metrics(embeddings.audio_embeds, embeddings.text_embeds, embeddings.text_to_audio))
    result = SetResult(metrics, embeddings)
    if task is not None:
        if embeddings.tags is None:
            raise ValueError(f"validation set {name!r}: zero-shot needs the clips' tags in the batches")
        if text_embed_fn is None:
            raise ValueError(f"validation set {name!r}: zero-shot needs a tokenizer (the datamodule's) for prompts")
        try:
            class_names, targets = task.classes_and_targets(embeddings.tags)
        except ValueError as error:
            raise ValueError(f"validation set {name!r}: {error}") from error
        classifier = zeroshot_classifier(text_embed_fn, class_names, task.templates)  # (C, D)
        folds = embeddings.clip_fields.get("folds")
        if task.multilabel or folds is None or bool((folds < 0).any()):
            folds = None  # per-fold accuracies only when every clip names its fold (ESC-50)
        metrics.update(zeroshot_metrics(embeddings.audio_embeds, classifier, targets, folds=folds))
        result.class_names = class_names
        if not task.multilabel:
            metrics["num_classes"] = float(len(class_names))  # top-k by chance is k / num_classes
            predictions = (embeddings.audio_embeds.float() @ classifier.T).argmax(1)  # (N,)
            result.confusion = confusion_matrix(predictions, targets, len(class_names))
    metrics["num_clips"] = float(len(embeddings.keys))
    return result


class TextEmbedder:
    """list of N strings -> (N, D) unit-norm text embeddings on the CPU, `batch_size` prompts at a time.

    Args:
        model: a `CLAPModel` (its `encode_text` is called on `device`).
        tokenizer: a `CaptionTokenizer` (list[str] -> {'input_ids', 'attention_mask'}).
    """

    def __init__(self, model, tokenizer, device: torch.device, batch_size: int = 256):
        self.model, self.tokenizer, self.device, self.batch_size = model, tokenizer, device, batch_size

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> torch.Tensor:
        # Under FSDP2 `encode_text` is not `forward`, so the root's own parameters (projection heads)
        # are gathered here explicitly; the towers gather theirs in their forward hooks. A collective:
        # every rank must embed the same prompts.
        sharded = isinstance(self.model, FSDPModule)
        if sharded:
            self.model.unshard()
        try:
            embeds = []
            for start in range(0, len(texts), self.batch_size):
                tokens = self.tokenizer(texts[start : start + self.batch_size])
                embeds.append(self.model.encode_text(tokens["input_ids"].to(self.device),
                                                     tokens["attention_mask"].to(self.device)).float().cpu())
        finally:
            if sharded:
                self.model.reshard()
        return torch.cat(embeds)
