"""classify / search / probe on the demo data with a demo model trained here for a few seconds."""

import json

import lightning as L
import numpy as np
import pytest
import torch

from clap_train import load_model
from clap_train.evaluate_checkpoint import evaluate
from clap_train.evaluation.probe import cross_validate
from clap_train.inference.runner import embed_texts
from clap_train.inference.search import top_k
from clap_train.inference.sources import list_entries
from clap_train.preflight import compose_config
from clap_train.train import build
from tests.inference.conftest import run_cli

TINY = ["data.prepare.num_train=8", "data.prepare.num_val=60", "data.prepare.samples_per_shard=8",
        "data.prepare.duration=1.0", "model.clip_samples=16000", "data.batch_size=8", "data.num_workers=0", "~logger",
        "module.scheduler.warmup_steps=10"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The debug model trained for 80 steps on 8 demo clips; its checkpoint and the val / train embeddings."""
    tmp = tmp_path_factory.mktemp("trained_demo")
    cfg = compose_config("train", [f"cache_dir={tmp / 'cache'}", f"run_dir={tmp / 'run'}", *TINY])
    L.seed_everything(cfg.seed)  # as train() does: the weights must not depend on the tests that ran before
    datamodule, module, _ = build(cfg)
    trainer = L.Trainer(max_steps=80, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=datamodule)
    checkpoint = tmp / "model.ckpt"
    trainer.save_checkpoint(checkpoint)
    demo = tmp / "cache" / "demo"
    for split in ("train", "val"):
        run = run_cli("clap_train.embed", "--checkpoint", checkpoint, "--audio", f"{demo}/{split}-*.tar",
                      "--out", tmp / f"{split}.npz", "--num-workers", 0)
        assert run.returncode == 0, run.stderr[-2000:]
    return tmp, checkpoint, demo


@pytest.mark.slow
def test_search_finds_clips_by_their_own_captions(trained):
    tmp, checkpoint, demo = trained
    entries = list_entries(f"{demo}/train-*.tar")
    captions = [entry.columns["text"] if isinstance(entry.columns["text"], str) else entry.columns["text"][0]
                for entry in entries]
    index = np.load(tmp / "train.npz")
    assert list(index["keys"]) == [entry.key for entry in entries]
    scores, rows = top_k(index["embeddings"], embed_texts(load_model(checkpoint), captions), k=3)
    found = [i for i in range(len(entries)) if rows[i, 0] == i]
    assert len(found) >= 3, rows  # chance: 1 of the 8
    query = found[int(np.argmax([scores[i, 0] - scores[i, 1] for i in found]))]
    run = run_cli("clap_train.search", "--index", tmp / "train.npz", "--query", captions[query], "--top-k", 3)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.strip().splitlines()
    assert lines[0] == f"query: {captions[query]}" and len(lines) == 4
    assert lines[1].split()[0] == "1" and lines[1].split()[2] == entries[query].key
    assert float(lines[1].split()[1]) == pytest.approx(float(scores[query, 0]), abs=1e-4)


@pytest.mark.slow
def test_classify_accuracy_equals_evaluate_zero_shot(trained, tmp_path):
    _, checkpoint, demo = trained
    entries = list_entries(f"{demo}/val-*.tar")
    classes = sorted({tag for entry in entries for tag in entry.columns["tags"]})
    run = run_cli("clap_train.classify", "--checkpoint", checkpoint, "--audio", f"{demo}/val-*.tar",
                  "--labels", ",".join(classes), "--truth", "tags",
                  "--templates", "a {label}", "the sound of a {label}",  # conf/evaluation/demo.yaml's
                  "--out", tmp_path / "preds.csv", "--num-workers", 0)
    assert run.returncode == 0, run.stderr[-2000:]
    line = next((line for line in run.stdout.splitlines() if line.startswith("top1_acc")), run.stdout + run.stderr)
    top1, top5 = float(line.split()[1]), float(line.split()[3])
    cfg = compose_config("evaluate", [f"checkpoint={checkpoint}", f"out_dir={tmp_path / 'eval'}",
                                      "report.num_queries=1"])
    metrics = evaluate(cfg)
    assert top1 == pytest.approx(metrics["synthetic/top1_acc"], abs=1e-4)
    assert top5 == pytest.approx(metrics["synthetic/top5_acc"], abs=1e-4)
    rows = (tmp_path / "preds.csv").read_text().splitlines()
    assert rows[0].startswith("key,error,label_1,score_1") and len(rows) == 1 + len(entries)


@pytest.mark.slow
def test_probe_beats_chance_with_five_folds(trained, tmp_path):
    tmp, _, demo = trained
    out = tmp_path / "head.pt"
    args = ["--embeddings", tmp / "val.npz", "--labels", f"{demo}/val-*.tar", "--label-column", "tags", "--out", out]
    run = run_cli("clap_train.probe", *args)
    assert run.returncode == 0, run.stderr[-2000:]
    summary = next(line for line in run.stdout.splitlines() if "probe accuracy" in line)
    mean = float(summary.split("accuracy: ")[1].split()[0])
    chance = float(summary.split("chance ")[1].rstrip(")"))
    assert "over 5 fold(s)" in summary and mean > 1.5 * chance, summary
    head = torch.load(out, weights_only=True)
    assert set(head["per_fold"]) == {"1", "2", "3", "4", "5"} and head["hidden"] == 0
    again = run_cli("clap_train.probe", *args, "--mlp", "--hidden", 32)
    assert again.returncode == 0 and "mlp probe accuracy" in again.stdout


def test_cross_validation_is_deterministic_and_uses_each_fold():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(40, 8, generator=generator)
    targets = (features[:, 0] > 0).long()
    folds = [str(i % 4) for i in range(40)]
    first = cross_validate(features, targets, folds, 2)
    assert first.per_fold == cross_validate(features, targets, folds, 2).per_fold and len(first.per_fold) == 4
    assert first.mean > 0.8
    split = cross_validate(features, targets, ["test" if i < 10 else "train" for i in range(40)], 2,
                           test_folds=["test"])
    assert list(split.per_fold) == ["test"]
    multi = torch.stack([targets, 1 - targets], dim=1)
    assert cross_validate(features, multi, folds, 2, multilabel=True, hidden=16, steps=50).metric == "mAP"


def test_top_k_matches_a_full_sort_across_chunks():
    generator = torch.Generator().manual_seed(1)
    index = torch.nn.functional.normalize(torch.randn(1000, 16, generator=generator), dim=-1)
    queries = index[[3, 500, 999]] + 0.01
    scores, rows = top_k(index.numpy(), queries.numpy(), k=5, chunk=128)
    full = queries @ index.T
    expected = torch.topk(full, 5, dim=1)
    assert (rows == expected.indices.numpy()).all() and np.allclose(scores, expected.values.numpy())
    assert json.dumps(rows[:, 0].tolist()) == "[3, 500, 999]"
