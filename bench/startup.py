"""How long `python -m clap_train`, `clap_train.evaluate` and `clap_train.export` take to report simple mistakes,
against importing torch + Lightning.

    python bench/startup.py [--repeats 3]

Each case is a real launch that must fail with exit status 2 and one `PROG: error:` line: a typo in an
override, a missing shard path, a `resume=` or evaluated checkpoint that does not exist. The reference,
measured in the same run, is `python -c "import torch, lightning"`, what the entry point used to import
before it checked anything. Goal (issue 18): every case under 3 s on the 2-core development machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES = {  # name: (module, arguments)
    "train: config typo": ("clap_train", ["trainer.max_step=5"]),
    "train: missing shards": ("clap_train", ["data=webdataset", "data.train_shards=/nowhere/train-*.tar",
                                             "data.tokenizer=/nowhere/t.json"]),
    "train: missing resume checkpoint": ("clap_train", ["resume=/nowhere/last.ckpt"]),
    "evaluate: config typo": ("clap_train.evaluate", ["chekpoint=/nowhere/last.ckpt"]),
    "evaluate: missing checkpoint": ("clap_train.evaluate", ["checkpoint=/nowhere/last.ckpt"]),
    "evaluate: missing shards": ("clap_train.evaluate", ["model=debug", "data.val_shards.a=/nowhere/val-*.tar"]),
    "export: missing checkpoint": ("clap_train.export", ["/nowhere/last.ckpt", "/tmp/clap_export"]),
}


def timed(command: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="launches per case (the best is printed)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(REPO), "CLAP_RUNS_DIR": str(Path(tmp) / "runs")}
        reference = min(timed([sys.executable, "-c", "import torch, lightning"], env)[0] for _ in range(args.repeats))
        print(f"{'import torch, lightning (reference)':<36} {reference:6.2f} s", flush=True)
        for name, (module, arguments) in CASES.items():
            runs = [timed([sys.executable, "-m", module, *arguments], env) for _ in range(args.repeats)]
            best = min(seconds for seconds, _ in runs)
            result = runs[0][1]
            line = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
            assert result.returncode == 2 and line.startswith(f"{module}: error:"), (name, result.stderr[-2000:])
            print(f"{name:<36} {best:6.2f} s  ({best / reference:.2f}x the reference)  {line[:90]}", flush=True)


if __name__ == "__main__":
    main()
