"""HTSATEncoder: numerical parity with transformers' ClapAudioModel, and training-mode behaviour."""

import pytest
import torch
from transformers import ClapAudioConfig, ClapAudioModel

from clap_train.checkpoints.hf_audio import hf_audio_to_htsat, htsat_to_hf_audio
from clap_train.models.audio.htsat import HTSATEncoder, shift_mask, spec_augment
from tests._weights import randomise_

SMALL = {"embed_dim": 16, "depths": (2, 2, 2), "num_heads": (1, 2, 4), "window_size": 4, "spec_size": 64,
         "num_mel_bins": 16}
SMALL_FRAMES = 250  # stretched to spec_size * freq_ratio = 256 frames, like 1001 -> 1024
LONGER_MIXES = {"none": [False, False, False], "some": [True, False, True], "all": [True, True, True]}


def _hf_config(kwargs: dict, enable_fusion: bool) -> ClapAudioConfig:
    return ClapAudioConfig(
        patch_embeds_hidden_size=kwargs.get("embed_dim", 96),
        hidden_size=kwargs.get("embed_dim", 96) * 2 ** (len(kwargs.get("depths", (2, 2, 6, 2))) - 1),
        depths=list(kwargs.get("depths", (2, 2, 6, 2))),
        num_attention_heads=list(kwargs.get("num_heads", (4, 8, 16, 32))),
        window_size=kwargs.get("window_size", 8),
        spec_size=kwargs.get("spec_size", 256),
        num_mel_bins=kwargs.get("num_mel_bins", 64),
        enable_fusion=enable_fusion,
    )


def _randomised_hf_model(kwargs: dict, enable_fusion: bool) -> ClapAudioModel:
    """HF model with every parameter and BatchNorm statistic random (HF's init zeroes the bias tables)."""
    torch.manual_seed(0)
    model = ClapAudioModel(_hf_config(kwargs, enable_fusion)).eval()
    randomise_(model)
    return model


def _converted_pair(kwargs: dict, enable_fusion: bool) -> tuple[ClapAudioModel, HTSATEncoder]:
    hf = _randomised_hf_model(kwargs, enable_fusion)
    ours = HTSATEncoder(enable_fusion=enable_fusion, **kwargs).eval()
    ours.load_state_dict(hf_audio_to_htsat(hf.state_dict()), strict=True)
    return hf, ours


def _log_mel(batch: int, channels: int, frames: int, bins: int) -> torch.Tensor:
    return torch.randn(batch, channels, frames, bins, generator=torch.Generator().manual_seed(1)) * 10.0 - 30.0


def _max_diff(hf: ClapAudioModel, ours: HTSATEncoder, features: torch.Tensor, longer: list[bool]) -> float:
    flags = torch.tensor(longer)
    with torch.no_grad():
        reference = hf(input_features=features, is_longer=flags[:, None]).pooler_output
        output = ours(features, flags)
    assert output.shape == reference.shape == (features.shape[0], ours.output_dim)
    return (output - reference).abs().max().item()


def test_parity_small_unfused():
    hf, ours = _converted_pair(SMALL, enable_fusion=False)
    assert _max_diff(hf, ours, _log_mel(3, 1, SMALL_FRAMES, 16), [False] * 3) < 1e-4


@pytest.mark.parametrize("mix", sorted(LONGER_MIXES))
def test_parity_small_fused(mix):
    hf, ours = _converted_pair(SMALL, enable_fusion=True)
    assert _max_diff(hf, ours, _log_mel(3, 4, SMALL_FRAMES, 16), LONGER_MIXES[mix]) < 1e-4


def test_fusion_changes_only_longer_rows():
    _, ours = _converted_pair(SMALL, enable_fusion=True)
    features = _log_mel(3, 4, SMALL_FRAMES, 16)
    with torch.no_grad():
        plain = ours(features, torch.tensor(LONGER_MIXES["none"]))
        mixed = ours(features, torch.tensor(LONGER_MIXES["some"]))
    assert torch.equal(plain[1], mixed[1])
    assert (plain[0] - mixed[0]).abs().max() > 1e-3


@pytest.mark.slow
def test_parity_htsat_tiny():
    hf, ours = _converted_pair({}, enable_fusion=False)
    assert _max_diff(hf, ours, _log_mel(2, 1, 1001, 64), [False, False]) < 1e-4
    hf, ours = _converted_pair({}, enable_fusion=True)
    features = _log_mel(3, 4, 1001, 64)
    for longer in LONGER_MIXES.values():
        assert _max_diff(hf, ours, features, longer) < 1e-4


