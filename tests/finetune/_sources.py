"""Tiny released-style checkpoints made in the test: a transformers ClapModel directory (random weights, the
LAION recipe's 48 kHz / 10 s / 64-mel geometry at a small width) and the LAION-layout .pt of the same weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from clap_train.data.tokenizer import train_bpe_tokenizer
from tests.checkpoints._clap import hf_to_laion_layout, random_hf_clap

# LAION's text tower has hidden // 64 heads (CLAP_SPEC §8.1): 64 wide, 1 head; LAION runs LayerNorm eps 1e-5
AUDIO = {"patch_embeds_hidden_size": 16, "hidden_size": 64, "depths": [2, 2, 2], "num_attention_heads": [1, 2, 4],
         "window_size": 8, "spec_size": 256, "num_mel_bins": 64}
TEXT = {"vocab_size": 300, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 1,
        "intermediate_size": 128, "max_position_embeddings": 80}
CAPTIONS = ["a dog barks twice", "rain on a tin roof", "a low hum", "a siren wails", "birds sing at dawn"]


def write_tokenizer(path: Path, tokenizer: Path | None = None) -> Path:
    if tokenizer is not None:
        shutil.copyfile(tokenizer, path)
    else:
        train_bpe_tokenizer([c * 3 for c in CAPTIONS] * 20, vocab_size=TEXT["vocab_size"]).save(str(path))
    return path


def make_sources(root: Path, fused: bool = False, tokenizer: Path | None = None, seed: int = 0) -> dict[str, Path]:
    """{'hf': transformers directory with tokenizer.json, 'laion': LAION-layout .pt of the same weights}."""
    from clap_train import load_model
    from clap_train.export_hf import hf_preprocessor_config

    root.mkdir(parents=True, exist_ok=True)
    hf = random_hf_clap(AUDIO, TEXT, enable_fusion=fused, projection_dim=32, seed=seed, text_eps=1e-5)
    hf_dir = root / ("hf_fused" if fused else "hf")
    hf.save_pretrained(hf_dir)
    (hf_dir / "preprocessor_config.json").write_text(json.dumps(hf_preprocessor_config(load_model(hf_dir))))
    write_tokenizer(hf_dir / "tokenizer.json", tokenizer)
    laion = root / ("laion_fused.pt" if fused else "laion.pt")
    torch.save({"state_dict": hf_to_laion_layout(hf.state_dict(), extras=False)}, laion)
    return {"hf": hf_dir, "laion": laion}
