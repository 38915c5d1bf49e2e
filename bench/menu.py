"""Per-step cost of the model-menu options relative to the default, measured in the same run (CPU).

    python bench/menu.py                       # losses on the debug model + debug and real-size towers
    python bench/menu.py --skip-real --steps 3 # quick: without the real-size presets

Each row times full training steps (forward, loss, backward, AdamW step) after warm-up steps, on random
clips and 77-token captions built for the preset's own front end, and prints the median seconds per step
and the ratio to the reference row of its table. The rows of the loss and debug tables are interleaved
step by step (a shared machine's load changes hit every row alike); the real-size presets run one after
the other (one in memory at a time) (the default loss, or the default preset of that size):
- losses alone: each loss's forward + backward on random (--embed-batch, 512) embeddings;
- losses: conf/model/debug.yaml at batch --loss-batch with ClipLoss (reference), HN-NCE, multi-positive
  (half the captions repeated), SigLIP, and distillation from a second debug model (its forward added);
- towers: the presets built from their YAML (Hydra compose), batch --tower-batch.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import clap_train.config_sets  # noqa: F401  (registers `open_sets`, which conf/train.yaml lists)
from clap_train.losses.contrastive import ClipLoss
from clap_train.losses.distill import DistillationLoss
from clap_train.losses.multipos import MultiPositiveLoss
from clap_train.losses.siglip import SigLipLoss
from clap_train.training.distill import Teacher
from clap_train.training.step import contrastive_step

CONF = str(Path(__file__).resolve().parents[1] / "conf")
TEXT_LENGTH = 77


def build(preset: str) -> torch.nn.Module:
    with initialize_config_dir(config_dir=CONF, version_base=None):
        return instantiate(compose("train", overrides=[f"model={preset}"]).model)


def make_batch(model, batch_size: int, repeat_captions: bool = False) -> dict:
    generator = torch.Generator().manual_seed(0)
    vocab = model.text_encoder.vocab_size
    lengths = torch.randint(8, 30, (batch_size,), generator=generator)  # training-length captions
    mask = (torch.arange(TEXT_LENGTH)[None, :] < lengths[:, None]).long()
    input_ids = torch.randint(5, vocab, (batch_size, TEXT_LENGTH), generator=generator).masked_fill(mask == 0, 1)
    captions = [f"caption {i // 2 if repeat_captions else i}" for i in range(batch_size)]
    return {"waveform": 0.1 * torch.randn(batch_size, model.clip_samples, generator=generator),
            "input_ids": input_ids, "attention_mask": mask, "key": [f"clip{i}" for i in range(batch_size)],
            "captions": captions, "text_to_audio": torch.arange(batch_size)}


def make_step(model, loss_fn, batch):
    """A closure running one training step (forward, loss, backward, AdamW step)."""
    params = [p for module in (model, loss_fn) for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    model.train()

    def step():
        loss, _ = contrastive_step(model, loss_fn, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def loss_only_steps(losses: dict, batch_size: int) -> dict:
    """Closures computing each loss and its gradient on fixed random unit-norm embeddings; the teacher's
    forward is left out (its embeddings are given), so the row is the KL term's own cost."""
    generator = torch.Generator().manual_seed(0)
    audio, text, teacher_audio, teacher_text = (
        torch.nn.functional.normalize(torch.randn(batch_size, 512, generator=generator), dim=1) for _ in range(4))
    scale = torch.full((1,), 2.659, requires_grad=True)
    ids = torch.stack([torch.arange(batch_size), torch.arange(batch_size) // 2], dim=1)  # captions in pairs
    steps = {}
    for name, make_loss in losses.items():
        loss_fn = make_loss()
        kwargs = {}
        if getattr(loss_fn, "uses_pair_ids", False):
            kwargs["pair_ids"] = ids
        if getattr(loss_fn, "uses_teacher", False):
            kwargs.update(teacher_audio=teacher_audio, teacher_text=teacher_text,
                          teacher_logit_scale=torch.tensor(14.3))

        def step(loss_fn=loss_fn, kwargs=kwargs):
            a, t = audio.clone().requires_grad_(), text.clone().requires_grad_()
            loss_fn(a, t, scale, scale, **kwargs).backward()

        steps[name] = step
    return steps


def median_seconds(steps: dict[str, callable], rounds: int, warmup: int) -> list[tuple[str, float]]:
    """Median seconds per step of each closure, the closures interleaved round by round so that load
    changes on a shared machine hit every row alike."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return [(name, statistics.median(values)) for name, values in times.items()]


def print_table(title: str, rows: list[tuple[str, float]]) -> None:
    print(f"\n{title}\n  {'option':<34} {'s/step':>8} {'ratio':>6}")
    reference = rows[0][1]
    for name, seconds in rows:
        print(f"  {name:<34} {seconds:>8.3f} {seconds / reference:>6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=7, help="timed steps (rounds) per row")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--loss-batch", type=int, default=64)
    parser.add_argument("--tower-batch", type=int, default=2)
    parser.add_argument("--embed-batch", type=int, default=1024, help="rows of the loss-only table")
    parser.add_argument("--skip-real", action="store_true", help="only the debug-size towers")
    parser.add_argument("--only-losses", action="store_true", help="only the loss-only table")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"CPU, {torch.get_num_threads()} threads, {args.steps} timed steps after {args.warmup} warm-up")

    losses = {
        "loss=clip (default)": lambda: ClipLoss(),
        "loss.hard_negative_beta=0.5": lambda: ClipLoss(hard_negative_beta=0.5),
        "loss=multipos": lambda: MultiPositiveLoss(),
        "loss=siglip": lambda: SigLipLoss(),
        "+distill.teacher=<debug model>": lambda: DistillationLoss(
            ClipLoss(), 1.0, Teacher(build("debug"), sample_rate=16000)),
    }
    print_table(f"losses alone: forward + backward on ({args.embed_batch}, 512) embeddings",
                median_seconds(loss_only_steps(losses, args.embed_batch), 3 * args.steps, args.warmup))
    if args.only_losses:
        return
    steps = {}
    for name, make_loss in losses.items():
        model = build("debug")
        batch = make_batch(model, args.loss_batch, repeat_captions=name == "loss=multipos")
        steps[name] = make_step(model, make_loss(), batch)
    print_table(f"losses (model=debug, batch {args.loss_batch})", median_seconds(steps, args.steps, args.warmup))

    debug = {f"model={preset}": make_step(model, ClipLoss(), make_batch(model, args.tower_batch))
             for preset in ("debug", "debug_xlmr", "whisper_debug", "debug_modernbert") for model in [build(preset)]}
    print_table(f"towers, debug size (batch {args.tower_batch})", median_seconds(debug, args.steps, args.warmup))
    if args.skip_real:
        return
    rows = []  # one real-size model in memory at a time
    for preset in ("htsat_tiny_roberta", "htsat_tiny_xlmr", "whisper_base_roberta", "htsat_tiny_modernbert"):
        model = build(preset)
        step = make_step(model, ClipLoss(), make_batch(model, args.tower_batch))
        rows += median_seconds({f"model={preset}": step}, args.steps, args.warmup)
        del model, step
    print_table(f"towers, real size (batch {args.tower_batch})", rows)


if __name__ == "__main__":
    main()
