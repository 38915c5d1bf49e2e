import json
import subprocess
import sys

import pytest
import torch

from clap_train.data.tokenizer import CaptionTokenizer
from data_pipelines.captions import debias, template_caption
from data_pipelines.keyword_to_caption import Seq2SeqCaptioner, TemplateCaptioner, augment_shards, main
from data_pipelines.shards import encode_flac, iter_tar, read_meta, write_shards, write_tar
from data_pipelines.train_tokenizer import main as train_tokenizer_main
from data_pipelines.train_tokenizer import train_tokenizer


def test_debias_whole_word_case_preserving():
    assert debias("A Man and a WOMAN talk; the boy laughs") == "A Person and a PERSON talk; the child laughs"
    assert debias("human manager, Mankind, girls and women") == "human manager, Mankind, children and people"
    assert debias("She hands him her keys") == "They hands them their keys"


def test_template_caption():
    assert template_caption(["dog"]) == "the sound of dog"
    assert template_caption(["Dog", "bark", "chirping_birds"]) == "the sound of dog, bark and chirping birds"
    with pytest.raises(ValueError, match="keywords"):
        template_caption([" "])


@pytest.fixture
def tagged_shards(tmp_path):
    """5 samples over 2 shards: 3 long tagged clips, 1 short tagged clip, 1 untagged clip."""
    long_flac, short_flac = encode_flac(torch.rand(2 * 48000 + 10) - 0.5, 48000), encode_flac(torch.rand(48000), 48000)
    samples = [
        ("a", long_flac, {"text": ["a man speaks"], "tags": ["Male speech, man speaking", "Speech"]}),
        ("b", long_flac, {"text": ["birds"], "tags": ["bird", "chirp", "wind"]}),
        ("c", short_flac, {"text": ["short"], "tags": ["dog"]}),
        ("d", long_flac, {"text": ["no tags here"]}),
        ("e", long_flac, {"text": ["rain"], "tags": ["rain"], "original_data": {"x": 1}}),
    ]
    out = tmp_path / "in"
    write_shards(samples, out, "train", samples_per_shard=3)
    return out


def read_samples(directory):
    return {key: members for shard in sorted(directory.glob("*.tar")) for key, members in iter_tar(shard)}


