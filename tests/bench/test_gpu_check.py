"""bench/gpu_check.sh in its CPU smoke mode: every part runs through the real wrapper and worker processes, the
summary has every line, a part past its timeout is reported FAILED while the others still run, bad flags get
one line. Figures are not asserted (no timed asserts); MFU is n/a on the CPU unless a peak is given."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu_check.sh"
LABELS = ("(a) train step", "(b) FSDP2 step", "(c) compile", "(d) log-mel", "(e) embed_audio")


def run_check(tmp_path: Path, *flags: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GPU_CHECK_")}
    environment.update(OUT=str(tmp_path), PYTHON=sys.executable, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **env)
    return subprocess.run(["bash", str(SCRIPT), *flags], cwd=tmp_path, env=environment, capture_output=True,
                          text=True, timeout=600, check=False)


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_cpu_smoke_runs_every_part_and_writes_the_summary(tmp_path):
    result = run_check(tmp_path, "--cpu-smoke")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = (tmp_path / "gpu_check.txt").read_text()
    lines = summary.splitlines()
    assert lines[0].startswith("gpu_check (cpu smoke)") and lines[1].startswith("device: cpu; no known bf16 peak")
    for label in LABELS:
        assert [line for line in lines if line.startswith(label)], f"no {label} line in:\n{summary}"
    assert "FAILED" not in summary
    train = [line for line in lines if line.startswith("(a)")]
    assert len(train) == 2 and "debug " in train[0] and "htsat_debug" in train[1]  # both smoke presets
    assert all("MFU n/a" in line for line in train)
    assert summary in result.stdout  # printed as well as written
    figures = json.loads((tmp_path / "gpu_check.json").read_text())
    by_kind = {r["kind"]: r for r in figures["results"]}
    assert sorted(by_kind) == sorted(["train", "fsdp", "compile", "frontend", "embed"])
    assert by_kind["train"]["samples_per_sec"] > 0 and by_kind["train"]["flops_per_sample"] > 0
    assert by_kind["fsdp"]["backend"] == "gloo" and by_kind["compile"]["ratio"] > 0
    assert by_kind["frontend"]["device_clips_per_sec"] > 0 and by_kind["embed"]["clips_per_sec"] > 0


@pytest.mark.slow
def test_a_part_past_its_timeout_fails_alone_and_a_given_peak_gives_an_mfu(tmp_path):
    result = run_check(tmp_path, "--cpu-smoke", "--presets", "debug", "--parts", "train,fsdp,frontend",
                       "--timeouts", "fsdp=0.01", GPU_CHECK_PEAK_TFLOPS="0.001")
    assert result.returncode == 1, result.stdout + result.stderr
    lines = (tmp_path / "gpu_check.txt").read_text().splitlines()
    assert "bf16 peak 0.001 TFLOP/s (GPU_CHECK_PEAK_TFLOPS)" in lines[1]
    train, fsdp, frontend = (next(line for line in lines if line.startswith(label)) for label in
                             ("(a)", "(b)", "(d)"))
    assert "MFU " in train and "MFU n/a" not in train and "FAILED" not in train
    assert "FAILED timeout after 0.01 s" in fsdp
    assert "FAILED" not in frontend and "clips/s" in frontend  # ran in a fresh worker after the kill
    assert "--- last lines of" in result.stdout  # the wrapper tails the workers' log on failure


def test_bad_flags_and_peak_get_one_line(tmp_path, monkeypatch, capsys):
    gpu_check = load_gpu_check()
    for argv, needle in ((["--cpu-smoke", "--presets", "nope"], "--presets: unknown preset 'nope'"),
                         (["--parts", "train,speed"], "--parts: unknown part 'speed'"),
                         (["--timeouts", "compile=soon"], "--timeouts: 'compile=soon' is not PART=SECONDS"),
                         (["--steps", "0"], "--steps must be >= 1")):
        with pytest.raises(SystemExit) as exit_info:
            gpu_check.parse_args(argv)
        assert exit_info.value.code == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and needle in error
    monkeypatch.setenv("GPU_CHECK_PEAK_TFLOPS", "fast")
    with pytest.raises(SystemExit):
        gpu_check.parse_args([])
    assert "GPU_CHECK_PEAK_TFLOPS='fast'" in capsys.readouterr().err


def test_defaults_plan_and_output_path(tmp_path, monkeypatch):
    gpu_check = load_gpu_check()
    monkeypatch.delenv("GPU_CHECK_CPU_SMOKE", raising=False)
    monkeypatch.setenv("OUT", str(tmp_path))
    args = gpu_check.parse_args([])
    assert args.out == tmp_path / "gpu_check.txt" and args.presets[0] == "htsat_tiny_roberta"
    assert args.budget_s <= 7.5 * 60  # the deadline covers worker start-ups too: the brief's 8 minutes hold
    # (a) of the first preset, then (b)-(e), then (a) of the other presets: the budget runs out on those first
    assert gpu_check.plan(args)[:5] == [(kind, "htsat_tiny_roberta") for kind in gpu_check.KINDS]
    assert {preset for kind, preset in gpu_check.plan(args)[5:]} == set(args.presets[1:])
    monkeypatch.delenv("OUT")
    assert gpu_check.parse_args(["--cpu-smoke"]).out == Path("runs/gpu_check.txt")
    monkeypatch.setenv("GPU_CHECK_CPU_SMOKE", "1")
    assert gpu_check.parse_args([]).presets == ["debug", "htsat_debug"]


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU machine would run the full check")
def test_without_nvidia_smi_the_wrapper_says_so_in_one_line(tmp_path):
    result = run_check(tmp_path)
    assert result.returncode == 2
    assert result.stdout.strip().splitlines() == [
        "gpu_check: nvidia-smi not found: no NVIDIA GPU here (bash bench/gpu_check.sh --cpu-smoke runs on the CPU)"]
