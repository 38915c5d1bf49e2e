"""Train a byte-level BPE caption tokenizer on the captions of a shard set.

    python -m data_pipelines.train_tokenizer --shards 'DIR/train-{000000..000003}.tar' --out TOKDIR --vocab-size 8000

Reads `text` and every `text_augment_*` field (keyword_to_caption's `text_augment_t5` or the
field named by its `--field`; strings or lists) of every sample and trains with
`clap_train.data.tokenizer.train_bpe_tokenizer` (RoBERTa special-token ids), then writes
TOKDIR/tokenizer.json, loadable by `clap_train.data.tokenizer.CaptionTokenizer`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

from clap_train.data.tokenizer import SPECIAL_TOKENS, train_bpe_tokenizer
from data_pipelines.shards import expand_shards, iter_tar, read_meta

AUGMENTED_PREFIX = "text_augment_"


def iter_captions(shard_paths: list[str]) -> Iterator[str]:
    """Every non-empty caption of `text` and of the `text_augment_*` fields in the shards, in shard order."""
    for path in shard_paths:
        for _, members in iter_tar(path):
            meta = read_meta(members)
            fields = ["text"] + sorted(f for f in meta if f.startswith(AUGMENTED_PREFIX))
            for field in fields:
                value = meta.get(field)
                for caption in [value] if isinstance(value, str) else value or []:
                    if caption and caption.strip():
                        yield caption.strip()


def train_tokenizer(shard_paths: list[str], out_dir: str | Path, vocab_size: int) -> tuple[Path, int]:
    """Train on the shards' captions and save `out_dir/tokenizer.json`; returns (path, caption count).

    Raises:
        ValueError naming `vocab_size` when it cannot hold the special tokens and the 256 bytes,
        or naming `shards` when they hold no caption.
    """
    if vocab_size < len(SPECIAL_TOKENS) + 256:
        raise ValueError(f"vocab_size: must be >= {len(SPECIAL_TOKENS) + 256} (specials + bytes), got {vocab_size}")
    captions = list(iter_captions(shard_paths))
    if not captions:
        raise ValueError(f"shards: no captions in {len(shard_paths)} shards")
    tokenizer = train_bpe_tokenizer(captions, vocab_size)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "tokenizer.json"
    tokenizer.save(str(path))
    return path, len(captions)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data_pipelines.train_tokenizer", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--shards", required=True, help="brace pattern of shards, e.g. 'd/train-{000000..000003}.tar'")
    parser.add_argument("--out", required=True, help="directory for tokenizer.json")
    parser.add_argument("--vocab-size", type=int, required=True)
    args = parser.parse_args(argv)
    path, num_captions = train_tokenizer(expand_shards(args.shards, "--shards"), args.out, args.vocab_size)
    print(f"train_tokenizer: trained on {num_captions} captions -> {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