def test_keyword_to_caption_templates(tagged_shards, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--shards", str(tagged_shards / "train-{000000..000001}.tar"), "--out", str(out)]) == 0
    assert "deterministic templates" in capsys.readouterr().err
    before, after = read_samples(tagged_shards), read_samples(out)
    assert list(after) == list(before)
    metas = {key: read_meta(members) for key, members in after.items()}
    assert metas["a"]["text_augment_t5"] == ["the sound of person speech, person speaking and speech"]
    assert metas["b"]["text_augment_t5"] == ["the sound of bird, chirp and wind"]
    assert "text_augment_t5" not in metas["c"] and "text_augment_t5" not in metas["d"]
    assert metas["e"]["original_data"] == {"x": 1} and metas["a"]["text"] == ["a man speaks"]
    assert all(after[key]["flac"] == before[key]["flac"] for key in before)
    assert json.loads((out / "sizes.json").read_text()) == {"train-000000.tar": 3, "train-000001.tar": 2}
    report = json.loads((out / "keyword_to_caption.json").read_text())
    assert (report["captioned"], report["short"], report["no_tags"]) == (3, 1, 1)
    with pytest.raises(SystemExit, match="not empty"):
        augment_shards([str(tagged_shards / "train-000000.tar")], out, TemplateCaptioner())


def save_tiny_t5(directory):
    """A randomly initialised 1-layer T5 and a word-level tokenizer, saved in `save_pretrained` layout."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    words = ["<pad>", "</s>", "<unk>", ",", "a", "bird", "chirp", "wind", "rain", "man", "speech", "the", "sound"]
    words += ["male", "speaking", "person", "falls", "sings", "loudly", "and", "of", "in", "distance"]
    backend = Tokenizer(models.WordLevel({word: i for i, word in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    tokenizer.save_pretrained(directory)
    config = T5Config(
        vocab_size=len(words), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_decoder_layers=1, num_heads=2,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(config)
    with torch.no_grad():  # zero logits for <pad>/</s> so that greedy decoding emits words rather than stopping
        model.lm_head.weight[:2] = 0.0
    model.save_pretrained(directory)
    return model, tokenizer


def test_keyword_to_caption_with_tiny_t5(tagged_shards, tmp_path):
    model, tokenizer = save_tiny_t5(tmp_path / "t5")
    captioner = Seq2SeqCaptioner(tmp_path / "t5", batch_size=2, device="cpu", max_new_tokens=6)
    keyword_lists = [["Male speech, man speaking", "Speech"], ["bird", "chirp", "wind"], ["rain"]]
    captions = captioner(keyword_lists)
    assert len(captions) == 3 and all(isinstance(c, str) and c for c in captions)
    assert captions != TemplateCaptioner()(keyword_lists)  # the model generated them, no template fallback
    prompt = tokenizer(["bird, chirp, wind"], return_tensors="pt")
    prompt.pop("token_type_ids", None)
    expected = tokenizer.batch_decode(model.eval().generate(**prompt, max_new_tokens=6), skip_special_tokens=True)[0]
    assert captions[1] == (" ".join(expected.split()) or template_caption(keyword_lists[1]))

    report = augment_shards(sorted(map(str, tagged_shards.glob("*.tar"))), tmp_path / "out", captioner)
    assert report["generator"] == str(tmp_path / "t5") and report["captioned"] == 3
    metas = {key: read_meta(members) for key, members in read_samples(tmp_path / "out").items()}
    assert metas["b"]["text_augment_t5"] == [debias(captions[1])]
    assert metas["a"]["text_augment_t5"] == [debias(captions[0])]
    assert " man " not in f" {metas['a']['text_augment_t5'][0]} "
    with pytest.raises(ValueError, match="model_path"):
        Seq2SeqCaptioner(tmp_path / "nothing")


def test_train_tokenizer_output_loads(tagged_shards, tmp_path):
    augmented = tmp_path / "aug"
    augment_shards(sorted(map(str, tagged_shards.glob("*.tar"))), augmented, TemplateCaptioner())
    path, num_captions, num_skipped = train_tokenizer(sorted(map(str, augmented.glob("*.tar"))), tmp_path / "tok",
                                                      vocab_size=300)
    assert num_captions == 5 + 3 and num_skipped == 0
    tokenizer = CaptionTokenizer(path.parent, max_length=16)
    batch = tokenizer(["the sound of bird", "rain"])
    assert batch["input_ids"].shape == (2, 16) and batch["input_ids"][0, 0].item() == 0
    assert tokenizer.vocab_size <= 300 and batch["attention_mask"][1].sum() < batch["attention_mask"][0].sum()
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer([str(augmented / "train-000000.tar")], tmp_path / "tok2", vocab_size=100)


@pytest.mark.slow
def test_train_tokenizer_cli(tagged_shards, tmp_path):
    command = [sys.executable, "-m", "data_pipelines.train_tokenizer", "--shards"]
    command += [
        str(tagged_shards / "train-{000000..000001}.tar"),
        "--out",
        str(tmp_path / "tok"),
        "--vocab-size",
        "280",
    ]
    result = subprocess.run(command, check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "trained on 5 captions" in result.stderr
    assert CaptionTokenizer(tmp_path / "tok").vocab_size <= 280


def test_train_tokenizer_skips_and_counts_bad_json(tagged_shards, tmp_path, capsys):
    members = [("good.json", b'{"text": ["a dog barks loudly"]}'), ("bad.json", b'{"text": ["unterminated'),
               ("latin.json", b'{"text": ["caf\xe9"]}')]
    write_tar(tmp_path / "mixed-000000.tar", [(name.split(".")[0], {"json": data}) for name, data in members])
    assert train_tokenizer_main(["--shards", str(tmp_path / "mixed-000000.tar"), "--out", str(tmp_path / "tok"),
                 "--vocab-size", "270"]) == 0
    err = capsys.readouterr().err
    assert "trained on 1 captions" in err and "2 samples skipped (bad json)" in err
    assert CaptionTokenizer(tmp_path / "tok").vocab_size <= 270


def test_train_tokenizer_user_error_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_tokenizer_main(["--shards", str(tmp_path / "none-{000000..000001}.tar"), "--out", str(tmp_path / "tok"),
              "--vocab-size", "270"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("data_pipelines.train_tokenizer: error: --shards") and len(err.splitlines()) == 1
