"""keyword_to_caption with a causal LM from a local path and a prompt template (tiny random GPT-2 from a config)."""

import subprocess
import sys

import pytest
import torch

from data_pipelines.captions import debias
from data_pipelines.keyword_to_caption import CausalCaptioner, Seq2SeqCaptioner, augment_shards, build_captioner, main
from data_pipelines.shards import read_meta
from tests.data_pipelines.conftest import ENV
from tests.data_pipelines.test_captions_and_tokenizer import read_samples, save_tiny_t5, tagged_shards  # noqa: F401

TEMPLATE = "keywords : {keywords} . caption :"


def save_tiny_gpt2(directory):
    """A randomly initialised 1-layer GPT-2 and a word-level tokenizer, saved in `save_pretrained` layout."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    words = ["<pad>", "</s>", "<unk>", ",", ".", ":", "keywords", "caption", "a", "bird", "chirp", "wind", "rain",
             "man", "speech", "the", "sound", "male", "speaking", "person", "sings", "loudly", "and", "of", "in"]
    backend = Tokenizer(models.WordLevel({word: i for i, word in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>",
                                        unk_token="<unk>")
    tokenizer.save_pretrained(directory)
    config = GPT2Config(vocab_size=len(words), n_positions=64, n_embd=16, n_layer=1, n_head=2, bos_token_id=1,
                        eos_token_id=1, pad_token_id=0)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():  # never <pad>/</s>: greedy decoding emits words rather than stopping
        model.lm_head.weight[:2] = -1.0
    model.save_pretrained(directory)
    return model, tokenizer


def test_causal_captioner_batched_equals_one_by_one(tmp_path):
    model, tokenizer = save_tiny_gpt2(tmp_path / "gpt2")
    captioner = CausalCaptioner(tmp_path / "gpt2", TEMPLATE, batch_size=3, device="cpu", max_new_tokens=5)
    keyword_lists = [["Male speech, man speaking", "Speech"], ["bird"], ["rain", "wind"]]
    captions = captioner(keyword_lists)
    for keywords, caption in zip(keyword_lists, captions, strict=True):  # left padding: batch = one at a time
        prompt = tokenizer([TEMPLATE.replace("{keywords}", ", ".join(keywords))], return_tensors="pt")
        prompt.pop("token_type_ids", None)
        out = model.eval().generate(**prompt, max_new_tokens=5, do_sample=False, pad_token_id=0)
        expected = tokenizer.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
        assert caption == " ".join(expected.split()) and caption
    assert isinstance(build_captioner(str(tmp_path / "gpt2"), device="cpu"), CausalCaptioner)  # auto: from config
    save_tiny_t5(tmp_path / "t5")
    assert isinstance(build_captioner(str(tmp_path / "t5"), device="cpu"), Seq2SeqCaptioner)
    with pytest.raises(ValueError, match="prompt_template"):
        CausalCaptioner(tmp_path / "gpt2", "no placeholder")


def test_cli_causal_lm_writes_the_named_field(tagged_shards, tmp_path):  # noqa: F811
    save_tiny_gpt2(tmp_path / "gpt2")
    out = tmp_path / "out"
    argv = ["--shards", str(tagged_shards / "train-*.tar"), "--out", str(out), "--model", str(tmp_path / "gpt2"),
            "--prompt-template", TEMPLATE, "--field", "text_augment_llm", "--max-new-tokens", "4", "--device", "cpu"]
    assert main(argv) == 0
    metas = {key: read_meta(members) for key, members in read_samples(out).items()}
    assert metas["b"]["text_augment_llm"][0] and "text_augment_t5" not in metas["b"]
    assert metas["a"]["text_augment_llm"] == [debias(metas["a"]["text_augment_llm"][0])]
    assert "text_augment_llm" not in metas["c"] and "text_augment_llm" not in metas["d"]  # short, untagged
    report = (out / "keyword_to_caption.json").read_text()
    assert '"field": "text_augment_llm"' in report and '"captioned": 3' in report
    from data_pipelines.train_tokenizer import iter_captions

    captions = list(iter_captions(sorted(map(str, out.glob("*.tar")))))
    assert metas["b"]["text_augment_llm"][0] in captions  # the tokenizer trains on the new field too
    with pytest.raises(ValueError, match="field"):
        augment_shards([str(p) for p in tagged_shards.glob("*.tar")], tmp_path / "o2", None, field="text")


@pytest.mark.parametrize("flags, message", [
    (["--field", "text"], "--field must be a name"),
    (["--prompt-template", "no placeholder"], "--prompt-template must contain {keywords}"),
    (["--model-kind", "rnn"], "--model-kind must be auto, seq2seq or causal"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--model", "/nonexistent/model"], "--model /nonexistent/model is not a directory"),
])
def test_bad_flags_are_one_line(tagged_shards, tmp_path, flags, message):  # noqa: F811
    argv = ["--shards", str(tagged_shards / "train-*.tar"), "--out", str(tmp_path / "o"), *flags]
    if flags[0] == "--field":  # once through the real entry point: what the user sees on stderr
        result = subprocess.run([sys.executable, "-m", "data_pipelines.keyword_to_caption", *argv],
                                capture_output=True, text=True, check=False, env=ENV)
        expected = f"keyword_to_caption: error: {message} not in ('text', 'tags', 'original_data'), got 'text'"
        assert result.returncode != 0 and result.stderr.strip().splitlines() == [expected]
    with pytest.raises(SystemExit) as error:
        main(argv)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "o").exists()
