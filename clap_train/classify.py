"""Zero-shot classification of audio files with text prompts, as `clap_train.evaluate` scores zero-shot sets.

    python -m clap_train.classify --checkpoint SOURCE --audio PATH --labels "dog,rain,siren" [--out preds.csv]
    python -m clap_train.classify --checkpoint SOURCE --audio manifest.csv --labels-file labels.txt --truth label

Class embeddings are the prompt ensemble of `--templates` (`evaluation.zeroshot.zeroshot_classifier`);
each clip's scores are cosine similarities. Writes a CSV (`key,error,label_1,score_1,...`; unreadable
clips get their reason in `error`) to `--out` or stdout. With `--truth COLUMN` (a manifest column, or
`tags` of shards) it prints top-1 / top-5 accuracy computed by `zeroshot_metrics`, the function behind
`clap_train.evaluate`'s zero-shot figures.
"""

from __future__ import annotations

import csv
import sys
from contextlib import nullcontext

import torch

from clap_train.cli import ArgumentParser, reporting_user_errors
from clap_train.embed import load_for_inference
from clap_train.evaluation.zeroshot import DEFAULT_TEMPLATES, read_label_file, zeroshot_classifier, zeroshot_metrics
from clap_train.inference.options import add_audio_options, add_model_options
from clap_train.inference.runner import embed_entries, embed_texts
from clap_train.inference.sources import list_entries


def class_names(args) -> list[str]:
    if args.labels_file is not None:
        return read_label_file(args.labels_file)[0]
    names = [name.strip() for name in args.labels.split(",") if name.strip()]
    if len(names) < 2:
        raise ValueError(f"--labels: need at least two comma-separated class names, got {args.labels!r}")
    return names


def truth_targets(entries, keys: list[str], column: str, names: list[str]) -> torch.Tensor:
    """(N,) class index of each embedded clip from its `column` value (a name, or a one-element tag list).

    Raises:
        ValueError naming --truth for a missing column or a value that is not one of the classes.
    """
    by_key = {entry.key: entry for entry in entries}
    index = {name: i for i, name in enumerate(names)}
    targets = []
    for key in keys:
        value = by_key[key].columns.get(column)
        if isinstance(value, list):
            value = value[0] if len(value) == 1 else None
        if value is None or str(value).strip() not in index:
            raise ValueError(f"--truth {column}: {key} has {by_key[key].columns.get(column)!r}, not one of the "
                             f"{len(names)} classes")
        targets.append(index[str(value).strip()])
    return torch.tensor(targets, dtype=torch.long)


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="clap_train.classify", description=__doc__.split("\n\n")[0])
    add_model_options(parser)
    parser.add_argument("--audio", required=True, help="folder, CSV/JSONL manifest, shard pattern or audio file")
    labels = parser.add_mutually_exclusive_group(required=True)
    labels.add_argument("--labels", help="comma-separated class names")
    labels.add_argument("--labels-file", help="one class name per line, or AudioSet's class_labels_indices.csv")
    parser.add_argument("--templates", nargs="+", default=list(DEFAULT_TEMPLATES),
                        help="prompt templates with {label}, ensembled (default: %(default)s)")
    parser.add_argument("--top-k", type=int, default=5, help="labels per clip in the CSV")
    parser.add_argument("--truth", help="manifest column (or 'tags' of shards) with each clip's class: prints accuracy")
    parser.add_argument("--out", help="CSV to write (default: stdout)")
    add_audio_options(parser)
    args = parser.parse_args(argv)
    with reporting_user_errors(parser.prog):
        names = class_names(args)
        entries = list_entries(args.audio)
        model = load_for_inference(args)
        classifier = zeroshot_classifier(lambda texts: torch.from_numpy(embed_texts(model, texts,
                                                                                   precision=args.precision)),
                                         names, args.templates)  # (C, D)
        result = embed_entries(model, entries, args.batch_size, args.num_workers, args.precision, args.seed,
                               progress=not args.no_progress)
        embeds = torch.from_numpy(result.embeddings)
        targets = truth_targets(entries, result.keys, args.truth, names) if args.truth else None
        scores = embeds @ classifier.T  # (N, C)
        k = min(args.top_k, len(names))
        top_scores, top_classes = scores.topk(k, dim=1)
        with open(args.out, "w", newline="", encoding="utf-8") if args.out else nullcontext(sys.stdout) as file:
            writer = csv.writer(file)
            writer.writerow(["key", "error"] + [f"{field}_{i}" for i in range(1, k + 1) for field in ("label", "score")])
            for key, row_scores, row_classes in zip(result.keys, top_scores.tolist(), top_classes.tolist()):
                writer.writerow([key, ""] + [v for c, s in zip(row_classes, row_scores) for v in (names[c], f"{s:.6f}")])
            for key, reason in result.failed:
                writer.writerow([key, reason] + [""] * (2 * k))
        if result.failed:
            print(f"skipped {len(result.failed)} unreadable clip(s): {', '.join(k for k, _ in result.failed)}",
                  file=sys.stderr)
        if targets is not None and len(targets):
            metrics = zeroshot_metrics(embeds, classifier, targets)
            print(f"top1_acc {metrics['top1_acc']:.4f}  top5_acc {metrics['top5_acc']:.4f}  "
                  f"({len(targets)} clips, {len(names)} classes)", file=sys.stdout if args.out else sys.stderr)


if __name__ == "__main__":
    main()
