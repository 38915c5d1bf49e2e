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


def compare(hf, ours, inputs, args, device) -> tuple[float, float]:
    """Best-of-`iters` seconds per batch (HF, ours), the two models alternating."""
    for _ in range(args.warmup):
        time_steps(hf_step, hf, inputs, 1, device)
        time_steps(own_step, ours, inputs, 1, device)
    hf_times, own_times = [], []
    for _ in range(args.iters):  # alternate so load changes on a shared machine hit both alike
        hf_times.append(time_steps(hf_step, hf, inputs, 1, device))
        own_times.append(time_steps(own_step, ours, inputs, 1, device))
    return min(hf_times), min(own_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fused", action="store_true", help="fused model, half the rows flagged longer")
    parser.add_argument("--caption-tokens", type=int, default=32, help="real tokens of the longest caption")
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
    # rows of 12 .. caption-tokens real tokens (</s> last), then <pad> = 1 up to 77
    lengths = torch.linspace(12, args.caption_tokens, args.batch).round().long()
    caption_mask = (torch.arange(77) < lengths[:, None]).long()
    captions = input_ids.masked_fill(caption_mask == 0, 1)
    captions[torch.arange(args.batch), lengths - 1] = 2
    batches = {f"captions <= {args.caption_tokens} tokens, padded to 77": (captions, caption_mask),
               "77 real tokens in every row (worst case)": (input_ids, torch.ones_like(input_ids))}

    print(f"device {device}, threads {torch.get_num_threads()}, batch {args.batch}, fused {args.fused}, "
          f"best of {args.iters} after {args.warmup} warm-up; ms/sample, forward + backward")
    print(f"{'text batch':<46} {'transformers':>12} {'clap_train':>11} {'speed-up':>9}")
    for name, (ids, mask) in batches.items():
        inputs = tuple(t.to(device) for t in (features, is_longer, ids, mask))
        hf_s, own_s = compare(hf, ours, inputs, args, device)
        print(f"{name:<46} {hf_s / args.batch * 1e3:>12.1f} {own_s / args.batch * 1e3:>11.1f} {hf_s / own_s:>8.2f}x")


if __name__ == "__main__":
    main()
