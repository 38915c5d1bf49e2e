"""Training-step throughput of a conf/model preset (default HTSAT-tiny + RoBERTa-base), with and without compile
and activation checkpointing.

    PYTHONPATH=. python bench/train_step.py          # CUDA if present (largest batch that fits, bf16), else CPU
    PYTHONPATH=. python bench/train_step.py --batch-size 2 --steps 2 --compile-backend aot_eager   # a quick CPU run
    PYTHONPATH=. python bench/train_step.py --preset htsat_base_roberta

Each variant builds a fresh model from conf/model/<preset>.yaml (through the checkpoint allow-list, as a stored
config would be), applies `parallelize(fsdp=False, ...)`, and times AdamW steps of `contrastive_step` with the
ClipLoss on random clips of the model's `clip_samples` and 77-token captions (after warm-up steps, which include
compilation); a fused model gets random 4-channel features instead (its front end runs in the data workers).
On CUDA, `--batch-size 0` (default) doubles the batch from 8 until it runs out of memory and keeps the last
that fit. MFU = model FLOPs (3 x forward, `train_flops_per_sample`) per second / the GPU's dense bf16 peak.
Prints one table row per variant. bench/gpu_check.py reuses these functions.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import time
from pathlib import Path

import torch
from torch import nn

from clap_train.checkpoints.build import build_model_from_config
from clap_train.distributed.parallelize import parallelize
from clap_train.losses.contrastive import ClipLoss
from clap_train.training.flops import peak_flops, train_flops_per_sample
from clap_train.training.step import contrastive_step

CONF = Path(__file__).resolve().parents[1] / "conf"
TEXT_LENGTH = 77


@functools.lru_cache
def preset_config(preset: str) -> dict:
    """The resolved `model` node of conf/train.yaml with `model=<preset>` (Hydra defaults lists included)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import clap_train.config_sets  # noqa: F401  (registers `open_sets`, which conf/train.yaml lists)

    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose("train", overrides=[f"model={preset}"])
    return OmegaConf.to_container(cfg.model, resolve=True)


def build_model(preset: str = "htsat_tiny_roberta") -> nn.Module:
    """A freshly initialised model of conf/model/<preset>.yaml, built through the allow-list."""
    return build_model_from_config(preset_config(preset), f"conf/model/{preset}.yaml")


def make_batch(model: nn.Module, batch_size: int, device: torch.device) -> dict:
    """Random training batch for `model`: waveforms of `model.clip_samples` (unfused) or 4-channel log-mel
    features with half the rows flagged longer (fused), and 77-token captions without padding."""
    text = model.text_encoder
    batch = {
        "input_ids": torch.randint(3, text.vocab_size, (batch_size, TEXT_LENGTH), device=device),
        "attention_mask": torch.ones(batch_size, TEXT_LENGTH, dtype=torch.int64, device=device),
    }
    if getattr(model.audio_encoder, "enable_fusion", False):
        frontend = model.frontend
        frames = frontend.num_frames(model.clip_samples)
        batch["features"] = torch.randn(batch_size, 4, frames, frontend.n_mels, device=device) * 10 - 30
        batch["is_longer"] = torch.arange(batch_size, device=device) % 2 == 0
    else:
        batch["waveform"] = torch.randn(batch_size, model.clip_samples, device=device) * 0.1
    return batch


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA (the `bf16-mixed` training precision), nothing (fp32) elsewhere."""
    if device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(model, optimizer, loss_fn, batch, steps: int, warmup: int, autocast) -> float:
    """Seconds per training step, averaged over `steps` after `warmup` untimed steps."""
    def step():
        with autocast():
            loss, _ = contrastive_step(model, loss_fn, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    device = batch["input_ids"].device
    for _ in range(warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - start) / steps


def flops_per_sample(model: nn.Module, device: torch.device) -> float:
    """`train_flops_per_sample` of `model` (unsharded, uncompiled) on a 2-row batch under the step's autocast."""
    with autocast_for(device)():
        return train_flops_per_sample(model, make_batch(model, 2, device))


