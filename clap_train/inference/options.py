"""Command-line options shared by embed, classify and search."""

from __future__ import annotations

import argparse

from clap_train.inference.runner import PRECISIONS


def add_model_options(parser: argparse.ArgumentParser, checkpoint_required: bool = True) -> None:
    parser.add_argument("--checkpoint", required=checkpoint_required,
                        help="transformers CLAP directory, LAION-CLAP .pt or clap_train .ckpt")
    parser.add_argument("--tokenizer", help="tokenizer.json (or its folder); needed for text with a LAION .pt")
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, cuda:1, ...")
    parser.add_argument("--precision", default="32", choices=PRECISIONS,
                        help="bf16: autocast on the device; int8: dynamically quantized Linear layers (CPU only, "
                             "faster than 32 at a cosine >= 0.999 to it)")


def add_audio_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=32, help="clips per forward pass")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="DataLoader workers decoding audio (0: inline); default: one per 8 cores on the CPU, "
                             "up to 8 with a GPU")
    parser.add_argument("--seed", type=int, default=0, help="seeds the fused model's crop starts (per clip)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
