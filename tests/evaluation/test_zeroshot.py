"""Zero-shot classifier building, top-k accuracy with folds, and multi-label mAP on toy embeddings."""

import pytest
import torch
import torch.nn.functional as F

from clap_train.evaluation.zeroshot import (
    average_precision,
    build_prompts,
    class_names_from_tags,
    confusion_matrix,
    read_label_file,
    targets_from_tags,
    zeroshot_classifier,
    zeroshot_metrics,
)


def test_classifier_averages_normalised_template_embeddings():
    table = {
        "a dog": torch.tensor([2.0, 0.0]),
        "a cat": torch.tensor([0.0, 3.0]),
        "the dog barks": torch.tensor([0.0, 1.0]),
        "the cat barks": torch.tensor([0.0, 5.0]),
    }
    calls = []

    def embed(texts):
        calls.append(texts)
        return torch.stack([table[t] for t in texts])

    classifier = zeroshot_classifier(embed, ["dog", "cat"], templates=["a {label}", "the {label} barks"])
    assert calls == [["a dog", "a cat"], ["the dog barks", "the cat barks"]]
    # dog: normalise([1, 0] + [0, 1]); cat: normalise([0, 1] + [0, 1])
    assert torch.allclose(classifier, torch.tensor([[2**-0.5, 2**-0.5], [0.0, 1.0]]))


def test_default_template_and_validation():
    assert build_prompts(["dog barking"], "This is a sound of {label}.") == ["This is a sound of dog barking."]
    with pytest.raises(ValueError, match="template"):
        build_prompts(["dog"], "no field")
    with pytest.raises(ValueError, match="shape"):
        zeroshot_classifier(lambda texts: torch.zeros(len(texts) + 1, 4), ["a", "b"])


def test_top_k_accuracy_with_folds():
    classifier = torch.eye(6)  # class c embedding = e_c
    # clip scores: clip i prefers classes in the order given by its row
    audio = torch.tensor(
        [
            [6.0, 5, 4, 3, 2, 1],  # target 0: rank 0
            [6.0, 5, 4, 3, 2, 1],  # target 2: rank 2
            [6.0, 5, 4, 3, 2, 1],  # target 5: rank 5
            [1.0, 2, 3, 4, 5, 6],  # target 5: rank 0
        ]
    )
    targets = torch.tensor([0, 2, 5, 5])
    m = zeroshot_metrics(audio, classifier, targets, folds=torch.tensor([1, 1, 2, 2]))
    assert m["top1_acc"] == 0.5 and m["top5_acc"] == 0.75
    assert m["fold1/top1_acc"] == 0.5 and m["fold1/top5_acc"] == 1.0
    assert m["fold2/top1_acc"] == 0.5 and m["fold2/top5_acc"] == 0.5
    assert m["fold_mean/top5_acc"] == 0.75


def test_fold_mean_is_unweighted():
    classifier = torch.eye(2)
    audio = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    m = zeroshot_metrics(audio, classifier, torch.tensor([0, 0, 0, 1]), folds=torch.tensor([0, 0, 0, 1]), ks=(1,))
    assert m["top1_acc"] == 0.75 and m["fold_mean/top1_acc"] == 0.5


def test_tied_class_scores_count_as_miss():
    m = zeroshot_metrics(torch.tensor([[1.0, 1.0]]), torch.eye(2), torch.tensor([1]), ks=(1, 2))
    assert m["top1_acc"] == 0.0 and m["top2_acc"] == 1.0


def test_average_precision_by_hand():
    # ranking: +, -, +, -  -> precision at hits 1/1 and 2/3 -> AP = (1 + 2/3) / 2
    ap = average_precision(torch.tensor([0.9, 0.8, 0.7, 0.1]), torch.tensor([True, False, True, False]))
    assert ap == pytest.approx((1 + 2 / 3) / 2)
    # a tie between a positive and a negative is one threshold: precision 1/2 at recall 1
    assert average_precision(torch.tensor([0.5, 0.5]), torch.tensor([True, False])) == pytest.approx(0.5)
    assert average_precision(torch.tensor([0.5, 0.5]), torch.tensor([False, True])) == pytest.approx(0.5)


def test_multilabel_map_macro_over_classes_with_positives():
    classifier = torch.eye(3)
    audio = F.normalize(torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.6, 0.0], [0.7, 0.0, 0.0], [0.1, 0.9, 0.0]]), dim=-1)
    targets = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 1, 0]], dtype=torch.bool)  # class 2: no positive
    m = zeroshot_metrics(audio, classifier, targets)
    # class 0 orders clips 2, 0, 1, 3 (positives 0, 2): AP 1; class 1 orders 3, 1, 0, 2 (positives 1, 2, 3):
    # hits at positions 1, 2, 4 -> AP = (1 + 1 + 3/4) / 3
    assert m["num_classes_scored"] == 2.0
    assert m["mAP"] == pytest.approx((1.0 + (2 + 3 / 4) / 3) / 2)
    with pytest.raises(ValueError, match="folds"):
        zeroshot_metrics(audio, classifier, targets, folds=torch.zeros(4))


def test_confusion_matrix():
    cm = confusion_matrix(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 0, 1, 2]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]


def test_label_files_and_tags(tmp_path):
    csv_file = tmp_path / "class_labels_indices.csv"
    csv_file.write_text('index,mid,display_name\n1,/m/0b,"Speech, child"\n0,/m/0a,Music\n')
    assert read_label_file(csv_file) == (["Music", "Speech, child"], ["/m/0a", "/m/0b"])
    plain = tmp_path / "classes.txt"
    plain.write_text("dog\n\ncat\n")
    assert read_label_file(plain) == (["dog", "cat"], ["dog", "cat"])
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="no class labels"):
        read_label_file(tmp_path / "empty.txt")
    tags = [["dog"], "cat", ["dog"]]
    names = class_names_from_tags(tags)
    assert names == ["cat", "dog"]
    assert targets_from_tags(tags, names, multi_label=False).tolist() == [1, 0, 1]
    multi = targets_from_tags([["dog", "cat"], []], names, multi_label=True)
    assert multi.tolist() == [[True, True], [False, False]]
    with pytest.raises(ValueError, match="not among"):
        targets_from_tags([["cow"]], names, multi_label=True)
    with pytest.raises(ValueError, match="exactly one"):
        targets_from_tags([["dog", "cat"]], names, multi_label=False)
