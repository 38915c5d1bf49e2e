"""docs/quickstart.md, run as written: its ```bash commands in order, in a folder holding `my_audio/`."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[2]
SOURCES = {"a high sine tone": lambda t: np.sin(2 * np.pi * 1760 * t), "a low hum": lambda t: np.sin(2 * np.pi * 110 * t),
           "white noise": lambda t: np.random.default_rng(len(t)).standard_normal(len(t)) * 0.3,
           "a clicking sound": lambda t: (np.sin(2 * np.pi * 8 * t) > 0.99).astype(float)}


def write_folder(root: Path, split: str, num_clips: int) -> None:
    """Clips of 1-3 s at 22.05 kHz, some stereo, each with a .txt caption naming its source."""
    folder = root / "my_audio" / split
    folder.mkdir(parents=True)
    for index in range(num_clips):
        caption, make = list(SOURCES.items())[index % len(SOURCES)]
        t = np.arange(int(22050 * (1 + index % 3))) / 22050
        wave = 0.5 * make(t).astype(np.float32)
        sf.write(folder / f"clip_{index:03d}.wav", np.stack([wave, wave], 1) if index % 2 else wave, 22050)
        (folder / f"clip_{index:03d}.txt").write_text(f"{caption}, clip {index}\n")


def doc_commands() -> list[str]:
    text = (REPO / "docs" / "quickstart.md").read_text()
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)]


@pytest.mark.slow
def test_quickstart_runs_as_written(tmp_path):
    write_folder(tmp_path, "train", 32)
    write_folder(tmp_path, "val", 8)
    env = {**os.environ, "PYTHONPATH": str(REPO), "CLAP_RUNS_DIR": str(tmp_path / "runs"),
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}  # `python` is this interpreter
    commands = doc_commands()
    assert len(commands) == 4  # shards, tokenizer, first run, evaluation
    for block in commands:
        result = subprocess.run(["bash", "-euc", block], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=900, check=False)
        assert result.returncode == 0, (block, result.stdout[-2000:], result.stderr[-3000:])
    metrics = json.loads((tmp_path / "runs" / "first" / "checkpoints" / "eval" / "metrics.json").read_text())
    assert metrics["mine/num_clips"] == 8 and metrics["mine/skipped_samples"] == 0
    summary = json.loads((tmp_path / "runs" / "first" / "summary.json").read_text())
    assert summary["global_step"] == 60 and "val/mine/t2a_R@1" in summary["after"]
