"""HTML report structure (parsed with html.parser), media encoders, and a headless-Chromium screenshot."""

import base64
import io
import json
import shutil
import struct
import subprocess
import tempfile
import wave
import zlib
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clap_train.evaluation.media import encode_png, encode_wav, spectrogram_image
from clap_train.evaluation.report import sample_text_queries, write_report
from clap_train.evaluation.retrieval import retrieval_metrics
from clap_train.evaluation.zeroshot import confusion_matrix

SAMPLE_RATE = 8000


class Elements(HTMLParser):
    """Collects (tag, attrs) of every start tag and the text inside each element with a class."""

    def __init__(self):
        super().__init__()
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def find(self, tag, css=None):
        return [a for t, a in self.tags if t == tag and (css is None or css in a.get("class", "").split())]


def decode_png_header(data: bytes):
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, depth, color_type = struct.unpack(">IIBB", data[16:26])
    return width, height, depth, color_type


def make_report(tmp_path, with_audio=True):
    gen = torch.Generator().manual_seed(0)
    audio = F.normalize(torch.randn(10, 8, generator=gen), dim=-1)
    text_to_audio = torch.arange(10).repeat_interleave(2)
    text = F.normalize(audio[text_to_audio] + 0.7 * torch.randn(20, 8, generator=gen), dim=-1)
    keys = [f"clip/{i}" for i in range(10)]
    captions = [f"caption {j} <of> clip {i}" for i in range(10) for j in range(2)]
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    waveforms = {k: 0.5 * np.sin(2 * np.pi * 300 * (i + 1) * t) for i, k in enumerate(keys)}
    metrics = {f"clotho/{k}": v for k, v in retrieval_metrics(audio, text, text_to_audio).items()}
    metrics["esc50/top1_acc"] = 0.25
    queries = sample_text_queries(audio, text, text_to_audio, keys, captions, num_queries=4, top_k=5)
    confusion = confusion_matrix(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 0, 1, 2]), 3)
    path = write_report(
        tmp_path,
        metrics,
        queries=queries,
        clip_audio=waveforms if with_audio else None,
        sample_rate=SAMPLE_RATE,
        confusions={"esc50": (confusion, ["dog", "cat", "rain & wind"])},
    )
    return path, metrics, queries


def test_report_structure(tmp_path):
    path, metrics, queries = make_report(tmp_path)
    page = Elements()
    page.feed(path.read_text())
    assert json.loads((tmp_path / "metrics.json").read_text()) == pytest.approx(metrics)
    assert len(page.find("table", "metrics")) == 2  # clotho and esc50
    assert len(page.find("div", "query")) == 4
    hits = page.find("div", "hit")
    assert len(hits) == 4 * 5
    assert len(page.find("div", "correct")) == sum(any(h.correct for h in q.retrieved) for q in queries)
    audios = page.find("audio")
    assert len(audios) == 20
    for player in audios:
        with wave.open(str(tmp_path / player["src"])) as clip:
            assert clip.getframerate() == SAMPLE_RATE and clip.getnframes() == SAMPLE_RATE
    images = page.find("img")
    assert len(images) == 20
    for image in images:
        prefix = "data:image/png;base64,"
        assert image["src"].startswith(prefix)
        width, height, _, _ = decode_png_header(base64.b64decode(image["src"][len(prefix) :]))
        assert height == 96 and width > 10
    confusion = page.find("table", "confusion")
    assert len(confusion) == 1
    assert len(page.find("td", "diag")) == 3
    # captions are escaped: the literal text survives as data, not as a tag
    assert not page.find("of") and "caption 0 &lt;of&gt;" in path.read_text()


def test_report_without_audio_or_queries(tmp_path):
    path, _, _ = make_report(tmp_path, with_audio=False)
    page = Elements()
    page.feed(path.read_text())
    assert not page.find("audio") and not page.find("img") and len(page.find("div", "hit")) == 20
    bare = write_report(tmp_path / "bare", {"t2a_R@1": 0.5})
    page = Elements()
    page.feed(bare.read_text())
    assert len(page.find("table")) == 1 and not page.find("div", "query")
    with pytest.raises(ValueError, match="class names"):
        write_report(tmp_path / "bad", {}, confusions={"x": (np.eye(2), ["a", "b", "c"])})


def test_png_roundtrip():
    image = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    data = encode_png(image)
    assert decode_png_header(data) == (7, 5, 8, 2)
    idat_length = struct.unpack(">I", data[33:37])[0]
    assert data[37:41] == b"IDAT"
    raw = np.frombuffer(zlib.decompress(data[41 : 41 + idat_length]), dtype=np.uint8).reshape(5, 1 + 7 * 3)
    assert (raw[:, 0] == 0).all() and np.array_equal(raw[:, 1:].reshape(5, 7, 3), image)
    assert zlib.crc32(data[37 : 41 + idat_length]) == struct.unpack(">I", data[41 + idat_length : 45 + idat_length])[0]
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((2, 2), dtype=np.float32))


def test_wav_roundtrip():
    waveform = np.array([0.0, 0.5, -1.0, 2.0])
    with wave.open(io.BytesIO(encode_wav(waveform, 16000))) as clip:
        assert clip.getnchannels() == 1 and clip.getsampwidth() == 2 and clip.getframerate() == 16000
        pcm = np.frombuffer(clip.readframes(4), dtype="<i2")
    assert pcm.tolist() == [0, 16384, -32767, 32767]  # 2.0 is clipped


def test_spectrogram_puts_a_tone_at_its_frequency_row():
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    low = spectrogram_image(np.sin(2 * np.pi * 200 * t), SAMPLE_RATE).astype(int).sum(axis=(1, 2))
    high = spectrogram_image(np.sin(2 * np.pi * 3000 * t), SAMPLE_RATE).astype(int).sum(axis=(1, 2))
    assert np.argmax(high) < np.argmax(low)  # high frequencies are drawn nearer the top
    wide = spectrogram_image(np.zeros(SAMPLE_RATE * 30), SAMPLE_RATE, max_width=100)
    assert wide.shape[0] == 96 and wide.shape[1] <= 100 and wide.dtype == np.uint8


def _screenshot(html_path, png_path):
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                shutil.which("chromium"),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={profile}",
                f"--screenshot={png_path}",
                "--window-size=1200,1600",
                html_path.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    return png_path.read_bytes()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_chromium_renders_report(tmp_path):
    path, _, _ = make_report(tmp_path / "report")
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    shot = _screenshot(path, tmp_path / "report.png")
    blank_shot = _screenshot(blank, tmp_path / "blank.png")
    assert decode_png_header(shot)[:2] == (1200, 1600)
    # spectrograms, tables and highlights make the page far less compressible than a blank one
    assert len(shot) > 5 * len(blank_shot)
