"""One-call GPU check: training step speed and MFU, FSDP2, compile, log-mel front end and embedding throughput.

    bash bench/gpu_check.sh                # on a GPU machine: < 8 min on one H200, summary in $OUT or runs/
    bash bench/gpu_check.sh --cpu-smoke    # the same parts on the CPU at debug size (tests/bench/test_gpu_check.py)

Parts (each prints one summary line, or FAILED with a one-line reason while the others still run):
  (a) train     bf16-autocast AdamW steps of `contrastive_step` per preset: samples/s, MFU, peak memory
  (b) fsdp      the same step after `parallelize(fsdp=True)` on a one-rank process group (nccl; gloo on CPU)
  (c) compile   the step with every tower block compiled vs eager, measured in the same process
  (d) frontend  batched log-mel (crop on the CPU, `LogMelFrontend`) clips/s on the device vs on the CPU
  (e) embed     `clap_train.inference.embed_audio` clips/s on the device
The code paths are bench/train_step.py's and bench/data.py's (bench/gpu_check_parts.py calls them). Parts run
in a worker process, one after another; a part that fails ends its worker and one that passes its timeout is
killed with it, and a fresh worker takes the remaining parts. Per-part timeouts are capped by an overall budget. MFU = model FLOPs per sample
(`train_flops_per_sample`: 3 x the forward counted by FlopCounterMode) x samples/s / the dense bf16 peak, from
`clap_train.training.flops.PEAK_FLOPS` by `torch.cuda.get_device_name()` or GPU_CHECK_PEAK_TFLOPS; n/a
without a peak. The summary also goes to --out (default $OUT/gpu_check.txt when OUT is set, else
runs/gpu_check.txt), with gpu_check.json (the figures) and gpu_check.log (the workers' output) beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

KINDS = ("train", "fsdp", "compile", "frontend", "embed")
LABELS = {"train": "(a) train step", "fsdp": "(b) FSDP2 step", "compile": "(c) compile", "frontend": "(d) log-mel",
          "embed": "(e) embed_audio"}
TIMEOUTS = {"train": 90, "fsdp": 75, "compile": 180, "frontend": 45, "embed": 60}  # seconds on one H200
STARTUP_S = 120  # a worker's imports (torch, Hydra) before its first part
GPU = {"presets": "htsat_tiny_roberta,htsat_tiny_roberta_fusion,htsat_base_roberta,pann14_roberta",
       "batch_size": 64, "steps": 10, "warmup": 3, "compile_backend": "inductor", "clips": 64, "budget_s": 450}
CPU_SMOKE = {"presets": "debug,htsat_debug", "batch_size": 4, "steps": 2, "warmup": 1, "compile_backend": "eager",
             "clips": 8, "budget_s": 300}
PEAK_ENV = "GPU_CHECK_PEAK_TFLOPS"
CONF_MODEL = Path(__file__).resolve().parents[1] / "conf" / "model"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-smoke", action="store_true", default=os.environ.get("GPU_CHECK_CPU_SMOKE") == "1",
                        help="tiny debug model on the CPU (also GPU_CHECK_CPU_SMOKE=1)")
    parser.add_argument("--presets", help="comma-separated conf/model presets for (a); the first one is used by (b)-(e)")
    parser.add_argument("--parts", default=",".join(KINDS), help=f"comma-separated subset of {','.join(KINDS)}")
    parser.add_argument("--batch-size", type=int, help="training and embedding batch (halved on out of memory)")
    parser.add_argument("--steps", type=int, help="timed training steps")
    parser.add_argument("--warmup", type=int, help="untimed steps first (compilation happens there)")
    parser.add_argument("--compile-backend", help="torch.compile backend for (c)")
    parser.add_argument("--clips", type=int, help="clips for (d) and (e)")
    parser.add_argument("--budget-s", type=float, help="overall time budget in seconds")
    parser.add_argument("--timeouts", default="", help="per-part timeouts, e.g. compile=240,train=60")
    parser.add_argument("--out", type=Path, help="summary file (default $OUT/gpu_check.txt, else runs/gpu_check.txt)")
    args = parser.parse_args(argv)
    for key, value in (CPU_SMOKE if args.cpu_smoke else GPU).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.out is None:
        args.out = Path(os.environ["OUT"]) / "gpu_check.txt" if os.environ.get("OUT") else Path("runs/gpu_check.txt")
    args.timeouts = parse_timeouts(args.timeouts)
    args.presets = [p for p in args.presets.split(",") if p]
    known = sorted(p.stem for p in CONF_MODEL.glob("*.yaml"))
    for preset in args.presets or [""]:
        if preset not in known:
            fail(f"--presets: unknown preset {preset!r} (conf/model has {', '.join(known)})")
    args.parts = [p for p in args.parts.split(",") if p]
    for kind in args.parts or [""]:
        if kind not in KINDS:
            fail(f"--parts: unknown part {kind!r} (one of {', '.join(KINDS)})")
    for name in ("batch_size", "steps", "warmup", "clips", "budget_s"):
        if getattr(args, name) < (0 if name == "warmup" else 1):
            fail(f"--{name.replace('_', '-')} must be >= {0 if name == 'warmup' else 1}, got {getattr(args, name)}")
    peak = os.environ.get(PEAK_ENV)
    if peak:
        try:
            assert float(peak) > 0
        except (ValueError, AssertionError):
            fail(f"{PEAK_ENV}={peak!r}: expected the dense bf16 peak in TFLOP/s (> 0), e.g. 989.4")
    return args


def fail(message: str):
    """Bad input: one line naming the flag or variable, exit code 2."""
    print(f"gpu_check: {message}", file=sys.stderr)
    sys.exit(2)


def parse_timeouts(text: str) -> dict[str, float]:
    """TIMEOUTS updated from "PART=SECONDS,..."."""
    timeouts = dict(TIMEOUTS)
    for item in filter(None, text.split(",")):
        kind, _, seconds = item.partition("=")
        try:
            timeouts[kind] = float(seconds)
        except ValueError:
            fail(f"--timeouts: {item!r} is not PART=SECONDS")
        if kind not in KINDS or timeouts[kind] <= 0:
            fail(f"--timeouts: {item!r}: the part must be one of {', '.join(KINDS)} and the seconds > 0")
    return timeouts


def plan(args) -> list[tuple[str, str]]:
    """(kind, preset) in run order: (a) for the first preset, then (b)-(e), then (a) for the other presets,
    so the budget runs out on the extra presets first."""
    first, rest = args.presets[0], args.presets[1:]
    parts = [(kind, first) for kind in KINDS if kind in args.parts]
    return parts + [("train", preset) for preset in rest if "train" in args.parts]


class Worker:
    """A `--worker` child process: its protocol lines (`@@...`) arrive on a queue; everything else goes to the log."""

    def __init__(self, args, parts: list[tuple[str, str]], log):
        settings = {k: getattr(args, k) for k in ("cpu_smoke", "batch_size", "steps", "warmup", "compile_backend",
                                                   "clips")}
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(settings),
                   *(f"{kind}:{preset}" for kind, preset in parts)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1,
                                        start_new_session=True)  # its own process group: compile workers die too
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, args=(log,), daemon=True).start()

    def _read(self, log) -> None:
        for line in self.process.stdout:
            if line.startswith("@@"):
                self.lines.put(line.rstrip("\n"))
            else:
                log.write(line)
                log.flush()
        self.lines.put(None)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def last_log_line(log_path: Path) -> str:
    lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def run_parts(args, log_path: Path, deadline: float) -> tuple[dict, list[dict]]:
    """Run the plan in as many workers as failures need; returns (device info, one result per part)."""
    pending, results, info = plan(args), [], {}

    def record(result: dict) -> None:
        results.append(result)
        print(format_line(result, results), flush=True)

    with open(log_path, "w") as log:
        while pending:
            if deadline - time.monotonic() < 5:
                for kind, preset in pending:
                    record(failed(kind, preset, f"skipped: the {args.budget_s:g} s budget is spent"))
                break
            worker, current = Worker(args, pending, log), None
            wait_until = min(deadline, time.monotonic() + STARTUP_S)
            while True:
                try:
                    line = worker.lines.get(timeout=max(0.0, wait_until - time.monotonic()))
                except queue.Empty:
                    worker.kill()
                    kind, preset = current or pending[0]
                    limit = f"timeout after {args.timeouts[kind]:g} s" if current else f"no start in {STARTUP_S} s"
                    if wait_until >= deadline:
                        limit = f"stopped at the end of the {args.budget_s:g} s budget"
                    record(failed(kind, preset, limit))
                    pending.remove((kind, preset))
                    break
                if line is None:  # the worker exited: after reporting a failed part (restart), or it crashed
                    code = worker.process.wait()
                    if pending and (current is not None or not results or "error" not in results[-1]):
                        kind, preset = current or pending[0]
                        record(failed(kind, preset, f"worker exited with {code}: {last_log_line(log_path)}"))
                        pending.remove((kind, preset))
                    break
                tag, _, payload = line.partition(" ")
                if tag == "@@info":
                    info = json.loads(payload)
                elif tag == "@@start":
                    kind, preset = payload.split(":", 1)
                    current = (kind, preset)
                    wait_until = min(deadline, time.monotonic() + args.timeouts[kind])
                elif tag == "@@result":
                    result = json.loads(payload)
                    record(result)
                    pending.remove((result["kind"], result["preset"]))
                    current = None
    return info, results


def failed(kind: str, preset: str, reason: str) -> dict:
    return {"kind": kind, "preset": preset, "error": reason}


def mfu_text(result: dict) -> str:
    return f"MFU {result['mfu']:.1%}" if result.get("mfu") is not None else "MFU n/a (no known peak)"


def step_text(result: dict) -> str:
    memory = f", peak mem {result['memory_gib']:.1f} GiB" if "memory_gib" in result else ""
    return (f"batch {result['batch']}: {result['step_s']:.3f} s/step, {result['samples_per_sec']:.1f} samples/s, "
            f"{mfu_text(result)}{memory}")


def format_line(result: dict, results: list[dict]) -> str:
    """One summary line; (b) is also compared with (a) of the same preset when that one passed."""
    kind, head = result["kind"], f"{LABELS[result['kind']]:<16} {result['preset']:<26}"
    if "error" in result:
        return f"{head} FAILED {result['error']}"
    if kind == "train":
        return f"{head} {result['precision']}, {step_text(result)}, {result['flops_per_sample'] / 1e9:.3g} GFLOP/sample"
    if kind == "fsdp":
        plain = next((r for r in results if r["kind"] == "train" and r["preset"] == result["preset"]
                      and "error" not in r and r["batch"] == result["batch"]), None)
        versus = f", {result['samples_per_sec'] / plain['samples_per_sec']:.2f}x (a)" if plain else ""
        return f"{head} world 1 ({result['backend']}), {step_text(result)}{versus}"
    if kind == "compile":
        return (f"{head} compiled ({result['backend']}) / eager {result['ratio']:.2f}x: "
                f"{result['samples_per_sec']:.1f} vs {result['eager_samples_per_sec']:.1f} samples/s at batch "
                f"{result['batch']}, {mfu_text(result)}; warm-up incl. compilation {result['warmup_s']:.0f} s")
    if kind == "frontend":
        return (f"{head} {result['device']} {result['device_clips_per_sec']:.0f} clips/s vs cpu "
                f"({result['cpu_threads']} threads) {result['cpu_clips_per_sec']:.0f} clips/s: {result['ratio']:.1f}x "
                f"(batch {result['batch']}, {result['seconds']:g} s clips)")
    return (f"{head} {result['device']} {result['clips_per_sec']:.1f} clips/s (batch {result['batch']}, "
            f"{result['seconds']:g} s clips, {result['precision']})")


def summary(args, info: dict, results: list[dict], elapsed: float) -> str:
    order = {part: i for i, part in enumerate(plan(args))}
    results = sorted(results, key=lambda r: (KINDS.index(r["kind"]), order[(r["kind"], r["preset"])]))
    peak = info.get("peak_tflops")
    peak_text = f"bf16 peak {peak:g} TFLOP/s ({info['peak_source']})" if peak else f"no known bf16 peak ({PEAK_ENV})"
    head = [(f"gpu_check {'(cpu smoke) ' if args.cpu_smoke else ''}{time.strftime('%Y-%m-%d %H:%M %Z')}: "
             f"{elapsed:.0f} s of a {args.budget_s:g} s budget"),
            (f"device: {info.get('device', 'unknown (no worker started)')}; {peak_text}; "
             f"torch {info.get('torch', '?')}, CUDA {info.get('cuda')}, {info.get('cpu_threads', '?')} CPU threads")]
    return "\n".join(head + [format_line(r, results) for r in results]) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.monotonic()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    log_path = args.out.with_suffix(".log")
    info, results = run_parts(args, log_path, start + args.budget_s)
    text = summary(args, info, results, time.monotonic() - start)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps({"info": info, "results": results}, indent=1) + "\n")
    print(f"\n{text}(written to {args.out}; worker output in {log_path})")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from gpu_check_parts import worker_main

        sys.exit(worker_main(json.loads(sys.argv[2]), sys.argv[3:]))
    sys.exit(main())
