"""The parts of bench/gpu_check.py, run in its worker process: each returns a dict of figures.

Protocol on stdout (read by gpu_check.run_parts): `@@info {json}` once, then per part `@@start KIND:PRESET`
and `@@result {json}`. After a failed part the worker exits, so the next part gets a fresh process (a CUDA
error or a half-built process group cannot leak into it).
"""

from __future__ import annotations

import copy
import json
import os
import socket
import sys
import time
import traceback

import numpy as np
import torch
from data import crop_and_log_mel, interleaved_rates, make_clips  # bench/data.py
from gpu_check import PEAK_ENV
from train_step import autocast_for, build_model, flops_per_sample, halvings, measure_training  # bench/train_step.py

from clap_train.distributed.parallelize import parallelize
from clap_train.inference import embed_audio
from clap_train.training.flops import peak_flops


def device_info(device: torch.device) -> dict:
    """Device name, the bf16 peak (GPU_CHECK_PEAK_TFLOPS, else the table on CUDA, else None), versions."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    override = os.environ.get(PEAK_ENV)
    if override:
        peak, source = float(override), PEAK_ENV
    else:
        flops = peak_flops(name) if device.type == "cuda" else None
        peak, source = (flops / 1e12 if flops else None), "PEAK_FLOPS table"
    return {"device": name, "peak_tflops": peak, "peak_source": source, "torch": torch.__version__,
            "cuda": torch.version.cuda if device.type == "cuda" else None, "cpu_threads": torch.get_num_threads()}


def with_mfu(row: dict, flops: float, info: dict) -> dict:
    peak = info["peak_tflops"]
    row["flops_per_sample"] = flops
    row["mfu"] = flops * row["samples_per_sec"] / (peak * 1e12) if peak else None
    return row


def fresh_model(preset: str, device: torch.device):
    torch.manual_seed(0)
    return build_model(preset).to(device)


def release(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def train_part(preset: str, settings: dict, device: torch.device, info: dict) -> dict:
    """(a) the training step of `preset` on one device, no wrapping."""
    model = fresh_model(preset, device)
    flops = flops_per_sample(model, device)
    row = measure_training(parallelize(model, None, fsdp=False), halvings(settings["batch_size"]), device,
                           settings["steps"], settings["warmup"])
    if row is None:
        raise RuntimeError("out of memory at batch 1")
    row["precision"] = "bf16 autocast" if device.type == "cuda" else "fp32"
    return with_mfu(row, flops, info)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fsdp_part(preset: str, settings: dict, device: torch.device, info: dict) -> dict:
    """(b) the training step after FSDP2 per block / tower / root on a one-rank mesh (nccl, gloo on CPU)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    backend = "nccl" if device.type == "cuda" else "gloo"
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0", "WORLD_SIZE": "1"})
    dist.init_process_group(backend, rank=0, world_size=1)
    try:
        mesh = init_device_mesh(device.type, (1,))
        model = fresh_model(preset, device)
        flops = flops_per_sample(model, device)
        row = measure_training(parallelize(model, mesh, fsdp=True), halvings(settings["batch_size"]), device,
                               settings["steps"], settings["warmup"])
    finally:
        dist.destroy_process_group()
    if row is None:
        raise RuntimeError("out of memory at batch 1")
    row["backend"] = backend
    return with_mfu(row, flops, info)


def compile_part(preset: str, settings: dict, device: torch.device, info: dict) -> dict:
    """(c) eager, then every tower block compiled, at the batch the eager step fits; same process."""
    torch._dynamo.config.cache_size_limit = 64  # each Swin stage and batch size has its own shapes
    steps, warmup = settings["steps"], settings["warmup"]
    eager = measure_training(parallelize(fresh_model(preset, device), None, fsdp=False),
                             halvings(settings["batch_size"]), device, steps, warmup)
    if eager is None:
        raise RuntimeError("eager: out of memory at batch 1")
    release(device)
    backend = settings["compile_backend"]
    model = fresh_model(preset, device)
    flops = flops_per_sample(model, device)
    model = parallelize(model, None, fsdp=False, compile=backend)
    start = time.perf_counter()
    row = measure_training(model, [eager["batch"]], device, steps, max(warmup, 1))  # compilation in warm-up
    if row is None:
        raise RuntimeError(f"compiled: out of memory at batch {eager['batch']}")
    row.update(backend=backend, eager_samples_per_sec=eager["samples_per_sec"],
               ratio=row["samples_per_sec"] / eager["samples_per_sec"],
               warmup_s=time.perf_counter() - start - steps * row["step_s"])
    return with_mfu(row, flops, info)


