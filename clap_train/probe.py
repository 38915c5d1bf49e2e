"""A linear probe (or `--mlp`) on frozen embeddings, cross-validated by fold or by a train/test split.

    python -m clap_train.probe --embeddings OUT.npz --labels MANIFEST [--mlp] [--out head.pt]

MANIFEST (a CSV/JSONL manifest or the shard pattern the embeddings came from) gives each key's class in
`--label-column` (default `label`, else `tags`; `;`-joined or list values make a multi-label set) and its
fold in `--fold-column` (default `fold`, ESC-50's 1..5), or a split in `--split-column` (rows whose value is
`--test-split` are the test set). Prints the mean and standard deviation over folds of the accuracy
(single label) or mAP (multi-label), then fits the head on every row and writes it to `--out`
(`torch.load(path, weights_only=True)`: state_dict, classes, hidden, multilabel).
"""

from __future__ import annotations

from pathlib import Path

import torch

from clap_train.cli import ArgumentParser, reporting_user_errors
from clap_train.evaluation.probe import cross_validate, fit_probe
from clap_train.inference.sources import list_entries
from clap_train.inference.store import load_embeddings


def _labels(value) -> list[str]:
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    return [part.strip() for part in str(value or "").split(";") if part.strip()]


def read_labels(source: str, keys: list[str], label_column: str | None, group_column: str):
    """(row indices into keys, per-row label lists, per-row group names, label column) for the keys found in
    `source`. Raises ValueError naming the flag of a missing column, or when no key matches."""
    entries = {entry.key: entry for entry in list_entries(source, "--labels")}
    sample = next(iter(entries.values())).columns
    column = label_column or ("label" if "label" in sample else "tags")
    rows, labels, groups = [], [], []
    for row, key in enumerate(keys):
        entry = entries.get(key)
        if entry is None:
            continue
        if column not in entry.columns:
            raise ValueError(f"--label-column: {key} has no {column!r} column (columns: {sorted(entry.columns)})")
        if group_column not in entry.columns:
            raise ValueError(f"--fold-column/--split-column: {key} has no {group_column!r} column")
        rows.append(row)
        labels.append(_labels(entry.columns[column]))
        groups.append(str(entry.columns[group_column]))
    if not rows:
        raise ValueError(f"--labels: none of the {len(keys)} embedding keys is in {source}")
    return rows, labels, groups, column


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="clap_train.probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--embeddings", required=True, help="an audio embeddings .npz from clap_train.embed")
    parser.add_argument("--labels", required=True, help="CSV/JSONL manifest or shard pattern with the classes")
    parser.add_argument("--label-column", help="column holding the class (default: label, else tags)")
    groups = parser.add_mutually_exclusive_group()
    groups.add_argument("--fold-column", default="fold", help="cross-validation folds (default: %(default)s)")
    groups.add_argument("--split-column", help="a train/test split column instead of folds")
    parser.add_argument("--test-split", default="test", help="the --split-column value of test rows")
    parser.add_argument("--mlp", action="store_true", help="one hidden ReLU layer instead of a linear head")
    parser.add_argument("--hidden", type=int, default=512, help="hidden width of --mlp")
    parser.add_argument("--weight-decay", type=float, default=1e-3, help="L2 penalty on the weights")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="where to write the head (default: probe_head.pt next to --embeddings)")
    args = parser.parse_args(argv)
    with reporting_user_errors(parser.prog):
        embeddings, keys = load_embeddings(args.embeddings, "--embeddings")
        group_column = args.split_column or args.fold_column
        rows, labels, groups, column = read_labels(args.labels, keys, args.label_column, group_column)
        if any(not row for row in labels):
            raise ValueError(f"--label-column {column}: some rows have no label")
        classes = sorted({name for row in labels for name in row})
        multilabel = any(len(row) > 1 for row in labels)
        index = {name: i for i, name in enumerate(classes)}
        if multilabel:
            targets = torch.zeros(len(rows), len(classes))
            for i, row in enumerate(labels):
                targets[i, [index[name] for name in row]] = 1.0
        else:
            targets = torch.tensor([index[row[0]] for row in labels])
        features = torch.from_numpy(embeddings[rows])
        fit = {"hidden": args.hidden if args.mlp else 0, "weight_decay": args.weight_decay, "seed": args.seed}
        result = cross_validate(features, targets, groups, len(classes), multilabel,
                                test_folds=[args.test_split] if args.split_column else None, **fit)
        for fold, value in result.per_fold.items():
            print(f"{group_column} {fold}: {result.metric} {value:.4f}")
        print(f"{'mlp' if args.mlp else 'linear'} probe {result.metric}: {result.mean:.4f} ± {result.std:.4f} over "
              f"{len(result.per_fold)} fold(s); {len(rows)} clips, {len(classes)} classes (chance "
              f"{1 / len(classes):.4f})" if not multilabel else
              f"{'mlp' if args.mlp else 'linear'} probe mAP: {result.mean:.4f} ± {result.std:.4f} over "
              f"{len(result.per_fold)} fold(s); {len(rows)} clips, {len(classes)} classes")
        head = fit_probe(features, targets, len(classes), multilabel, **fit)
        out = Path(args.out) if args.out else Path(args.embeddings).with_name("probe_head.pt")
        torch.save({"state_dict": head.state_dict(), "classes": classes, "hidden": fit["hidden"],
                    "multilabel": multilabel, "metric": result.metric, "per_fold": result.per_fold}, out)
        print(f"wrote the head fitted on all {len(rows)} clips to {out}")


if __name__ == "__main__":
    main()
