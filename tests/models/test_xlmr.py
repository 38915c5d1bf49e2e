"""XLM-RoBERTa text tower: the RoBERTa tower at XLM-R's vocabulary equals transformers' XLMRobertaModel."""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from clap_train.checkpoints.hf_text import hf_text_to_roberta
from clap_train.checkpoints.pretrained import load_pretrained_roberta
from clap_train.models.text.roberta import RobertaEncoder

transformers = pytest.importorskip("transformers")
CONF = str(Path(__file__).resolve().parents[2] / "conf")
XLMR_VOCAB = 250_002
SMALL = {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64, "max_position_embeddings": 40}


def _hf_config(vocab_size, hidden_size, num_layers, num_heads, intermediate_size, max_position_embeddings):
    return transformers.XLMRobertaConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers, num_attention_heads=num_heads,
        intermediate_size=intermediate_size, max_position_embeddings=max_position_embeddings, type_vocab_size=1,
        layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2)


def _padded_batch(vocab_size, length=12):
    generator = torch.Generator().manual_seed(3)
    input_ids = torch.randint(5, vocab_size, (3, length), generator=generator)
    input_ids[:, 0] = 0  # <s>
    attention_mask = torch.ones_like(input_ids)
    input_ids[1, 7:], attention_mask[1, 7:] = 1, 0  # padded rows: <pad> = 1
    input_ids[2, 4:], attention_mask[2, 4:] = 1, 0
    return input_ids, attention_mask


def _assert_parity(ours: RobertaEncoder, reference, vocab_size):
    converted, unknown = hf_text_to_roberta(reference.state_dict())
    assert unknown == []
    ours.load_state_dict(converted, strict=True)
    input_ids, attention_mask = _padded_batch(vocab_size)
    with torch.no_grad():
        expected = reference(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        actual = ours.eval()(input_ids, attention_mask)
    assert (actual - expected).abs().max().item() < 1e-4


def test_small_xlmr_matches_transformers():
    torch.manual_seed(0)
    reference = transformers.XLMRobertaModel(_hf_config(XLMR_VOCAB, **SMALL)).eval()
    _assert_parity(RobertaEncoder(vocab_size=XLMR_VOCAB, **SMALL), reference, XLMR_VOCAB)


def test_init_from_a_transformers_xlmr_masked_lm_directory(tmp_path):
    torch.manual_seed(1)
    source = transformers.XLMRobertaForMaskedLM(_hf_config(XLMR_VOCAB, **SMALL))
    source.save_pretrained(tmp_path)
    encoder = RobertaEncoder(vocab_size=XLMR_VOCAB, **SMALL)
    report = load_pretrained_roberta(encoder, tmp_path)
    assert report.kept == ["pooler.bias", "pooler.weight"]  # the masked-LM has no pooler
    assert all(k.startswith("lm_head.") for k in report.skipped)
    state = source.state_dict()
    assert torch.equal(encoder.embeddings.word_embeddings.weight, state["roberta.embeddings.word_embeddings.weight"])
    assert torch.equal(encoder.layers[1].ffn_out.weight, state["roberta.encoder.layer.1.output.dense.weight"])


@pytest.mark.slow
def test_preset_text_tower_matches_xlm_roberta_base():
    with initialize_config_dir(config_dir=CONF, version_base=None):
        text_config = compose("train", overrides=["model=htsat_tiny_xlmr"]).model.text_encoder
    torch.manual_seed(0)
    ours = instantiate(text_config)
    assert ours.vocab_size == XLMR_VOCAB and sum(p.numel() for p in ours.parameters()) == 278_043_648
    reference = transformers.XLMRobertaModel(_hf_config(XLMR_VOCAB, 768, 12, 12, 3072, 514)).eval()
    _assert_parity(ours, reference, XLMR_VOCAB)
