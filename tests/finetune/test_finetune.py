"""`python -m clap_train +experiment=finetune model.init_from=SOURCE` from a transformers directory and from the
LAION .pt of the same weights, on the demo shards shrunk by overrides."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from transformers import ClapModel

from clap_train.evaluate_checkpoint import evaluate
from clap_train.export import main as export_main
from clap_train.init_from import apply_init_from
from tests.finetune.conftest import DEMO

REPO = Path(__file__).resolve().parents[2]
SHRINK = [f"data.prepare.{k}={v}" for k, v in DEMO.items() if k not in ("sample_rate", "vocab_size")] + [
    "data=demo", "data.batch_size=8", "data.num_workers=0", "trainer.max_steps=2", "trainer.val_check_interval=2",
    "trainer.log_every_n_steps=1"]


def run_finetune(tmp_path: Path, sources: dict, *overrides: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "WANDB_"))}
    env.update(PYTHONPATH=str(REPO), CLAP_CACHE_DIR=str(sources["cache"]), CLAP_RUNS_DIR=str(tmp_path / "runs"))
    return subprocess.run([sys.executable, "-m", "clap_train", "+experiment=finetune", *SHRINK, *overrides],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)


def compose_config(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def evaluate_source(source: Path, demo: Path, tmp_path: Path) -> dict:
    cfg = compose_config("evaluate", [f"checkpoint={source}", f"out_dir={tmp_path / 'eval'}", "evaluation=demo",
                                      f"data.val_shards.synthetic={demo}/val-*.tar", "report.num_queries=1",
                                      f"data.tokenizer={demo}/tokenizer.json"])
    return evaluate(cfg)


@pytest.fixture(scope="module")
def finetuned_hf(demo_sources, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ft_hf")
    run = run_finetune(tmp, demo_sources, f"model.init_from={demo_sources['hf']}", "run_name=from_hf")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return tmp / "runs" / "from_hf", run


@pytest.mark.slow
def test_finetune_from_transformers_starts_from_the_source(finetuned_hf, demo_sources, tmp_path):
    run_dir, run = finetuned_hf
    assert "model.init_from: " in run.stdout + run.stderr and "transformers checkpoint" in run.stdout + run.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["global_step"] == 2  # a new run: step 0 + 2 steps, not a resumed one
    evaluated = evaluate_source(demo_sources["hf"], demo_sources["demo"], tmp_path)
    before = {k.removeprefix("val/"): v for k, v in summary["before"].items()}
    assert set(evaluated) == set(before)
    for key, value in evaluated.items():
        assert before[key] == pytest.approx(value, abs=1e-6), key
    config = (run_dir / "config.yaml").read_text()
    assert "clap_train.models.audio.htsat.HTSATEncoder" in config and "kind: transformers" in config
    # the fine-tuned weights moved away from the source's
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    source = ClapModel.from_pretrained(demo_sources["hf"]).state_dict()
    assert not torch.equal(ckpt["state_dict"]["model.audio_projection.linear1.weight"],
                           source["audio_projection.linear1.weight"])


@pytest.mark.slow
def test_finetuned_run_exports_to_transformers(finetuned_hf, tmp_path):
    run_dir, _ = finetuned_hf
    export_main([str(run_dir / "checkpoints" / "last.ckpt"), str(tmp_path / "hf")])
    _, info = ClapModel.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert (tmp_path / "hf" / "tokenizer.json").is_file()


@pytest.mark.slow
def test_finetune_from_laion_pt_matches_the_transformers_source(finetuned_hf, demo_sources, tmp_path):
    run = run_finetune(tmp_path, demo_sources, f"model.init_from={demo_sources['laion']}", "run_name=from_laion",
                       f"data.tokenizer={demo_sources['demo'] / 'tokenizer.json'}")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "laion checkpoint" in run.stdout + run.stderr
    before = json.loads((tmp_path / "runs" / "from_laion" / "summary.json").read_text())["before"]
    reference = json.loads((finetuned_hf[0] / "summary.json").read_text())["before"]
    assert before == pytest.approx(reference, abs=1e-6)


def test_laion_source_without_tokenizer_is_one_line_naming_the_field(demo_sources, tmp_path):
    run = run_finetune(tmp_path, demo_sources, f"model.init_from={demo_sources['laion']}", "data.tokenizer=null")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("clap_train: error: data.tokenizer: ") and "carries no tokenizer" in last


def test_disagreeing_preset_fails_listing_the_fields(demo_sources, tmp_path):
    run = run_finetune(tmp_path, demo_sources, "model=htsat_debug", f"+model.init_from={demo_sources['hf']}")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert "the model preset disagrees" in last
    for field in ("model.clip_samples", "model.audio_encoder.window_size", "model.frontend.sample_rate", "model.audio_encoder.spec_size",
                  "model.text_encoder.hidden_size"):
        assert field in last


def test_agreeing_preset_applies_its_training_knobs(demo_sources):
    from tests.finetune._sources import AUDIO

    cfg = compose_config("train", ["+experiment=finetune", "model=htsat_debug", f"+model.init_from={demo_sources['hf']}",
                                   "data=demo", f"cache_dir={demo_sources['cache']}"])
    hf = apply_init_from(compose_config("train", ["+experiment=finetune", f"model.init_from={demo_sources['hf']}",
                                                  "data=demo", f"cache_dir={demo_sources['cache']}"]))
    assert hf is not None
    with pytest.raises(ValueError, match="disagrees"):
        apply_init_from(cfg)
    assert AUDIO["spec_size"] == 256


def test_fused_source_sets_fusion_preprocessing(demo_sources):
    cfg = compose_config("train", ["+experiment=finetune", f"model.init_from={demo_sources['laion_fused']}",
                                   "data=demo", f"cache_dir={demo_sources['cache']}", "data.tokenizer=/some/tokenizer.json"])
    state = apply_init_from(cfg)
    assert cfg.init_from.fused and cfg.init_from.kind == "laion" and "audio_encoder.patch_embed.mel_conv2d.weight" in state
    assert cfg.data.truncation == "fusion"
    assert cfg.data.frontend.mel_scale == "htk" and cfg.data.frontend.norm is None  # ${model.frontend}
    assert cfg.model.frontend.mel_scale == "htk" and cfg.model.audio_encoder.enable_fusion
    unfused = compose_config("train", ["+experiment=finetune", f"model.init_from={demo_sources['hf']}",
                                       "data=demo", f"cache_dir={demo_sources['cache']}"])
    apply_init_from(unfused)
    assert unfused.data.get("truncation", "rand_trunc") == "rand_trunc" and unfused.model.frontend.mel_scale == "slaney"


def test_finetune_without_source_names_the_field():
    cfg = compose_config("train", ["+experiment=finetune"])
    with pytest.raises(ValueError, match="model.init_from: set it"):
        apply_init_from(cfg)
