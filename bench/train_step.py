"""Training-step throughput of HTSAT-tiny + RoBERTa-base CLAP, with and without compile and activation checkpointing.

    python bench/train_step.py                      # CUDA if present (largest batch that fits, bf16), else CPU
    python bench/train_step.py --batch-size 2 --steps 2 --compile-backend aot_eager   # a quick CPU run

Each variant builds a fresh model, applies `parallelize(fsdp=False, ...)`, and times AdamW steps of the
ClipLoss on random 10 s 48 kHz clips and 77-token captions (after warm-up steps, which include compilation).
On CUDA, `--batch-size 0` (default) doubles the batch from 8 until it runs out of memory and keeps the last
that fit. MFU = model FLOPs (3 x forward, `train_flops_per_sample`) per second / the GPU's dense bf16 peak.
Prints one table row per variant.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from clap_train.distributed.parallelize import parallelize
from clap_train.losses.contrastive import ClipLoss
from clap_train.models.audio.htsat import HTSATEncoder
from clap_train.models.clap import CLAPModel
from clap_train.models.text.roberta import RobertaEncoder
from clap_train.signal.frontend import LogMelFrontend
from clap_train.training.callbacks import peak_flops, train_flops_per_sample

SAMPLE_RATE, CLIP_SECONDS, TEXT_LENGTH = 48000, 10, 77


def build_model() -> CLAPModel:
    audio = HTSATEncoder(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(4, 8, 16, 32), num_mel_bins=64)
    return CLAPModel(audio, RobertaEncoder(), LogMelFrontend(sample_rate=SAMPLE_RATE), embed_dim=512)


def make_batch(batch_size: int, device: torch.device) -> dict:
    mask = torch.ones(batch_size, TEXT_LENGTH, dtype=torch.int64, device=device)
    return {
        "waveform": torch.randn(batch_size, SAMPLE_RATE * CLIP_SECONDS, device=device) * 0.1,
        "input_ids": torch.randint(3, 50265, (batch_size, TEXT_LENGTH), device=device),
        "attention_mask": mask,
    }


def time_steps(model, optimizer, loss_fn, batch, steps: int, warmup: int, autocast) -> float:
    """Seconds per training step, averaged over `steps` after `warmup` untimed steps."""
    def step():
        with autocast():
            embeds = model(batch)
            loss = loss_fn(embeds["audio_embeds"], embeds["text_embeds"], model.logit_scale_a, model.logit_scale_t)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    sync = torch.cuda.synchronize if batch["waveform"].is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return (time.perf_counter() - start) / steps


def run_variant(args, device, compile_backend, checkpointing: bool) -> dict:
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" else contextlib.nullcontext
    batch_sizes = [args.batch_size] if args.batch_size else [8 * 2**i for i in range(10)]
    best = None
    for batch_size in batch_sizes:
        torch.manual_seed(0)
        model = parallelize(build_model().to(device), None, fsdp=False, activation_checkpointing=checkpointing,
                            compile=compile_backend)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        batch = make_batch(batch_size, device)
        try:
            seconds = time_steps(model, optimizer, ClipLoss(), batch, args.steps, args.warmup, autocast)
        except torch.OutOfMemoryError:
            break
        finally:
            del optimizer
        best = {"batch": batch_size, "samples_per_sec": batch_size / seconds, "step_s": seconds}
        if device.type == "cuda":
            best["memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            peak = peak_flops(torch.cuda.get_device_name(device))
            flops = train_flops_per_sample(build_model().to(device), make_batch(2, device))
            best["mfu"] = flops * best["samples_per_sec"] / peak if peak else None
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    print(f"device: {name}; HTSAT-tiny + RoBERTa-base, {CLIP_SECONDS} s clips at {SAMPLE_RATE} Hz, "
          f"{TEXT_LENGTH} tokens; {'bf16 autocast' if device.type == 'cuda' else 'fp32'}")
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
