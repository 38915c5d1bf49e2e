"""Turn a public dataset's layout into a make_shards manifest (JSONL).

    python -m data_pipelines.import_dataset audiocaps --root R --out M.jsonl [--split train]
    python -m data_pipelines.import_dataset clotho --root R --out M.jsonl [--split development]
    python -m data_pipelines.import_dataset esc50 --root R --out M.jsonl [--folds 1,2,3,4]
    python -m data_pipelines.import_dataset tags --root R --csv labels.csv --out M.jsonl
        [--label-map class_labels_indices.csv] [--file-column C] [--labels-column C]
    python -m data_pipelines.import_dataset table --root T.parquet|T.arrow|DIR --out M.jsonl
        [--audio-column audio] [--text-columns caption,...] [--tag-columns C,...] [--key-column C]
        [--extract-dir D]

`--audio-dir` points at the audio when it is not under `--root`. Clips whose audio is missing are
left out of the manifest and listed on stderr. Then: `python -m data_pipelines.make_shards
--manifest M.jsonl --out DIR`.
"""

from __future__ import annotations

import argparse
import sys

from clap_train.cli import ArgumentParser, run_tool
from data_pipelines.importers import import_audiocaps, import_clotho, import_esc50, import_tags
from data_pipelines.manifest import write_manifest


def _columns(value: str | None, flag: str) -> list[str]:
    columns = [c.strip() for c in (value or "").split(",") if c.strip()]
    if value is not None and not columns:
        raise SystemExit(f"import_dataset table: {flag} needs one or more comma-separated column names")
    return columns


def run_table_import(args: argparse.Namespace) -> tuple[int, list[dict]]:
    from data_pipelines.importers.table import import_table  # pyarrow: the table extra

    texts = _columns(args.text_columns, "--text-columns") if args.text_columns is not None else ["caption"]
    return import_table(args.root, args.out, args.audio_column, texts, _columns(args.tag_columns, "--tag-columns"),
                        args.key_column, args.audio_dir, args.extract_dir)


def run_import(args: argparse.Namespace) -> tuple[list[dict], list[dict]]:
    if args.dataset == "audiocaps":
        return import_audiocaps(args.root, args.split or "train", args.audio_dir, args.csv)
    if args.dataset == "clotho":
        return import_clotho(args.root, args.split or "development", args.audio_dir, args.csv)
    if args.dataset == "esc50":
        folds = [int(fold) for fold in args.folds.split(",")] if args.folds else None
        return import_esc50(args.root, folds, args.audio_dir, args.csv)
    if not args.csv:
        raise SystemExit("import_dataset tags: --csv is required")
    return import_tags(args.root, args.csv, args.label_map, args.file_column, args.labels_column, args.audio_dir)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m data_pipelines.import_dataset", description=__doc__.split("\n")[1])
    parser.add_argument("dataset", choices=["audiocaps", "clotho", "esc50", "tags", "table"])
    parser.add_argument("--root", required=True, help="dataset root (CSVs, and audio unless --audio-dir)")
    parser.add_argument("--out", required=True, help="manifest to write (.jsonl)")
    parser.add_argument("--audio-dir", help="where the audio files are (default: under --root)")
    parser.add_argument("--csv", help="the CSV to read, relative to --root (default: the dataset's usual name)")
    parser.add_argument("--split", help="audiocaps: train/val/test; clotho: development/validation/evaluation")
    parser.add_argument("--folds", help="esc50: comma-separated folds to keep (default: all)")
    parser.add_argument("--label-map", help="tags: CSV mapping label ids to names (class_labels_indices.csv)")
    parser.add_argument("--file-column", help="tags: column naming the audio file")
    parser.add_argument("--labels-column", help="tags: column holding the labels")
    parser.add_argument("--audio-column", default="audio", help="table: audio column ({bytes, path} or path)")
    parser.add_argument("--text-columns", help="table: caption columns, comma-separated (default: caption)")
    parser.add_argument("--tag-columns", help="table: tag columns, comma-separated")
    parser.add_argument("--key-column", help="table: sample key column (default: audio file stem)")
    parser.add_argument("--extract-dir", help="table: where audio bytes are written (default: <out>_audio/)")
    args = parser.parse_args(argv)

    if args.dataset == "table":
        num_rows, missing = run_table_import(args)
    else:
        rows, missing = run_import(args)
        write_manifest(rows, args.out)
        num_rows = len(rows)
    unit = "rows" if args.dataset == "table" else "clips"
    print(f"import_dataset {args.dataset}: {num_rows} {unit} -> {args.out}; {len(missing)} left out", file=sys.stderr)
    for item in missing[:20]:
        print(f"  left out {item['id']}: {item['reason']}", file=sys.stderr)
    if len(missing) > 20:
        print(f"  ... {len(missing) - 20} more", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_tool(main)
