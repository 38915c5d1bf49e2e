import json
import tarfile

import pytest
import torch

from data_pipelines.shards import (
    ShardWriter,
    decode_audio,
    encode_flac,
    expand_shards,
    iter_tar,
    read_meta,
    to_mono_48k,
    write_shards,
)
from tests.data_pipelines.conftest import write_audio, write_broken


@pytest.mark.parametrize(
    "name, sample_rate, channels, kwargs",
    [
        ("a.wav", 16000, 1, {}),
        ("b.flac", 44100, 2, {}),
        ("c.ogg", 44100, 2, {"format": "OGG", "subtype": "VORBIS"}),
        ("d.mp3", 16000, 1, {"format": "MP3", "subtype": "MPEG_LAYER_III"}),
    ],
)
def test_decode_resample_encode_round_trip(tmp_path, name, sample_rate, channels, kwargs):
    path = write_audio(tmp_path / name, 0.5, sample_rate, channels, **kwargs)
    wave, rate = decode_audio(path)
    assert rate == sample_rate and wave.shape[0] == channels and wave.dtype == torch.float32
    assert abs(wave.shape[1] - sample_rate // 2) < 0.05 * sample_rate  # lossy codecs pad a little
    mono = to_mono_48k(wave, rate)
    assert mono.dim() == 1 and abs(mono.shape[0] - 24000) < 0.05 * 48000
    back, back_rate = decode_audio(encode_flac(mono, 48000))
    assert back_rate == 48000 and back.shape == (1, mono.shape[0])
    assert torch.allclose(back[0], mono.clamp(-1, 1), atol=1e-4)  # 16-bit quantisation


def test_decode_rejects_broken_files(tmp_path):
    broken = write_broken(tmp_path)
    for path in broken.values():
        with pytest.raises(ValueError):
            decode_audio(path)


def test_to_mono_48k_validates():
    with pytest.raises(ValueError, match="sample_rate"):
        to_mono_48k(torch.zeros(100), 0)
    with pytest.raises(ValueError, match="wave"):
        to_mono_48k(torch.zeros(1, 2, 3), 48000)


def test_shard_writer_numbers_shards_and_sizes(tmp_path):
    flac = encode_flac(torch.zeros(480), 48000)
    samples = [(f"clip_{i}", flac, {"text": [f"caption {i} é"]}) for i in range(5)]
    sizes = write_shards(samples, tmp_path, "valid", samples_per_shard=2)
    assert sizes == {"valid-000000.tar": 2, "valid-000001.tar": 2, "valid-000002.tar": 1}
    assert json.loads((tmp_path / "sizes.json").read_text()) == sizes
    assert not list(tmp_path.glob("*.tmp"))
    read = [
        (key, read_meta(members)["text"]) for path in sorted(tmp_path.glob("*.tar")) for key, members in iter_tar(path)
    ]
    assert read == [(f"clip_{i}", [f"caption {i} é"]) for i in range(5)]
    with tarfile.open(tmp_path / "valid-000000.tar") as tar:
        assert tar.getnames() == ["clip_0.flac", "clip_0.json", "clip_1.flac", "clip_1.json"]
    assert expand_shards(str(tmp_path / "valid-{000000..000002}.tar"))[-1].endswith("valid-000002.tar")


def test_shard_writer_merges_sizes_and_rejects_bad_keys(tmp_path):
    flac = encode_flac(torch.zeros(480), 48000)
    write_shards([("a", flac, {})], tmp_path, "train", 4)
    with ShardWriter(tmp_path, "train", 4, start_index=1) as writer:
        writer.write("b", flac, {})
        with pytest.raises(ValueError, match="already written"):
            writer.write("b", flac, {})
        with pytest.raises(ValueError, match="key"):
            writer.write("c.d", flac, {})
    assert json.loads((tmp_path / "sizes.json").read_text()) == {"train-000000.tar": 1, "train-000001.tar": 1}
    with pytest.raises(ValueError, match="samples_per_shard"):
        ShardWriter(tmp_path, "train", 0)
    with pytest.raises(FileNotFoundError, match="train-000002"):
        expand_shards(str(tmp_path / "train-{000000..000009}.tar"))
