"""Zero-shot classification from text prompts: classifier building, accuracy and mAP.

Single-label sets (ESC-50, UrbanSound8K, ...) report top-k accuracy, optionally per fold; multi-label
sets (AudioSet) report the macro mean over classes of the average precision. All functions are pure
functions of embeddings; docs/evaluation.md gives the protocol.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

DEFAULT_TEMPLATES = ("This is a sound of {label}.",)


def build_prompts(class_names: Sequence[str], template: str) -> list[str]:
    """One prompt per class: `template.format(label=name)`.

    Raises:
        ValueError: if `template` has no `{label}` field.
    """
    if "{label}" not in template:
        raise ValueError(f"template must contain '{{label}}', got {template!r}")
    return [template.format(label=name) for name in class_names]


@torch.no_grad()
def zeroshot_classifier(
    text_embed_fn: Callable[[list[str]], torch.Tensor],
    class_names: Sequence[str],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
) -> torch.Tensor:
    """Class embeddings from prompts -> (num_classes, D), unit-norm rows.

    Each template gives one prompt per class; the prompt embeddings are normalised, averaged over
    templates and normalised again (prompt ensembling as in CLIP / LAION-CLAP).

    Args:
        text_embed_fn: maps a list of N strings to (N, D) embeddings (tokenise + encode_text).
        class_names: the C class names, in label-index order.
        templates: format strings with a `{label}` field.

    Raises:
        ValueError: on no classes, no templates, or an embedding of the wrong shape.
    """
    if len(class_names) == 0:
        raise ValueError("class_names must not be empty")
    if len(templates) == 0:
        raise ValueError("templates must not be empty")
    total = None
    for template in templates:
        embeds = text_embed_fn(build_prompts(class_names, template))
        if embeds.ndim != 2 or embeds.shape[0] != len(class_names):
            raise ValueError(f"text_embed_fn returned shape {tuple(embeds.shape)}, expected ({len(class_names)}, D)")
        embeds = F.normalize(embeds.float(), dim=-1)
        total = embeds if total is None else total + embeds
    return F.normalize(total, dim=-1)


def average_precision(scores: torch.Tensor, positives: torch.Tensor) -> float:
    """Average precision of one class: sum over thresholds of (R_n - R_{n-1}) * P_n.

    Tied scores form a single threshold (as sklearn's `average_precision_score`), so the value does
    not depend on the order of tied items.

    Args:
        scores: (N,) scores.
        positives: (N,) bool, True for the relevant items. Must hold at least one True.
    """
    order = torch.argsort(scores.double(), descending=True, stable=True)
    sorted_scores = scores.double()[order]
    hits = positives.bool()[order].double()
    tp = hits.cumsum(0)
    fp = (1 - hits).cumsum(0)
    # keep the last index of each run of equal scores: the operating points of the PR curve
    last_of_group = torch.ones_like(sorted_scores, dtype=torch.bool)
    last_of_group[:-1] = sorted_scores[1:] != sorted_scores[:-1]
    tp, fp = tp[last_of_group], fp[last_of_group]
    precision = tp / (tp + fp)
    recall = tp / tp[-1]
    recall_step = torch.diff(recall, prepend=torch.zeros(1, dtype=recall.dtype))
    return float((recall_step * precision).sum())


def confusion_matrix(predictions: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts; row = true class, column = predicted class."""
    flat = targets.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def zeroshot_metrics(
    audio_embeds: torch.Tensor,
    classifier: torch.Tensor,
    targets: torch.Tensor,
    folds: torch.Tensor | None = None,
    ks: Sequence[int] = (1, 5),
) -> dict[str, float]:
    """Zero-shot metrics of clips scored against class embeddings.

    Args:
        audio_embeds: (N, D) unit-norm clip embeddings.
        classifier: (C, D) unit-norm class embeddings (`zeroshot_classifier`).
        targets: (N,) int64 class index (single-label) or (N, C) multi-hot (multi-label).
        folds: optional (N,) fold id per clip (single-label only): adds per-fold accuracies.
        ks: top-k accuracy cut-offs (single-label).

    Returns:
        single-label: `top{k}_acc` over all clips; with folds also `fold{f}/top{k}_acc` per fold and
            `fold_mean/top{k}_acc`, the unweighted mean of the per-fold values.
        multi-label: `mAP`, the mean over classes with at least one positive of `average_precision`,
            and `num_classes_scored`, how many classes that is.

    Raises:
        ValueError: on shape mismatches, out-of-range targets, or folds with multi-label targets.
    """
    if audio_embeds.ndim != 2 or classifier.ndim != 2 or audio_embeds.shape[1] != classifier.shape[1]:
        raise ValueError(
            f"audio_embeds (N, D) and classifier (C, D) must share D, got {tuple(audio_embeds.shape)} "
            f"and {tuple(classifier.shape)}"
        )
    num_clips, num_classes = audio_embeds.shape[0], classifier.shape[0]
    if num_clips == 0:
        raise ValueError("zeroshot_metrics needs at least one clip")
    logits = audio_embeds.detach().float().cpu() @ classifier.detach().float().cpu().T  # (N, C)
    targets = targets.detach().cpu()
    if targets.ndim == 2:
        if targets.shape != (num_clips, num_classes):
            raise ValueError(
                f"multi-hot targets must have shape ({num_clips}, {num_classes}), got {tuple(targets.shape)}"
            )
        if folds is not None:
            raise ValueError("folds are only supported for single-label targets")
        return _multilabel_metrics(logits, targets.bool())
    if targets.shape != (num_clips,):
        raise ValueError(
            f"targets must have shape ({num_clips},) or ({num_clips}, {num_classes}), got {tuple(targets.shape)}"
        )
    targets = targets.long()
    if targets.min() < 0 or targets.max() >= num_classes:
        raise ValueError(f"targets must lie in [0, {num_classes}), got min {targets.min()} max {targets.max()}")
    # rank of the true class among the classes; ties count against it as in retrieval_metrics
    target_logits = logits.gather(1, targets[:, None])  # (N, 1)
    ranks = (logits >= target_logits).sum(1) - 1  # (N,): pessimistic, the target itself excluded
    metrics = {f"top{k}_acc": float((ranks < k).double().mean()) for k in ks}
    if folds is None:
        return metrics
    folds = folds.detach().cpu()
    if folds.shape != (num_clips,):
        raise ValueError(f"folds must have shape ({num_clips},), got {tuple(folds.shape)}")
    fold_ids = sorted(int(f) for f in torch.unique(folds))
    for k in ks:
        per_fold = [float((ranks[folds == f] < k).double().mean()) for f in fold_ids]
        metrics.update({f"fold{f}/top{k}_acc": value for f, value in zip(fold_ids, per_fold)})
        metrics[f"fold_mean/top{k}_acc"] = sum(per_fold) / len(per_fold)
    return metrics


def _multilabel_metrics(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    scored = [c for c in range(targets.shape[1]) if targets[:, c].any()]
    if not scored:
        raise ValueError("multi-label targets have no positive for any class")
    aps = [average_precision(logits[:, c], targets[:, c]) for c in scored]
    return {"mAP": sum(aps) / len(aps), "num_classes_scored": float(len(scored))}


def class_names_from_tags(tags_per_clip: Iterable[Iterable[str] | str]) -> list[str]:
    """Sorted unique class names from per-clip shard `tags` (a string or a list of strings per clip)."""
    names = set()
    for tags in tags_per_clip:
        names.update([tags] if isinstance(tags, str) else tags)
    return sorted(names)


def read_label_file(path: str | Path) -> tuple[list[str], list[str]]:
    """Class labels from a file -> (display names, ids), both in label-index order.

    Two formats:
    - a CSV with header `index,mid,display_name` (AudioSet's class_labels_indices.csv): rows are
      ordered by `index`, ids are the mids, names the display names;
    - otherwise one class name per line (blank lines ignored): ids are the names.

    Raises:
        ValueError: if the file holds no labels or the CSV indices are not 0..C-1.
    """
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    if lines and [h.strip() for h in lines[0].split(",")] == ["index", "mid", "display_name"]:
        rows = list(csv.DictReader(lines))
        rows.sort(key=lambda row: int(row["index"]))
        if [int(row["index"]) for row in rows] != list(range(len(rows))):
            raise ValueError(f"{path}: the index column must be 0..{len(rows) - 1}")
        names, ids = [row["display_name"] for row in rows], [row["mid"] for row in rows]
    else:
        names = [line.strip() for line in lines if line.strip()]
        ids = list(names)
    if not names:
        raise ValueError(f"{path}: no class labels found")
    return names, ids


def targets_from_tags(
    tags_per_clip: Sequence[Iterable[str] | str], class_ids: Sequence[str], multi_label: bool
) -> torch.Tensor:
    """Per-clip targets from shard tags: (N,) int64 class index, or (N, C) bool multi-hot.

    Raises:
        ValueError: on a tag not in `class_ids`, or a single-label clip without exactly one tag.
    """
    index = {name: i for i, name in enumerate(class_ids)}
    rows = []
    for clip, tags in enumerate(tags_per_clip):
        tags = [tags] if isinstance(tags, str) else list(tags)
        unknown = [t for t in tags if t not in index]
        if unknown:
            raise ValueError(f"clip {clip}: tags {unknown} are not among the {len(index)} class ids")
        rows.append([index[t] for t in tags])
    if not multi_label:
        if any(len(r) != 1 for r in rows):
            raise ValueError("single-label targets need exactly one tag per clip")
        return torch.tensor([r[0] for r in rows], dtype=torch.long)
    targets = torch.zeros(len(rows), len(class_ids), dtype=torch.bool)
    for clip, r in enumerate(rows):
        targets[clip, r] = True
    return targets
