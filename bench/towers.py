"""Forward + backward time per sample: clap_train's HTSAT-tiny + RoBERTa-base vs transformers' ClapModel.

Both models have the same config (transformers' defaults = laion/clap-htsat-unfused) and the same
weights (converted with clap_train.checkpoints.hf), run in the same process on the same batch, in
training mode (HF's audio dropout and our drop-path are both 0 in that config), alternating.

    python bench/towers.py [--batch 4] [--iters 3] [--warmup 1] [--device cpu] [--fused]
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import ClapConfig, ClapModel

from clap_train.checkpoints.hf import build_from_hf_config, hf_to_clap_state_dict


def hf_step(model: ClapModel, features, is_longer, input_ids, mask) -> None:
    audio = model.get_audio_features(input_features=features, is_longer=is_longer[:, None]).pooler_output
    text = model.get_text_features(input_ids=input_ids, attention_mask=mask).pooler_output
    (audio @ text.T).sum().backward()


def own_step(model, features, is_longer, input_ids, mask) -> None:
    audio, text = model.encode_audio(features, is_longer), model.encode_text(input_ids, mask)
    (audio @ text.T).sum().backward()


def time_steps(step, model, inputs, iters: int, device: torch.device) -> float:
    """Mean seconds per call of `step` (gradients zeroed in between, not timed)."""
    total = 0.0
    for _ in range(iters):
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step(model, *inputs)
        if device.type == "cuda":
            torch.cuda.synchronize()
        total += time.perf_counter() - start
    return total / iters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fused", action="store_true", help="fused model, half the rows flagged longer")
    args = parser.parse_args()
    device = torch.device(args.device)

    torch.manual_seed(0)
    hf = ClapModel(ClapConfig(audio_config={"enable_fusion": args.fused})).to(device).train()
    ours = build_from_hf_config(hf.config.to_dict(), None)
    ours.load_state_dict(hf_to_clap_state_dict({k: v.cpu() for k, v in hf.state_dict().items()}))
    ours = ours.to(device).train()

    generator = torch.Generator().manual_seed(1)
    features = torch.randn(args.batch, 4 if args.fused else 1, 1001, 64, generator=generator) * 10 - 30
    is_longer = torch.arange(args.batch) % 2 == 0 if args.fused else torch.zeros(args.batch, dtype=torch.bool)
    input_ids = torch.randint(5, 50265, (args.batch, 77), generator=generator)
    input_ids[:, 0] = 0
    mask = torch.ones_like(input_ids)
    inputs = tuple(t.to(device) for t in (features, is_longer, input_ids, mask))

    for _ in range(args.warmup):
        time_steps(hf_step, hf, inputs, 1, device)
        time_steps(own_step, ours, inputs, 1, device)
    hf_times, own_times = [], []
    for _ in range(args.iters):  # alternate so load changes on a shared machine hit both alike
        hf_times.append(time_steps(hf_step, hf, inputs, 1, device))
        own_times.append(time_steps(own_step, ours, inputs, 1, device))
    hf_s, own_s = min(hf_times), min(own_times)
    print(f"device {device}, threads {torch.get_num_threads()}, batch {args.batch}, fused {args.fused}, "
          f"best of {args.iters} after {args.warmup} warm-up")
    print(f"transformers ClapModel: {hf_s / args.batch * 1e3:8.1f} ms/sample fwd+bwd (median "
          f"{sorted(hf_times)[len(hf_times) // 2] / args.batch * 1e3:.1f})")
    print(f"clap_train CLAPModel:   {own_s / args.batch * 1e3:8.1f} ms/sample fwd+bwd (median "
          f"{sorted(own_times)[len(own_times) // 2] / args.batch * 1e3:.1f})")
    print(f"speed-up (HF time / clap_train time): {hf_s / own_s:.2f}x")


if __name__ == "__main__":
    main()
