"""Demo training on a busy CPU: steps/s and CPU-seconds per step, alone and beside a CPU hog on one core.

    python bench/cpu_contention.py [--steps 40] [--skip 5] [--variants auto,torch_default]

Each variant runs the demo configuration (`python -m clap_train`, synthetic shards, CPU-tiny model,
batch 64, 1 data worker) for `--skip + --steps` optimizer steps, without validation, twice: alone and
beside a busy-loop process pinned to core 0. A callback (`bench/step_clock.py`, added with a `+callbacks.` override)
times the last `--steps` steps and reads the CPU time of the whole process tree (training process and its
data workers, from /proc). Printed: steps/s, CPU-s/step, and the ratios busy / quiet of the same variant,
measured in the same run. Goal (issue 17): beside the hog >= 0.5x the quiet steps/s and CPU-s/step
within 1.5x.

Variants: `auto` is the default (threads = cores - data workers, OMP_WAIT_POLICY=PASSIVE set by the
entry point); `spin` the same threads with OMP_WAIT_POLICY=ACTIVE; `torch_default` torch's own choice
(one thread per core, libgomp's default wait policy) as before issue 17.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {
    "auto": ({}, []),
    "spin": ({"OMP_WAIT_POLICY": "ACTIVE"}, []),
    "torch_default": ({"OMP_WAIT_POLICY": "unset-by-bench"}, [f"cpu_threads={os.cpu_count()}"]),
}


def hog() -> subprocess.Popen:
    """A busy loop pinned to core 0 (another user's job)."""
    code = "import os\nos.sched_setaffinity(0, {0})\nwhile True: pass\n"
    return subprocess.Popen([sys.executable, "-c", code])


def run_variant(name: str, steps: int, skip: int, busy: bool, workdir: Path) -> dict:
    env_extra, overrides = VARIANTS[name]
    out = workdir / f"{name}-{'busy' if busy else 'quiet'}.json"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env.update(env_extra, PYTHONPATH=str(REPO), CLAP_RUNS_DIR=str(workdir / "runs"))
    command = [sys.executable, "-m", "clap_train", f"run_name=bench-{name}-{busy}", f"trainer.max_steps={skip + steps}",
               "data.val_shards=null", "evaluation=retrieval", "eval_before_training=false", "callbacks.best=null",
               "+callbacks.clock._target_=bench.step_clock.StepClock", f"+callbacks.clock.out={out}",
               f"+callbacks.clock.skip={skip}", *overrides]
    hog_process = hog() if busy else None
    try:
        subprocess.run(command, check=True, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    finally:
        if hog_process is not None:
            hog_process.kill()
            hog_process.wait()
    result = json.loads(out.read_text())
    return {"steps_per_s": result["steps"] / result["seconds"], "cpu_s_per_step": result["cpu_seconds"] / result["steps"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="timed steps per run")
    parser.add_argument("--skip", type=int, default=5, help="untimed first steps (warm-up)")
    parser.add_argument("--variants", default="auto,torch_default", help=f"comma-separated, of {list(VARIANTS)}")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.variants.split(","):
            quiet = run_variant(name, args.steps, args.skip, False, Path(tmp))
            busy = run_variant(name, args.steps, args.skip, True, Path(tmp))
            print(f"{name:>14}: quiet {quiet['steps_per_s']:.3f} steps/s {quiet['cpu_s_per_step']:.2f} CPU-s/step | "
                  f"beside hog {busy['steps_per_s']:.3f} steps/s {busy['cpu_s_per_step']:.2f} CPU-s/step | "
                  f"ratio steps/s {busy['steps_per_s'] / quiet['steps_per_s']:.2f}x, "
                  f"CPU-s/step {busy['cpu_s_per_step'] / quiet['cpu_s_per_step']:.2f}x", flush=True)


if __name__ == "__main__":
    main()
