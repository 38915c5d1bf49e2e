"""ModernBERT text tower equals transformers' ModernBertModel (random weights, padded batch); init from a
transformers directory; the preset's real size (slow)."""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from clap_train.checkpoints.pretrained import load_pretrained_modernbert
from clap_train.models.text.modernbert import ModernBertEncoder

transformers = pytest.importorskip("transformers")
CONF = str(Path(__file__).resolve().parents[2] / "conf")
SMALL = {"vocab_size": 300, "hidden_size": 32, "num_layers": 4, "num_heads": 4, "intermediate_size": 48,
         "max_position_embeddings": 64, "local_attention": 6, "pad_token_id": 1}


def _hf_model(vocab_size, hidden_size, num_layers, num_heads, intermediate_size, max_position_embeddings,
              local_attention, pad_token_id, cls=transformers.ModernBertModel):
    config = transformers.ModernBertConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers, num_attention_heads=num_heads,
        intermediate_size=intermediate_size, max_position_embeddings=max_position_embeddings,
        local_attention=local_attention, pad_token_id=pad_token_id, bos_token_id=0, eos_token_id=2,
        cls_token_id=0, sep_token_id=2, attn_implementation="eager")
    return cls(config).eval()


def _padded_batch(vocab_size, length=20):
    generator = torch.Generator().manual_seed(4)
    input_ids = torch.randint(5, vocab_size, (3, length), generator=generator)
    input_ids[:, 0] = 0
    attention_mask = torch.ones_like(input_ids)
    input_ids[1, 11:], attention_mask[1, 11:] = 1, 0
    input_ids[2, 3:], attention_mask[2, 3:] = 1, 0
    return input_ids, attention_mask


def _assert_parity(ours, reference, vocab_size, length=20):
    ours.load_state_dict(reference.state_dict(), strict=True)  # transformers' names
    input_ids, attention_mask = _padded_batch(vocab_size, length)
    with torch.no_grad():
        expected = reference(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, C)
        hidden = ours.eval().hidden_states(input_ids, attention_mask)
        pooled = ours(input_ids, attention_mask)
    real = attention_mask.bool()
    assert (hidden - expected)[real].abs().max().item() < 1e-4  # padding positions are never read
    mask = attention_mask[..., None].float()
    expected_mean = (expected * mask).sum(dim=1) / mask.sum(dim=1)
    assert (pooled - expected_mean).abs().max().item() < 1e-4


def test_small_modernbert_matches_transformers_with_local_and_global_layers():
    torch.manual_seed(0)
    reference = _hf_model(**SMALL)
    assert reference.config.layer_types[:2] == ["full_attention", "sliding_attention"]
    _assert_parity(ModernBertEncoder(**SMALL), reference, SMALL["vocab_size"])
    cls = ModernBertEncoder(**SMALL, pooling="cls")
    cls.load_state_dict(reference.state_dict())
    ids, mask = _padded_batch(SMALL["vocab_size"])
    with torch.no_grad():
        torch.testing.assert_close(cls.eval()(ids, mask), reference(input_ids=ids, attention_mask=mask)
                                   .last_hidden_state[:, 0], atol=1e-4, rtol=0)


def test_init_from_a_masked_lm_directory(tmp_path):
    torch.manual_seed(1)
    source = _hf_model(**SMALL, cls=transformers.ModernBertForMaskedLM)
    source.save_pretrained(tmp_path)
    encoder = ModernBertEncoder(**SMALL)
    report = load_pretrained_modernbert(encoder, tmp_path)
    assert report.kept == []
    assert report.skipped and all(k.startswith(("head.", "decoder.")) for k in report.skipped)
    assert torch.equal(encoder.layers[2].mlp.Wi.weight, source.state_dict()["model.layers.2.mlp.Wi.weight"])
    with pytest.raises(ValueError, match="pooling"):
        ModernBertEncoder(**SMALL, pooling="max")


@pytest.mark.slow
def test_preset_text_tower_matches_modernbert_base():
    with initialize_config_dir(config_dir=CONF, version_base=None):
        text_config = compose("train", overrides=["model=htsat_tiny_modernbert"]).model.text_encoder
    torch.manual_seed(0)
    ours = instantiate(text_config)
    reference = _hf_model(50368, 768, 22, 12, 1152, 8192, 128, 50283)
    _assert_parity(ours, reference, 50368, length=200)  # longer than the 128-token local window
