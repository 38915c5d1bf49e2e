"""The "augmented" caption pool reads the json fields named by data.augmented_fields (keyword_to_caption --field)."""

import json

import pytest

from clap_train.data.stages import ChooseCaption, DecodeSample, sample_stages
from data_pipelines.shards import encode_flac
from tests.data_pipelines.conftest import sine


def sample(meta):
    return {"__key__": "k", "flac": encode_flac(sine(0.1, 48000)[:, 0], 48000), "json": json.dumps(meta).encode()}


def test_augmented_fields_are_read_and_drawn():
    meta = {"text": ["original"], "text_augment_t5": ["t5 caption"], "text_augment_llm": ["llm caption"]}
    assert DecodeSample()(sample(meta))["augmented_texts"] == ["t5 caption"]
    both = DecodeSample(augmented_fields=("text_augment_llm", "text_augment_t5"))(sample(meta))
    assert both["augmented_texts"] == ["llm caption", "t5 caption"]
    choose = ChooseCaption({"augmented": 1.0})
    choose.set_seed(0)
    llm_only = DecodeSample(augmented_fields=("text_augment_llm",))(sample(meta))
    assert choose(llm_only)["texts"] == ["llm caption"]
    stages = sample_stages(48000, 4800, augmented_fields=["text_augment_llm"])
    assert stages[0].augmented_fields == ("text_augment_llm",)
    with pytest.raises(ValueError, match="augmented_fields must be a list"):
        sample_stages(48000, 4800, augmented_fields="text_augment_llm")
