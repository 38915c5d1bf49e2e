"""RoBERTa text tower against transformers' RobertaModel; CNN14 and CLAPModel contracts."""

import pytest
import torch

from clap_train.models.audio.pann import Cnn14Encoder
from clap_train.models.clap import CLAPModel
from clap_train.models.text.roberta import RobertaEncoder
from clap_train.signal.frontend import LogMelFrontend

_HF_RENAMES = (
    ("embeddings.LayerNorm", "embeddings.layer_norm"), ("encoder.layer.", "layers."), ("pooler.dense", "pooler"),
    ("attention.self.query", "query"), ("attention.self.key", "key"), ("attention.self.value", "value"),
    ("attention.output.dense", "attn_out"), ("attention.output.LayerNorm", "attn_norm"),
    ("intermediate.dense", "ffn_in"), ("output.dense", "ffn_out"), ("output.LayerNorm", "ffn_norm"),
)


def _from_hf(state_dict):
    out = {}
    for key, value in state_dict.items():
        if key.endswith(("position_ids", "token_type_ids")):
            continue
        for old, new in _HF_RENAMES:
            key = key.replace(old, new)
        out[key] = value
    return out


@pytest.mark.parametrize("eps", [1e-5, 1e-12])
def test_roberta_matches_transformers(eps):
    transformers = pytest.importorskip("transformers")
    config = transformers.RobertaConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=64, max_position_embeddings=40, layer_norm_eps=eps,
                                        type_vocab_size=1)
    torch.manual_seed(0)
    reference = transformers.RobertaModel(config).eval()
    ours = RobertaEncoder(300, 32, 2, 4, 64, 40, layer_norm_eps=eps).eval()
    ours.load_state_dict(_from_hf(reference.state_dict()))
    input_ids = torch.randint(3, 300, (3, 12))
    input_ids[:, 0] = 0
    attention_mask = torch.ones_like(input_ids)
    input_ids[1, 7:], attention_mask[1, 7:] = 1, 0  # a padded row
    expected = reference(input_ids=input_ids, attention_mask=attention_mask).pooler_output
    torch.testing.assert_close(ours(input_ids, attention_mask), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("position_offset", [True, False])  # RoBERTa / BERT positions
def test_all_padding_columns_are_skipped_without_changing_the_output(position_offset):
    transformers = pytest.importorskip("transformers")
    kind = transformers.RobertaModel if position_offset else transformers.BertModel
    config_kind = transformers.RobertaConfig if position_offset else transformers.BertConfig
    config = config_kind(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=80, type_vocab_size=1, pad_token_id=1,
                         layer_norm_eps=1e-5)
    torch.manual_seed(0)
    reference = kind(config).eval()
    ours = RobertaEncoder(300, 32, 2, 4, 64, 80, position_offset=position_offset).eval()
    ours.load_state_dict(_from_hf(reference.state_dict()))
    input_ids = torch.randint(3, 300, (3, 77))
    input_ids[:, 0] = 0
    lengths = torch.tensor([9, 5, 12])  # the longest caption ends at column 12 of 77
    attention_mask = (torch.arange(77) < lengths[:, None]).long()
    input_ids[attention_mask == 0] = 1
    seen = []
    ours.layers[0].register_forward_hook(lambda module, args, out: seen.append(args[0].shape[1]))
    expected = reference(input_ids=input_ids, attention_mask=attention_mask).pooler_output
    torch.testing.assert_close(ours(input_ids, attention_mask), expected, atol=1e-5, rtol=0)
    assert seen == [12]  # the 65 all-padding columns never reached the layers


def test_roberta_padding_does_not_change_pooled_output():
    torch.manual_seed(0)
    model = RobertaEncoder(100, 16, 1, 2, 32, 30).eval()
    ids = torch.tensor([[0, 5, 6, 7, 2]])
    padded = torch.tensor([[0, 5, 6, 7, 2, 1, 1, 1]])
    out = model(ids, torch.ones_like(ids))
    out_padded = model(padded, (padded != 1).long())
    torch.testing.assert_close(out, out_padded, atol=1e-6, rtol=0)


def test_bf16_model_keeps_a_float32_front_end():
    """`model.to(torch.bfloat16)` (Lightning's bf16-true): the STFT constants stay float32, the log-mel is
    computed in float32 from an int16 waveform and handed to the tower in bf16."""
    torch.manual_seed(0)
    model = CLAPModel(Cnn14Encoder((4, 8), num_mel_bins=16), RobertaEncoder(50, 16, 1, 2, 32, 20),
                      LogMelFrontend(8000, 256, 128, 16, 20, 4000), embed_dim=8).eval()
    batch = {"waveform": (torch.randn(3, 4000) * 3000).to(torch.int16), "input_ids": torch.randint(3, 50, (3, 6)),
             "attention_mask": torch.ones(3, 6, dtype=torch.long)}
    with torch.no_grad():
        expected_features, _ = model.audio_features(batch)
        expected = model(batch)["audio_embeds"]
        model.to(torch.bfloat16)
        assert model.frontend.window.dtype == model.frontend.mel_fbank.dtype == torch.float32
        features, _ = model.audio_features(batch)
        audio = model(batch)["audio_embeds"]
    assert features.dtype == torch.bfloat16 and audio.dtype == torch.bfloat16
    torch.testing.assert_close(features.float(), expected_features, atol=0.5, rtol=0.01)  # bf16 rounding of dB values
    assert torch.nn.functional.cosine_similarity(audio.float(), expected).min() > 0.99
    double = LogMelFrontend(8000, 256, 128, 16, 20, 4000, double_precision=True).float()
    assert double.window.dtype == torch.float64  # a cast never lowers the front end's own precision


def test_bad_constructor_arguments_name_themselves():
    with pytest.raises(ValueError, match="num_heads"):
        RobertaEncoder(100, 30, 1, 4)
    with pytest.raises(ValueError, match="channels"):
        Cnn14Encoder(channels=(8,))
    with pytest.raises(ValueError, match="mel_scale"):
        LogMelFrontend(mel_scale="bark")


def test_clap_model_embeds_and_trains():
    torch.manual_seed(0)
    model = CLAPModel(Cnn14Encoder((4, 8), num_mel_bins=16), RobertaEncoder(50, 16, 1, 2, 32, 20),
                      LogMelFrontend(8000, 256, 128, 16, 20, 4000), embed_dim=8)
    batch = {"waveform": torch.randn(3, 4000), "input_ids": torch.randint(3, 50, (3, 6)),
             "attention_mask": torch.ones(3, 6, dtype=torch.long)}
    out = model(batch)
    assert out["audio_embeds"].shape == out["text_embeds"].shape == (3, 8)
    torch.testing.assert_close(out["audio_embeds"].norm(dim=-1), torch.ones(3))
    (out["audio_embeds"] @ out["text_embeds"].T).trace().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "logit_scale" not in n)
    assert model.logit_scale_a.shape == (1,)  # 1-D so FSDP can shard it
    with torch.no_grad():
        model.logit_scale_a.fill_(10.0)
    model.clamp_logit_scales()
    assert model.logit_scale_a.exp().item() == pytest.approx(100.0)
