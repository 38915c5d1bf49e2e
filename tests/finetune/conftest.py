"""The demo shards at the LAION rate (48 kHz) and tiny released-style sources sharing their tokenizer."""

from pathlib import Path

import pytest

from clap_train.data.synthetic import ensure_synthetic_dataset
from tests.finetune._sources import TEXT, make_sources

DEMO = {"num_train": 16, "num_val": 10, "samples_per_shard": 16, "sample_rate": 48000, "duration": 1.0,
        "vocab_size": TEXT["vocab_size"]}


@pytest.fixture(scope="session")
def demo_sources(tmp_path_factory) -> dict[str, Path]:
    """{'cache': CLAP_CACHE_DIR holding demo/, 'demo': the shards' folder, 'hf', 'laion', 'hf_fused', 'laion_fused'}."""
    root = tmp_path_factory.mktemp("finetune_sources")
    demo = ensure_synthetic_dataset(str(root / "cache" / "demo"), **DEMO)
    sources = make_sources(root / "sources", tokenizer=demo / "tokenizer.json")
    fused = make_sources(root / "sources", fused=True, tokenizer=demo / "tokenizer.json", seed=1)
    return {"cache": root / "cache", "demo": demo, **sources, "hf_fused": fused["hf"], "laion_fused": fused["laion"]}