def frontend_part(preset: str, settings: dict, device: torch.device, info: dict) -> dict:
    """(d) crop on the CPU + batched log-mel with the preset's front end, on the device vs on the CPU,
    the two interleaved (bench/data.py's `crop_and_log_mel`, `interleaved_rates`)."""
    model = build_model(preset)
    cpu_frontend, clip_samples = model.frontend, model.clip_samples
    device_frontend = copy.deepcopy(cpu_frontend).to(device)
    seconds = 1.2 * clip_samples / cpu_frontend.sample_rate  # longer than the window: rand_trunc crops
    clips = make_clips(settings["clips"], seconds, cpu_frontend.sample_rate)
    batch, rng = min(32, settings["clips"]), np.random.default_rng(0)
    rates = interleaved_rates({
        "device": (lambda: crop_and_log_mel(clips, device_frontend, clip_samples, batch, rng), len(clips)),
        "cpu": (lambda: crop_and_log_mel(clips, cpu_frontend, clip_samples, batch, rng), len(clips)),
    }, rounds=3)
    return {"device": device.type, "device_clips_per_sec": rates["device"], "cpu_clips_per_sec": rates["cpu"],
            "ratio": rates["device"] / rates["cpu"], "cpu_threads": torch.get_num_threads(), "batch": batch,
            "seconds": round(seconds, 2)}


def embed_part(preset: str, settings: dict, device: torch.device, info: dict) -> dict:
    """(e) `embed_audio` on lists of raw clips longer than the window (head crop, log-mel, audio tower)."""
    model = fresh_model(preset, device).eval()
    rate = model.frontend.sample_rate
    seconds = 1.2 * model.clip_samples / rate
    clips = make_clips(settings["clips"], seconds, rate)
    batch = min(settings["batch_size"], len(clips))
    autocast = autocast_for(device)

    def embed_all():
        with autocast():
            for i in range(0, len(clips), batch):
                embed_audio(model, clips[i:i + batch], rate)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    rate_per_sec = interleaved_rates({"embed": (embed_all, len(clips))}, rounds=2)["embed"]
    return {"device": device.type, "clips_per_sec": rate_per_sec, "batch": batch, "seconds": round(seconds, 2),
            "precision": "bf16 autocast" if device.type == "cuda" else "fp32"}


PARTS = {"train": train_part, "fsdp": fsdp_part, "compile": compile_part, "frontend": frontend_part,
         "embed": embed_part}


def emit(tag: str, payload) -> None:
    print(f"@@{tag} {payload if isinstance(payload, str) else json.dumps(payload)}", flush=True)


def one_line(exc: BaseException) -> str:
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}"[:300] if message else type(exc).__name__


def worker_main(settings: dict, parts: list[str]) -> int:
    """Run `parts` ("KIND:PRESET") in order; stop at the first failure (exit code 3)."""
    device = torch.device("cpu" if settings["cpu_smoke"] else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        info = {**device_info(torch.device("cpu")), "device": "none (no CUDA device)"}
        emit("info", info)
        reason = f"torch.cuda.is_available() is False (torch {torch.__version__}, CUDA {torch.version.cuda})"
        for part in parts:
            kind, preset = part.split(":", 1)
            emit("result", {"kind": kind, "preset": preset, "error": reason})
        return 0
    if device.type == "cuda":
        torch.cuda.set_device(0)
    info = device_info(device)
    emit("info", info)
    for part in parts:
        kind, preset = part.split(":", 1)
        emit("start", part)
        print(f"--- {part} ---", flush=True)
        start = time.perf_counter()
        try:
            result = PARTS[kind](preset, settings, device, info)
        except Exception as exc:  # noqa: BLE001 - every failure becomes the part's one-line reason
            traceback.print_exc()
            emit("result", {"kind": kind, "preset": preset, "error": one_line(exc)})
            return 3
        finally:
            release(device)
        print(f"--- {part}: {time.perf_counter() - start:.1f} s ---", flush=True)
        emit("result", {"kind": kind, "preset": preset, **result, "part_s": time.perf_counter() - start})
    return 0


if __name__ == "__main__":
    sys.exit("run bench/gpu_check.py (or bench/gpu_check.sh), which starts this worker")
