"""Formats libsndfile cannot read (m4a/aac, opus in webm/mp4) through the optional PyAV decoder, chosen per file."""

import io

import numpy as np
import pytest

from data_pipelines import shards
from data_pipelines.make_shards import make_shards
from data_pipelines.shards import decode_audio, iter_tar, read_meta

av = pytest.importorskip("av")


def encode_with_pyav(path, container: str, codec: str, rate: int, seconds: float = 0.5) -> None:
    """A stereo 440 Hz tone, encoded by FFmpeg through PyAV."""
    t = np.arange(int(seconds * rate)) / rate
    wave = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.5 * np.cos(2 * np.pi * 440 * t)]).astype(np.float32)
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "stereo"
        frame = av.AudioFrame.from_ndarray(wave, format="fltp", layout="stereo")
        frame.rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)


@pytest.mark.parametrize("name, container, codec, rate", [("a.m4a", "mp4", "aac", 44100),
                                                          ("b.webm", "webm", "libopus", 48000),
                                                          ("c.opus.mp4", "mp4", "libopus", 48000)])
def test_pyav_decodes_what_libsndfile_cannot(tmp_path, name, container, codec, rate):
    path = tmp_path / name
    encode_with_pyav(path, container, codec, rate)
    import soundfile as sf

    with pytest.raises(sf.LibsndfileError):
        sf.read(str(path))
    wave, sample_rate = decode_audio(path)
    assert sample_rate == rate and wave.shape[0] == 2
    assert abs(wave.shape[1] - rate // 2) < 0.1 * rate and 0.3 < float(wave.abs().max()) < 0.9  # lossy: padded, ringing
    from_bytes, _ = decode_audio(path.read_bytes())
    assert from_bytes.shape == wave.shape


def test_make_shards_mixes_decoders_per_file(tmp_path):
    from tests.data_pipelines.conftest import write_audio

    encode_with_pyav(tmp_path / "a.m4a", "mp4", "aac", 44100)
    write_audio(tmp_path / "b.flac", 0.3, 16000)
    rows = [{"audio": str(tmp_path / n), "key": n.split(".")[0], "text": [n], "tags": [], "original_data": {}}
            for n in ("a.m4a", "b.flac")]
    assert make_shards(rows, tmp_path / "out")["written"] == 2
    meta = {key: read_meta(m) for key, m in iter_tar(tmp_path / "out" / "train-000000.tar")}
    assert meta["a"]["original_data"]["channels"] == 2 and meta["a"]["original_data"]["sample_rate"] == 44100


def test_missing_extra_is_named_in_one_line(tmp_path, monkeypatch):
    encode_with_pyav(tmp_path / "a.m4a", "mp4", "aac", 44100)
    real_find_spec = shards.importlib.util.find_spec
    monkeypatch.setattr(shards.importlib.util, "find_spec", lambda name: None if name == "av" else real_find_spec(name))
    monkeypatch.setattr(shards.shutil, "which", lambda name: None)
    with pytest.raises(ValueError, match=r"need the decode extra: pip install 'clap_train\[decode\]'") as error:
        decode_audio(io.BytesIO((tmp_path / "a.m4a").read_bytes()).getvalue())
    assert "\n" not in str(error.value)
    rows = [{"audio": str(tmp_path / "a.m4a"), "key": "a", "text": ["x"], "tags": [], "original_data": {}}]
    report = make_shards(rows, tmp_path / "out")
    assert report["written"] == 0 and "clap_train[decode]" in report["skipped"][0]["reason"]
