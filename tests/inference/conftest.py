"""Sources and a folder of audio files for the command-line tools' tests."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.finetune.conftest import demo_sources  # noqa: F401 (session fixture shared with the fine-tuning tests)

REPO = Path(__file__).resolve().parents[2]
# (relative path, sample rate, channels, seconds): wav / flac / ogg, mono and stereo, 22.05-48 kHz, short and long
FILES = [("a/tone.wav", 22050, 1, 1.5), ("a/stereo.flac", 44100, 2, 2.0), ("b/noise.ogg", 32000, 1, 1.0),
         ("b/long.wav", 48000, 2, 11.0), ("c.flac", 16000, 1, 0.5)]
CORRUPT = "b/broken.wav"


def write_clip(path: Path, rate: int, channels: int, seconds: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    wave = 0.3 * np.sin(2 * np.pi * (200 + 100 * seed) * t)[:, None] + 0.05 * rng.standard_normal((t.size, channels))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave.astype(np.float32), rate)


@pytest.fixture(scope="session")
def audio_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("audio")
    for seed, (name, rate, channels, seconds) in enumerate(FILES):
        write_clip(folder / name, rate, channels, seconds, seed)
    (folder / CORRUPT).write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    (folder / "notes.txt").write_text("not audio, not listed")
    return folder


def run_cli(module: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, check=False, env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
