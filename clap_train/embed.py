"""Embed audio files or captions with any checkpoint `clap_train.load_model` reads.

    python -m clap_train.embed --checkpoint SOURCE --audio PATH --out OUT.npz
    python -m clap_train.embed --checkpoint SOURCE --text captions.txt --out OUT.npz

PATH is a folder (recursive, every format soundfile reads), a CSV/JSONL manifest, a shard pattern or
one file (`clap_train.inference.sources`); `--text` takes one caption per line. OUT is the .npz
described in `clap_train.inference.store`; unreadable clips are skipped, listed at the end and stored
in OUT's `failed`. An existing OUT is kept unless `--overwrite`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from clap_train.checkpoints.load import load_model
from clap_train.cli import ArgumentParser, reporting_user_errors
from clap_train.inference.options import add_audio_options, add_model_options
from clap_train.inference.runner import Embeddings, default_workers, embed_entries, embed_texts, ready_for_inference
from clap_train.inference.sources import list_entries
from clap_train.inference.store import check_output, save_embeddings
from clap_train.training.cpu_threads import available_cores, configure_cpu_threads


def load_for_inference(args, checkpoint: str | None = None):
    """The model of embed / classify / search: `load_model(checkpoint or --checkpoint)` on --device at
    --precision. Resolves --num-workers (None: `default_workers`) in `args`; on the CPU torch's threads
    leave a core to each worker (`configure_cpu_threads`, as in training; OMP_NUM_THREADS overrides)."""
    model = ready_for_inference(load_model(checkpoint or args.checkpoint), args.device, args.tokenizer, args.precision)
    device = next(model.parameters()).device
    if getattr(args, "num_workers", None) is None:
        args.num_workers = default_workers(device, available_cores())
    if device.type == "cpu":
        configure_cpu_threads(None, args.num_workers)
    return model


def read_text_lines(path: str, flag: str = "--text") -> list[str]:
    """Non-empty stripped lines of a text file. Raises FileNotFoundError / ValueError naming `flag`."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{flag}: {path} does not exist")
    lines = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{flag}: {path} has no non-empty lines")
    return lines


def report_failed(failed: list[tuple[str, str]]) -> None:
    if failed:
        print(f"skipped {len(failed)} unreadable input(s):", file=sys.stderr)
        for key, reason in failed:
            print(f"  {key}: {reason}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="clap_train.embed", description=__doc__.split("\n\n")[0])
    add_model_options(parser)
    inputs = parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--audio", help="folder, CSV/JSONL manifest, shard pattern or audio file")
    inputs.add_argument("--text", help="a text file with one caption per line")
    parser.add_argument("--out", required=True, help="the .npz to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    add_audio_options(parser)
    args = parser.parse_args(argv)
    with reporting_user_errors(parser.prog):
        out = check_output(args.out, args.overwrite)
        if args.text is not None:
            texts = read_text_lines(args.text)
            model = load_for_inference(args)
            result = Embeddings(embed_texts(model, texts, precision=args.precision), texts, [])
        else:
            entries = list_entries(args.audio)
            model = load_for_inference(args)
            result = embed_entries(model, entries, args.batch_size, args.num_workers, args.precision, args.seed,
                                   progress=not args.no_progress)
        save_embeddings(out, result, "text" if args.text is not None else "audio", args.checkpoint)
        report_failed(result.failed)
        print(f"wrote {result.embeddings.shape[0]} embeddings of dim {result.embeddings.shape[1]} to {out}")


if __name__ == "__main__":
    main()
