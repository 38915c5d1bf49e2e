"""`trainer.precision=bf16-true` through the real entry point: the whole model is cast to bf16, the front
end stays float32 (FFTs do not run in bf16) and the int16 waveform batch reaches it unrounded."""

import json

import pytest

from tests.ops._entry import run_entry

pytestmark = pytest.mark.slow


def test_bf16_true_trains_and_validates(tmp_path):
    result = run_entry(tmp_path, "trainer.precision=bf16-true", "trainer.max_steps=2", "run_name=bf16",
                       "+data.int16=true")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / "bf16" / "summary.json").read_text())
    assert summary["global_step"] == 2 and 0.0 <= summary["after"]["val/synthetic/t2a_R@10"] <= 1.0
