"""The new tower presets through the real entry point on the shrunk demo: recall after training beats before."""

import pytest

from tests._demo_run import recall_sum, run_demo


@pytest.mark.slow
@pytest.mark.parametrize(("run_name", "overrides"), [
    ("xlmr", ["model=debug_xlmr", "data.prepare.vocab_size=1000"]),
    ("whisper", ["model=whisper_debug"]),
    ("modernbert", ["model=debug_modernbert"]),
])
def test_preset_trains_through_the_entry_point(tmp_path, run_name, overrides):
    summary = run_demo(tmp_path, run_name, *overrides)
    assert recall_sum(summary["after"]) > recall_sum(summary["before"]) + 0.3, summary