def measure_training(model: nn.Module, batch_sizes, device: torch.device, steps: int, warmup: int) -> dict | None:
    """Time AdamW training steps of an already parallelised `model` at the first of `batch_sizes` (in order)
    that fits in memory; None if none fits. Returns batch, step_s, samples_per_sec and, on CUDA, memory_gib
    (peak allocated during the timed batch size)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    autocast = autocast_for(device)
    for batch_size in batch_sizes:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        try:
            seconds = time_steps(model, optimizer, ClipLoss(), make_batch(model, batch_size, device), steps, warmup,
                                 autocast)
        except torch.OutOfMemoryError:
            optimizer.zero_grad(set_to_none=True)
            continue
        result = {"batch": batch_size, "step_s": seconds, "samples_per_sec": batch_size / seconds}
        if device.type == "cuda":
            result["memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        return result
    return None


def halvings(batch_size: int) -> list[int]:
    """`batch_size`, then halved down to 1: the sizes to try when a fixed batch may not fit."""
    sizes = [batch_size]
    while sizes[-1] > 1:
        sizes.append(sizes[-1] // 2)
    return sizes


def run_variant(args, device, compile_backend, checkpointing: bool) -> dict | None:
    """The largest batch that fits (doubling from 8, a fresh model each) or the fixed `--batch-size`."""
    batch_sizes = [args.batch_size] if args.batch_size else [8 * 2**i for i in range(10)]
    best = None
    for batch_size in batch_sizes:
        torch.manual_seed(0)
        model = build_model(args.preset).to(device)
        flops = flops_per_sample(model, device) if device.type == "cuda" else None
        model = parallelize(model, None, fsdp=False, activation_checkpointing=checkpointing, compile=compile_backend)
        row = measure_training(model, [batch_size], device, args.steps, args.warmup)
        del model
        if row is None:
            break
        best = row
        if flops is not None:
            peak = peak_flops(torch.cuda.get_device_name(device))
            best["mfu"] = flops * best["samples_per_sec"] / peak if peak else None
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="htsat_tiny_roberta", help="a conf/model file name")
    parser.add_argument("--batch-size", type=int, default=None, help="fixed batch; 0 = search (CUDA default)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.batch_size is None:
        args.batch_size = 0 if device.type == "cuda" else 2
    if args.threads:
        torch.set_num_threads(args.threads)
    # each Swin stage has its own shapes and each batch size its own: keep every variant compiled
    torch._dynamo.config.cache_size_limit = 64
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    config = preset_config(args.preset)
    print(f"device: {name}; {args.preset}, {config['clip_samples']} samples at {config['frontend']['sample_rate']} "
          f"Hz, {TEXT_LENGTH} tokens; {'bf16 autocast' if device.type == 'cuda' else 'fp32'}")
    print(f"{'compile':<10} {'act. ckpt':<10} {'batch':>6} {'step s':>8} {'samples/s':>10} {'mem GiB':>8} {'MFU':>7}")
    for compile_backend in (False, args.compile_backend):
        for checkpointing in (False, True):
            row = run_variant(args, device, compile_backend, checkpointing)
            if row is None:
                print(f"{compile_backend or 'eager':<10} {checkpointing!s:<10} out of memory at the smallest batch")
                continue
            memory = f"{row['memory_gib']:.1f}" if "memory_gib" in row else "-"
            mfu = f"{row['mfu']:.1%}" if row.get("mfu") is not None else "-"
            print(f"{compile_backend or 'eager':<10} {checkpointing!s:<10} {row['batch']:>6} {row['step_s']:>8.3f} "
                  f"{row['samples_per_sec']:>10.2f} {memory:>8} {mfu:>7}", flush=True)


if __name__ == "__main__":
    main()