def test_key_map_round_trip_and_rejects_unknown_keys():
    hf = _randomised_hf_model(SMALL, enable_fusion=True)
    hf_state = {f"audio_model.{k}": v for k, v in hf.state_dict().items()}  # ClapModel layout
    ours = hf_audio_to_htsat(hf_state, prefix="audio_model.audio_encoder.")
    back = htsat_to_hf_audio(ours, prefix="audio_model.audio_encoder.")
    expected = {k: v for k, v in hf_state.items() if not k.endswith("relative_position_index")}
    assert back.keys() == expected.keys()
    assert all(torch.equal(back[k], expected[k]) for k in expected)
    with pytest.raises(ValueError, match="unexpected"):
        hf_audio_to_htsat({"audio_encoder.layers.0.blocks.0.mystery.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="incomplete"):
        hf_audio_to_htsat({"audio_encoder.layers.0.blocks.0.attention.self.query.weight": torch.zeros(1)})


def test_shapes_blocks_and_shift_masks():
    model = HTSATEncoder(**SMALL)
    assert model.output_dim == 64
    assert len(model.blocks()) == sum(SMALL["depths"])
    # Grids 16, 8, 4 with window 4: stages 0 and 1 shift their odd blocks; the 4x4 stage attends globally.
    assert [block.shift for block in model.blocks()] == [0, 2, 0, 2, 0, 0]
    mask = shift_mask(8, 8, 4, 2)
    assert mask.shape == (4, 16, 16)
    assert (mask[0] == 0).all() and set(mask[3].unique().tolist()) == {-100.0, 0.0}


@pytest.mark.parametrize(
    "kwargs, frames, windows",
    [
        ({"depths": (1, 1), "num_heads": (1, 2), "spec_size": 64, "num_mel_bins": 32}, 100, [8, 8]),
        # 8x8 then 4x4 grids with window 8: the second stage shrinks its window to the grid (LAION rule)
        ({"depths": (1, 2), "num_heads": (1, 2), "spec_size": 32, "num_mel_bins": 8}, 60, [8, 4, 4]),
    ],
)
def test_other_debug_geometries_run_forward_and_backward(kwargs, frames, windows):
    model = HTSATEncoder(embed_dim=16, enable_fusion=True, **kwargs).train()
    out = model(_log_mel(2, 4, frames, kwargs["num_mel_bins"]), torch.tensor([True, False]))
    out.sum().backward()
    assert out.shape == (2, 16 * 2 ** (len(kwargs["depths"]) - 1))
    assert [block.attn.window for block in model.blocks()] == windows


def test_gradients_reach_every_parameter():
    model = HTSATEncoder(enable_fusion=True, **SMALL).train()
    model(_log_mel(2, 4, SMALL_FRAMES, 16), torch.tensor([True, True])).square().sum().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_drop_path_and_spec_augment_only_in_training():
    features = _log_mel(2, 1, SMALL_FRAMES, 16)
    for kwargs in ({"drop_path_rate": 0.5}, {"spec_augment": True}):
        model = HTSATEncoder(**SMALL, **kwargs)
        torch.manual_seed(0)
        with torch.no_grad():
            assert not torch.allclose(model.train()(features), model(features))
            assert torch.equal(model.eval()(features), model(features))


def test_spec_augment_zeroes_at_most_two_narrow_stripes_per_axis():
    torch.manual_seed(0)
    x = torch.randn(8, 2, 300, 32) + 5.0  # no natural zeros
    out = spec_augment(x)
    assert torch.all((out == x) | (out == 0))
    zero_frames = (out == 0).all(dim=3).all(dim=1).sum(dim=1)  # (B,) frames zeroed across all bins/channels
    zero_bins = (out == 0).all(dim=2).all(dim=1).sum(dim=1)
    assert (zero_frames <= 2 * 63).all() and (zero_bins <= 2 * 7).all() and zero_frames.sum() > 0


def test_training_fuses_one_random_row_when_none_is_longer():
    model = HTSATEncoder(enable_fusion=True, **SMALL)
    fused_batches = []
    model.patch_embed.fusion_model.register_forward_hook(lambda m, args, out: fused_batches.append(out.shape[0]))
    features, flags = _log_mel(3, 4, SMALL_FRAMES, 16), torch.zeros(3, dtype=torch.bool)
    with torch.no_grad():
        model.eval()(features, flags)
        assert fused_batches == []
        model.train()(features, flags)
    assert fused_batches == [1] and not flags.any()  # the caller's flags are left alone


def test_activation_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    plain = HTSATEncoder(**SMALL).train()
    checkpointed = HTSATEncoder(**SMALL, activation_checkpointing=True).train()
    checkpointed.load_state_dict(plain.state_dict())
    features = _log_mel(2, 1, SMALL_FRAMES, 16)
    for model in (plain, checkpointed):
        model(features).sum().backward()
    for (name, p), q in zip(plain.named_parameters(), checkpointed.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name


@pytest.mark.parametrize(
    "overrides, bad",
    [
        ({"embed_dim": 0}, "embed_dim"),
        ({"depths": ()}, "depths"),
        ({"num_heads": (1, 2)}, "num_heads"),
        ({"num_heads": (3, 2, 4)}, "num_heads"),
        ({"spec_size": 60}, "spec_size"),
        ({"patch_size": 3}, "patch_size"),
        ({"depths": (1, 1, 1, 1, 1, 1), "num_heads": (1,) * 6}, "spec_size / patch_size"),
        ({"window_size": 3}, "window_size"),
        ({"mlp_ratio": 0.0}, "mlp_ratio"),
        ({"drop_path_rate": 1.0}, "drop_path_rate"),
    ],
)
def test_bad_constructor_arguments_raise(overrides, bad):
    with pytest.raises(ValueError, match=bad):
        HTSATEncoder(**{**SMALL, **overrides})


def test_bad_inputs_raise():
    model = HTSATEncoder(enable_fusion=True, **SMALL).eval()
    with pytest.raises(ValueError, match="features must be"):
        model(_log_mel(1, 4, SMALL_FRAMES, 8))
    with pytest.raises(ValueError, match="at most 256 frames"):
        model(_log_mel(1, 4, 257, 16))
    with pytest.raises(ValueError, match="is_longer"):
        model(_log_mel(2, 4, SMALL_FRAMES, 16), torch.tensor([True]))
    with pytest.raises(ValueError, match="4 channels"):
        model(_log_mel(1, 1, SMALL_FRAMES, 16), torch.tensor([True]))
