"""`python -m clap_train.evaluate` on shards and a checkpoint made here: outputs, and the same metrics
as validation during training computed for that checkpoint and data."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clap_train.data.stages import sample_stages
from clap_train.evaluate_checkpoint import evaluate, read_clip_audio
from clap_train.preflight import compose_config
from clap_train.signal.audio_ops import int16_roundtrip
from clap_train.train import build
from data_pipelines.shards import write_tar

REPO = Path(__file__).resolve().parents[2]
TINY = ["data.prepare.num_train=16", "data.prepare.num_val=24", "data.prepare.samples_per_shard=16",
        "data.prepare.duration=1.0", "model.clip_samples=16000", "data.batch_size=8", "data.num_workers=0",
        "~logger"]


@pytest.fixture(scope="module")
def validated_checkpoint(tmp_path_factory):
    """The demo config shrunk: validate a fresh model as training does, save it as a checkpoint."""
    tmp = tmp_path_factory.mktemp("eval_cli")
    cfg = compose_config("train", [f"cache_dir={tmp / 'cache'}", f"run_dir={tmp / 'run'}", *TINY])
    datamodule, module, trainer = build(cfg)
    metrics = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    checkpoint = tmp / "run" / "checkpoints" / "model.ckpt"
    trainer.save_checkpoint(checkpoint)
    return tmp, checkpoint, metrics


def assert_same_metrics(evaluated: dict, validated: dict, set_name: str):
    expected = {key.removeprefix("val/"): value for key, value in validated.items() if key.startswith("val/")}
    assert set(evaluated) == set(expected)
    for key, value in expected.items():
        assert evaluated[key] == pytest.approx(value, abs=1e-6), key  # logged values are float32
    assert all(key.startswith(f"{set_name}/") for key in evaluated)


def test_zero_shot_validation_set_in_training(validated_checkpoint):
    _, _, metrics = validated_checkpoint
    assert {"val/synthetic/top1_acc", "val/synthetic/top5_acc", "val/synthetic/t2a_R@1"} <= set(metrics)
    assert metrics["val/synthetic/num_clips"] == 24.0
    assert 0.0 <= metrics["val/synthetic/top1_acc"] <= metrics["val/synthetic/top5_acc"] <= 1.0
    # the synthetic val clips carry ESC-50-style folds 1..5 in original_data: per-fold accuracies
    per_fold = [metrics[f"val/synthetic/fold{f}/top1_acc"] for f in range(1, 6)]
    assert metrics["val/synthetic/fold_mean/top1_acc"] == pytest.approx(sum(per_fold) / 5, abs=1e-6)


@pytest.mark.slow
def test_cli_writes_report_and_matches_validation(validated_checkpoint):
    tmp, checkpoint, validated = validated_checkpoint
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    pattern = str(tmp / "cache" / "demo" / "val-{000000..000001}.tar")
    run = subprocess.run(
        [sys.executable, "-m", "clap_train.evaluate", f"checkpoint={checkpoint}",
         f"data.val_shards.synthetic='{pattern}'", "evaluation=demo"],
        check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    out_dir = checkpoint.parent / "eval"  # the default: next to the checkpoint
    assert "synthetic  top1_acc" in run.stdout and str(out_dir / "report.html") in run.stdout
    assert_same_metrics(json.loads((out_dir / "metrics.json").read_text()), validated, "synthetic")
    page = (out_dir / "report.html").read_text()
    assert "Text-to-audio examples: synthetic" in page and "Confusion matrix: synthetic" in page
    assert page.count("<div class='query'") == 8 and "data:image/png;base64," in page
    assert len(list((out_dir / "clips").glob("clip_*.wav"))) >= 1
    assert "synthetic:" in (out_dir / "config.yaml").read_text()


@pytest.mark.slow
def test_cli_logs_examples_with_playable_audio_to_wandb(validated_checkpoint, tmp_path):
    """logger=wandb (offline, for real): metrics, the page, and the examples as a table whose audio cells
    are W&B media files inside the run (the page's own players point at local files)."""
    from tests.ops.wandb_fakes import offline_run_file, wandb_env
    from tests.ops.wandb_records import artifacts, history_keys, read_finished_records

    tmp, checkpoint, _ = validated_checkpoint
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(PYTHONPATH=str(REPO), **wandb_env(tmp_path))
    out_dir = tmp_path / "eval"
    run = subprocess.run(
        [sys.executable, "-m", "clap_train.evaluate", f"checkpoint={checkpoint}", f"out_dir={out_dir}",
         f"data.val_shards.synthetic={tmp / 'cache' / 'demo' / 'val-*.tar'}", "report.num_queries=2",
         "logger=wandb", "run_name=evalwb"],
        check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    records = read_finished_records(offline_run_file(out_dir, "evalwb"))
    assert {"eval/report/_type", "eval/examples/_type", "eval/synthetic/t2a_R@1"} <= history_keys(records)
    examples = json.loads((out_dir / "examples.json").read_text())
    assert len(examples) == 2 * 5 and all((out_dir / row["audio"]).is_file() for row in examples)
    # the table goes up as a run_table artifact holding the table json and every clip as a wav file
    [table_artifact] = [a for a in artifacts(records) if a.type == "run_table"]
    files = {entry.path: Path(entry.local_path) for entry in table_artifact.manifest.contents}
    table = json.loads(files["eval/examples.table.json"].read_text())
    cells = [row[table["columns"].index("audio")] for row in table["data"]]
    assert len(cells) == len(examples) and all(cell["_type"] == "audio-file" for cell in cells)
    assert {cell["path"] for cell in cells} <= set(files) and all(files[cell["path"]].is_file() for cell in cells)
    assert len({cell["path"] for cell in cells}) == len({row["audio"] for row in examples})


def test_report_clips_are_float_waveforms_with_int16_batches(validated_checkpoint):
    """With int16 stages the model hears q / 32767: the report's players must get that float clip, not q."""
    tmp, _, _ = validated_checkpoint
    urls = sorted(str(path) for path in (tmp / "cache" / "demo").glob("val-*.tar"))
    keys = {"val_000000", "val_000003"}
    clips = {int16: read_clip_audio(urls, keys, sample_stages(16000, 16000, "head", int16=int16, train=False), 16000)
             for int16 in (False, True)}
    for key in keys:
        assert clips[True][key].dtype == torch.float32 and clips[True][key].abs().max() <= 1.0
        torch.testing.assert_close(clips[True][key], int16_roundtrip(clips[False][key]), atol=0, rtol=0)


def test_in_process_defaults_to_the_checkpoints_sets(validated_checkpoint, tmp_path):
    _, checkpoint, validated = validated_checkpoint
    cfg = compose_config("evaluate", [f"checkpoint={checkpoint}", f"out_dir={tmp_path}", "report.num_queries=2"])
    metrics = evaluate(cfg)
    assert_same_metrics(metrics, validated, "synthetic")
    assert json.loads((tmp_path / "metrics.json").read_text()) == pytest.approx(metrics)


def test_explicit_zero_shot_set_and_label_file(validated_checkpoint, tmp_path):
    tmp, checkpoint, _ = validated_checkpoint
    labels = tmp_path / "labels.txt"
    classes = ["sine tone", "square wave", "major chord", "rising chirp", "falling chirp", "white noise",
               "brown noise", "unused class"]
    labels.write_text("\n".join(classes))
    cfg = compose_config("evaluate", [
        f"checkpoint={checkpoint}", f"out_dir={tmp_path / 'out'}", "report.num_queries=1",
        f"data.val_shards.sources={tmp / 'cache' / 'demo' / 'val-*.tar'}",
        f"+evaluation.zeroshot.sources.label_file={labels}", "+evaluation.zeroshot.sources.retrieval=false",
    ])
    metrics = evaluate(cfg)
    folds = {f"sources/{fold}/top{k}_acc" for fold in ("fold1", "fold2", "fold3", "fold4", "fold5", "fold_mean")
             for k in (1, 5)}
    assert set(metrics) == {"sources/top1_acc", "sources/top5_acc", "sources/num_classes", "sources/num_clips",
                            "sources/skipped_samples", *folds}
    assert metrics["sources/num_classes"] == 8  # the label file's classes, one of them unused
    page = (tmp_path / "out" / "report.html").read_text()
    assert "unused class" in page and "Text-to-audio examples" not in page


def test_missing_checkpoint_is_one_line_naming_it(tmp_path):
    missing = tmp_path / "missing.ckpt"
    run = subprocess.run(
        [sys.executable, "-m", "clap_train.evaluate", f"checkpoint={missing}", f"out_dir={tmp_path / 'out'}"],
        check=False, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
        timeout=300,
    )
    output = (run.stdout + run.stderr).strip().splitlines()
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert output[-1] == f"clap_train.evaluate: error: checkpoint: {missing} does not exist"


def test_missing_shards_name_the_set(validated_checkpoint, tmp_path):
    _, checkpoint, _ = validated_checkpoint
    cfg = compose_config("evaluate", [f"checkpoint={checkpoint}", f"data.val_shards.clotho={tmp_path}/none-*.tar"])
    with pytest.raises(FileNotFoundError, match="data.val_shards.clotho: no shards match"):
        evaluate(cfg)
    cfg = compose_config("evaluate", [f"checkpoint={checkpoint}", f"data.val_shards.clotho={tmp_path}/none-*.tar",
                                      "+evaluation.zeroshot.esc50.multilabel=false"])
    with pytest.raises(ValueError, match="evaluation.zeroshot.esc50: no validation set"):
        evaluate(cfg)


def test_checkpoint_carries_what_the_cli_needs(validated_checkpoint):
    _, checkpoint, _ = validated_checkpoint
    stored = torch.load(checkpoint, map_location="cpu", weights_only=True)["clap_train_config"]
    assert stored["evaluation"]["zeroshot"]["synthetic"]["retrieval"] is True
    assert stored["data"]["val_shards"]["synthetic"].endswith("val-*.tar")


def test_untrained_preset_and_skipped_samples_per_set(validated_checkpoint, tmp_path, capsys):
    """No checkpoint: model=debug evaluated as initialised (the 'before' figures alone). A set with a
    corrupt clip reports it in the table and metrics.json."""
    tmp, _, _ = validated_checkpoint
    demo = tmp / "cache" / "demo"
    shutil.copy(demo / "val-000000.tar", tmp_path / "val-000000.tar")
    write_tar(tmp_path / "val-000001.tar", [("broken", {"flac": b"not audio", "json": b'{"text": ["a hum"]}'})])
    overrides = ["model=debug", f"data.tokenizer={demo / 'tokenizer.json'}", "model.clip_samples=16000",
                 f"data.val_shards.synthetic={demo}/val-*.tar", f"data.val_shards.mixed={tmp_path}/val-*.tar",
                 "evaluation=demo", "data.num_workers=0", f"out_dir={tmp_path / 'out'}"]
    metrics = evaluate(compose_config("evaluate", overrides))
    assert metrics["synthetic/num_clips"] == 24 and metrics["synthetic/skipped_samples"] == 0
    assert 0 < metrics["mixed/num_clips"] < 24 and metrics["mixed/skipped_samples"] == 1
    assert 0.0 <= metrics["synthetic/t2a_R@1"] <= 1.0 and "synthetic/top1_acc" in metrics
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["mixed/skipped_samples"] == 1
    assert re.search(r"^mixed\s+skipped_samples\s+1\.0000$", capsys.readouterr().out, re.MULTILINE)
    again = evaluate(compose_config("evaluate", overrides))  # seeded: the same untrained weights
    assert again["synthetic/t2a_R@1"] == metrics["synthetic/t2a_R@1"]
    with pytest.raises(ValueError, match="checkpoint: give checkpoint=PATH, or model=PRESET"):
        evaluate(compose_config("evaluate", overrides[3:]))


def test_a_set_whose_every_clip_is_skipped_names_it(validated_checkpoint, tmp_path):
    """Validation of a set none of whose samples can be read ends in one line naming the set's config key."""
    tmp, _, _ = validated_checkpoint
    demo = tmp / "cache" / "demo"
    write_tar(tmp_path / "val-000000.tar", [(f"broken{i}", {"flac": b"not audio", "json": b'{"text": ["a hum"]}'})
                                            for i in range(3)])
    overrides = ["model=debug", f"data.tokenizer={demo / 'tokenizer.json'}", "model.clip_samples=16000",
                 f"data.val_shards.broken={tmp_path}/val-*.tar", "data.num_workers=0", f"out_dir={tmp_path / 'out'}"]
    with pytest.raises(ValueError, match=r"^data.val_shards.broken: no clip of this validation set reached the "
                                         r"model \(its shards hold no readable sample\)$"):
        evaluate(compose_config("evaluate", overrides))
