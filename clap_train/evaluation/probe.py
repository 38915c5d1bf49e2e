"""Linear (or one-hidden-layer) probes on frozen embeddings, with cross-validation: pure torch, deterministic.

The linear probe is multinomial logistic regression (sigmoid per class for multi-label sets) on standardised
features (the training rows' mean and std, kept in the head), fitted on the full batch with L-BFGS and an L2 penalty; `hidden` > 0 adds one ReLU layer, fitted with full-batch Adam.
Parameters are initialised from `seed` and no step depends on anything else, so a run repeats exactly on
the CPU. Single-label sets report accuracy, multi-label sets the macro mAP (`zeroshot.average_precision`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from clap_train.evaluation.zeroshot import average_precision


class Standardize(nn.Module):
    """(x - mean) / std per feature, with the training rows' statistics as buffers (saved with the head)."""

    def __init__(self, features: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", features.mean(dim=0))
        self.register_buffer("std", features.std(dim=0) + 1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def build_head(features: torch.Tensor, num_classes: int, hidden: int = 0) -> nn.Sequential:
    """Standardize (statistics of `features` (N, D)) -> Linear, or -> Linear -> ReLU -> Linear with `hidden`."""
    embed_dim = features.shape[1]
    layers = [nn.Linear(embed_dim, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)] if hidden > 0 else [
        nn.Linear(embed_dim, num_classes)]
    return nn.Sequential(Standardize(features), *layers)


def _loss(logits: torch.Tensor, targets: torch.Tensor, multilabel: bool) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, targets.float()) if multilabel else F.cross_entropy(logits,
                                                                                                        targets)


def fit_probe(features: torch.Tensor, targets: torch.Tensor, num_classes: int, multilabel: bool = False,
              hidden: int = 0, weight_decay: float = 1e-3, steps: int = 300, seed: int = 0) -> nn.Module:
    """A head trained on `features` (N, D) and `targets` ((N,) int64, or (N, C) multi-hot); the features are
    standardised with their own statistics first (part of the head)."""
    torch.manual_seed(seed)
    features = features.float()
    head = build_head(features, num_classes, hidden)
    params = list(head.parameters())

    def objective() -> torch.Tensor:
        penalty = sum((p ** 2).sum() for p in params if p.dim() > 1)
        return _loss(head(features), targets, multilabel) + weight_decay * penalty

    if hidden > 0:
        optimizer = torch.optim.Adam(params, lr=1e-3)
        for _ in range(steps):
            optimizer.zero_grad()
            objective().backward()
            optimizer.step()
    else:
        optimizer = torch.optim.LBFGS(params, lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            loss = objective()
            loss.backward()
            return loss

        optimizer.step(closure)
    return head.eval()


@torch.no_grad()
def score(head: nn.Module, features: torch.Tensor, targets: torch.Tensor, multilabel: bool) -> float:
    """Accuracy (single-label) or macro mAP over classes with a positive (multi-label)."""
    logits = head(features.float())
    if not multilabel:
        return float((logits.argmax(dim=1) == targets).double().mean())
    scored = [c for c in range(targets.shape[1]) if targets[:, c].any()]
    return sum(average_precision(logits[:, c], targets[:, c]) for c in scored) / max(len(scored), 1)


@dataclass
class ProbeResult:
    metric: str  # "accuracy" or "mAP"
    per_fold: dict[str, float]

    @property
    def mean(self) -> float:
        return sum(self.per_fold.values()) / len(self.per_fold)

    @property
    def std(self) -> float:
        values = torch.tensor(list(self.per_fold.values()), dtype=torch.float64)
        return float(values.std(unbiased=False)) if len(values) > 1 else 0.0


def cross_validate(features: torch.Tensor, targets: torch.Tensor, folds: list[str], num_classes: int,
                   multilabel: bool = False, test_folds: list[str] | None = None, **fit_args) -> ProbeResult:
    """Train on all folds but one and score on it, for each fold in `test_folds` (default: every fold).

    Args:
        folds: (N) each row's fold or split name; with a train/test split pass `test_folds=["test"]`.
    Raises:
        ValueError: on fewer than two folds, or a test fold that leaves no training rows.
    """
    names = sorted(set(folds))
    test_folds = test_folds or names
    if len(names) < 2:
        raise ValueError(f"cross-validation needs at least two folds, got {names}")
    per_fold = {}
    for fold in test_folds:
        test = torch.tensor([f == fold for f in folds])
        if test.all() or not test.any():
            raise ValueError(f"fold {fold!r} leaves no training or no test rows")
        head = fit_probe(features[~test], targets[~test], num_classes, multilabel, **fit_args)
        per_fold[fold] = score(head, features[test], targets[test], multilabel)
    return ProbeResult("mAP" if multilabel else "accuracy", per_fold)
