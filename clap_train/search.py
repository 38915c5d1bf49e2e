"""Search an embeddings file (`clap_train.embed`) with a caption or an audio clip.

    python -m clap_train.search --index OUT.npz --query "a dog barking" [--checkpoint SOURCE] [--top-k 10]
    python -m clap_train.search --index OUT.npz --query-audio clip.wav

Prints `rank  score  key` for each hit (score: cosine similarity). `--checkpoint` defaults to the one
the index was embedded with. Exact search (`clap_train.inference.search`).
"""

from __future__ import annotations

import numpy as np

from clap_train.cli import ArgumentParser, reporting_user_errors
from clap_train.embed import load_for_inference
from clap_train.inference.options import add_audio_options, add_model_options
from clap_train.inference.runner import embed_entries, embed_texts
from clap_train.inference.search import top_k
from clap_train.inference.sources import list_entries
from clap_train.inference.store import load_embeddings


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="clap_train.search", description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", required=True, help="an embeddings .npz written by clap_train.embed")
    queries = parser.add_mutually_exclusive_group(required=True)
    queries.add_argument("--query", action="append", help="a caption (repeat for several queries)")
    queries.add_argument("--query-audio", help="an audio file, folder, manifest or shard pattern")
    parser.add_argument("--top-k", type=int, default=10)
    add_model_options(parser, checkpoint_required=False)
    add_audio_options(parser)
    args = parser.parse_args(argv)
    with reporting_user_errors(parser.prog):
        index, keys = load_embeddings(args.index)
        checkpoint = args.checkpoint
        if checkpoint is None:
            with np.load(args.index) as data:
                checkpoint = str(data["checkpoint"]) if "checkpoint" in data else None
            if not checkpoint:
                raise ValueError(f"--checkpoint: {args.index} does not record its checkpoint; pass --checkpoint")
        model = load_for_inference(args, checkpoint)
        if args.query is not None:
            names, vectors = args.query, embed_texts(model, args.query, precision=args.precision)
        else:
            result = embed_entries(model, list_entries(args.query_audio, "--query-audio"), args.batch_size,
                                   args.num_workers, args.precision, args.seed, progress=False)
            if result.failed:
                raise ValueError(f"--query-audio: {result.failed[0][0]}: {result.failed[0][1]}")
            names, vectors = result.keys, result.embeddings
        if vectors.shape[1] != index.shape[1]:
            raise ValueError(f"--checkpoint: embeddings of width {vectors.shape[1]}, the index has {index.shape[1]}")
        scores, rows = top_k(index, vectors, args.top_k)
        for name, query_scores, query_rows in zip(names, scores, rows):
            print(f"query: {name}")
            for rank, (score, row) in enumerate(zip(query_scores, query_rows), start=1):
                print(f"{rank:>4}  {score:.4f}  {keys[row]}")


if __name__ == "__main__":
    main()
