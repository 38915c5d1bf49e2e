"""Per-set evaluation tasks: zero-shot specs, classes from tags or label files, evaluate_set, metric keys."""

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from clap_train.evaluation.collect import EmbeddingSet
from clap_train.evaluation.tasks import ZeroShotTask, evaluate_set, metric_keys, zeroshot_tasks
from clap_train.train import check_best_metric, format_summary

CLASSES = ["dog", "rain", "siren"]


def class_embedder(prompts: list[str]) -> torch.Tensor:
    """Prompt -> one-hot of the class it names (so class c's classifier row is e_c)."""
    return torch.stack([F.one_hot(torch.tensor(next(i for i, c in enumerate(CLASSES) if c in p)), 4).float()
                        for p in prompts])


def toy_set(tags, predicted) -> EmbeddingSet:
    """Clips whose audio embedding points at class `predicted[i]`; one caption per clip."""
    audio = F.one_hot(torch.tensor(predicted), 4).float() * 0.9 + 0.1
    audio = F.normalize(audio, dim=-1)
    return EmbeddingSet(audio_embeds=audio, keys=[f"k{i}" for i in range(len(tags))], text_embeds=audio.clone(),
                        text_to_audio=torch.arange(len(tags)), tags=tags, captions=[f"c{i}" for i in range(len(tags))])


def test_single_label_from_tags_accuracy_and_confusion():
    tags = [["dog"], ["rain"], ["siren"], ["dog"]]
    result = evaluate_set("toy", toy_set(tags, [0, 1, 1, 0]), ZeroShotTask(templates=["a {label}"]), class_embedder)
    assert result.class_names == CLASSES
    assert result.metrics["top1_acc"] == pytest.approx(0.75)
    assert result.metrics["top5_acc"] == 1.0 and "t2a_R@1" in result.metrics and result.metrics["num_classes"] == 3
    assert result.confusion.tolist() == [[2, 0, 0], [0, 1, 0], [0, 1, 0]]
    assert set(metric_keys(["toy"], {"toy": ZeroShotTask()})) == {f"val/toy/{k}" for k in result.metrics}


def test_per_fold_accuracy_when_every_clip_names_its_fold():
    tags = [["dog"], ["rain"], ["siren"], ["dog"]]
    embeddings = toy_set(tags, [0, 1, 1, 0])  # the siren clip (fold 2) is wrong
    embeddings.clip_fields["folds"] = torch.tensor([1, 1, 2, 2])
    metrics = evaluate_set("esc", embeddings, ZeroShotTask(templates=["a {label}"]), class_embedder).metrics
    assert metrics["fold1/top1_acc"] == 1.0 and metrics["fold2/top1_acc"] == 0.5
    assert metrics["fold_mean/top1_acc"] == pytest.approx(0.75) and metrics["top1_acc"] == pytest.approx(0.75)
    embeddings.clip_fields["folds"] = torch.tensor([1, 1, -1, 2])  # a clip without a fold: no per-fold figures
    metrics = evaluate_set("esc", embeddings, ZeroShotTask(templates=["a {label}"]), class_embedder).metrics
    assert not any(key.startswith("fold") for key in metrics)


def test_retrieval_only_and_zero_shot_only_metric_keys():
    embeddings = toy_set([["dog"], ["rain"]], [0, 1])
    retrieval = evaluate_set("a", embeddings, None, class_embedder)
    assert set(metric_keys(["a"], {})) == {f"val/a/{k}" for k in retrieval.metrics}
    assert "top1_acc" not in retrieval.metrics and retrieval.confusion is None
    task = ZeroShotTask(retrieval=False)
    zero_shot = evaluate_set("b", embeddings, task, class_embedder)
    assert set(zero_shot.metrics) == {"top1_acc", "top5_acc", "num_classes", "num_clips"}
    assert set(metric_keys(["b"], {"b": task})) == {f"val/b/{k}" for k in zero_shot.metrics}


def test_multilabel_with_label_file_ids_or_names(tmp_path):
    label_file = tmp_path / "labels.csv"
    label_file.write_text("index,mid,display_name\n0,/m/dog,dog\n1,/m/rain,rain\n2,/m/siren,siren\n")
    task = ZeroShotTask(label_file=str(label_file), multilabel=True, retrieval=False)
    by_mid = evaluate_set("as", toy_set([["/m/dog"], ["/m/rain", "/m/siren"], []], [0, 1, 2]), task, class_embedder)
    by_name = evaluate_set("as", toy_set([["dog"], ["rain", "siren"], []], [0, 1, 2]), task, class_embedder)
    assert by_mid.class_names == CLASSES and by_mid.confusion is None
    assert by_mid.metrics == by_name.metrics and by_mid.metrics["num_classes_scored"] == 3.0
    assert set(by_mid.metrics) == {"mAP", "num_classes_scored", "num_clips"}


def test_bad_specs_and_sets_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="label"):
        ZeroShotTask(templates=["no placeholder"])
    with pytest.raises(FileNotFoundError, match="nowhere.txt"):
        ZeroShotTask(label_file=str(tmp_path / "nowhere.txt"))
    with pytest.raises(ValueError, match=r"evaluation.zeroshot.esc50: no validation set"):
        zeroshot_tasks({"esc50": {}}, ["clotho"])
    assert isinstance(zeroshot_tasks(OmegaConf.create({"clotho": None}), ["clotho"])["clotho"], ZeroShotTask)
    with pytest.raises(ValueError, match="'toy': 1 of 2 clips carry no shard 'tags'"):
        evaluate_set("toy", toy_set([["dog"], []], [0, 1]), ZeroShotTask(), class_embedder)
    with pytest.raises(ValueError, match="'toy': zero-shot needs the clips' tags"):
        evaluate_set("toy", EmbeddingSet(torch.eye(2), ["a", "b"]), ZeroShotTask(retrieval=False), class_embedder)
    with pytest.raises(ValueError, match="'toy': retrieval needs captions"):
        evaluate_set("toy", EmbeddingSet(torch.eye(2), ["a", "b"]), None, class_embedder)


def test_best_metric_must_be_logged_by_validation():
    names = ["synthetic"]
    keys = metric_keys(names, {"synthetic": ZeroShotTask()})
    best = {"metric": "top1_acc", "val_set": None, "mode": "max"}
    check_best_metric(OmegaConf.create(best), names, keys)
    with pytest.raises(ValueError, match="best_metric.val_set 'clotho' is not a validation set"):
        check_best_metric(OmegaConf.create({**best, "val_set": "clotho"}), names, keys)
    with pytest.raises(ValueError, match="best_metric.metric: 'val/synthetic/R@1' is not logged"):
        check_best_metric(OmegaConf.create({**best, "metric": "R@1"}), names, keys)
    with pytest.raises(ValueError, match="best_metric.mode"):
        check_best_metric(OmegaConf.create({**best, "mode": "up"}), names, keys)


def test_summary_chance_column_for_recall_and_top_k():
    after = {"val/s/num_clips": 10.0, "val/s/t2a_R@1": 0.5, "val/s/top1_acc": 0.4, "val/s/top5_acc": 0.9,
             "val/s/num_classes": 7.0}
    rows = {line.split()[0]: line.split()[1:] for line in format_summary(None, after, ["s"]).splitlines()
            if line.startswith("  ") and "metric" not in line}
    assert rows == {"t2a_R@1": ["0.100", "-", "0.500"], "top1_acc": ["0.143", "-", "0.400"],
                    "top5_acc": ["0.714", "-", "0.900"]}
