"""On a real one-node Slurm cluster: pre-emption (slurm/train.sbatch gets USR1, Lightning saves an HPC
checkpoint and requeues the job, the rerun resumes from it and the job completes), and
slurm/multinode.sbatch launching one DDP rank per srun task.

The cluster (munged, slurmctld, slurmd on localhost, no systemd) is started by .ci/slurm_up.sh in a
tmp SLURM_BASE on free ports and stopped by .ci/slurm_down.sh.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.ops._entry import REPO, TINY_DEMO, clean_env, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("slurmctld") is None, reason="Slurm is not installed (slurmctld)"),
    pytest.mark.skipif(os.geteuid() != 0, reason=".ci/slurm_up.sh runs munged and the Slurm daemons as root"),
]
MAX_STEPS = 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cluster(tmp_path):
    base = tmp_path / "slurm"
    env = {**clean_env(tmp_path), "SLURM_BASE": str(base), "SLURMCTLD_PORT": str(free_port()),
           "SLURMD_PORT": str(free_port())}
    up = subprocess.run([str(REPO / ".ci" / "slurm_up.sh")], env=env, capture_output=True, text=True, check=False)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield base, {**env, "SLURM_CONF": str(base / "etc" / "slurm.conf")}
    finally:
        subprocess.run([str(REPO / ".ci" / "slurm_down.sh")], env=env, capture_output=True, check=False)


def slurm(env: dict, *args: str) -> str:
    result = subprocess.run(list(args), env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{args}: {result.stderr}"
    return result.stdout


def job_states(jobcomp: Path, job_id: str) -> list[str]:
    if not jobcomp.is_file():
        return []
    return re.findall(rf"JobId={job_id} .*?JobState=(\S+)", jobcomp.read_text())


def wait_completed(jobcomp: Path, job_id: str, log: Path, timeout_s: float) -> None:
    """Until the job is COMPLETED; fails at once, with the job's log tail, if it ends any other way."""
    def finished():
        states = job_states(jobcomp, job_id)
        assert not set(states) & {"FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "CANCELLED"}, log.read_text()[-4000:]
        return "COMPLETED" in states

    wait_for(finished, timeout_s, f"job {job_id} COMPLETED in {jobcomp}", poll_s=1.0)


def test_usr1_requeues_and_the_rerun_resumes(cluster, tmp_path):
    base, env = cluster
    env.update(CLAP_PYTHON=sys.executable, CLAP_ACCELERATOR="cpu")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    probe = ["+callbacks.probe._target_=tests.ops.probe.RecordBatches", f"+callbacks.probe.path={tmp_path}/b.jsonl",
             "+callbacks.probe.sleep_s=0.5"]
    # CPU-sized: one task, no GPU; everything after the script name goes to python -m clap_train
    job_id = slurm(env, "sbatch", "--parsable", "--gpus-per-node=0", "--ntasks-per-node=1", "--cpus-per-task=1",
                   "--time=15", f"--output={out_dir}/slurm-%j.out", str(REPO / "slurm" / "train.sbatch"),
                   *TINY_DEMO, f"trainer.max_steps={MAX_STEPS}", "callbacks.last.every_n_steps=2", *probe).strip()
    run_dir = tmp_path / "runs" / f"clap_train-{job_id}"
    jobcomp = base / "log" / "jobcomp.txt"
    log = out_dir / f"slurm-{job_id}.out"
    wait_for((run_dir / "checkpoints" / "last.ckpt").is_file, 300, "the job's first checkpoint", poll_s=0.2)
    slurm(env, "scancel", "--signal=USR1", job_id)  # what Slurm sends --signal=USR1@300 before the time limit
    wait_completed(jobcomp, job_id, log, 300)

    assert "Restarts=1" in slurm(env, "scontrol", "show", "job", job_id)
    text = log.read_text()
    assert f"clap_train: job {job_id} restart 0" in text and f"clap_train: job {job_id} restart 1" in text
    assert "Handling auto-requeue signal" in text
    resumed = re.search(rf"resuming from {re.escape(str(run_dir))}/hpc_ckpt_1\.ckpt \(global step (\d+)\)", text)
    assert resumed, text[-4000:]
    step = int(resumed.group(1))
    assert 2 <= step < MAX_STEPS
    assert json.loads((run_dir / "summary.json").read_text())["global_step"] == MAX_STEPS
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == MAX_STEPS
    assert not (run_dir / "hpc_ckpt_1.ckpt").exists(), "superseded by the final last.ckpt"
    # the rerun trained on from the HPC checkpoint's step, not from scratch
    steps = [json.loads(line)["step"] for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    restart = next(i for i in range(1, len(steps)) if steps[i] <= steps[i - 1])
    assert steps[restart:] == list(range(step, MAX_STEPS))


def test_multinode_script_runs_one_ddp_rank_per_srun_task(cluster, tmp_path):
    """slurm/multinode.sbatch at CPU size: 1 node x 2 tasks; Lightning takes ranks, world size and the
    rendezvous from srun's environment, each rank draws its own batches, the job completes."""
    base, env = cluster
    env.update(CLAP_PYTHON=sys.executable, CLAP_ACCELERATOR="cpu")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    steps = 4
    job_id = slurm(env, "sbatch", "--parsable", "--nodes=1", "--ntasks-per-node=2", "--gpus-per-node=0",
                   "--cpus-per-task=1", "--time=15", f"--output={out_dir}/slurm-%j.out",
                   str(REPO / "slurm" / "multinode.sbatch"), *TINY_DEMO, "trainer=ddp", f"trainer.max_steps={steps}",
                   "+callbacks.probe._target_=tests.ops.probe.RecordBatches",
                   f"+callbacks.probe.path='{tmp_path}/rank{{rank}}.jsonl'").strip()  # quoted: braces
    jobcomp = base / "log" / "jobcomp.txt"
    log = out_dir / f"slurm-{job_id}.out"
    wait_completed(jobcomp, job_id, log, 400)
    assert f"clap_train: job {job_id} restart 0 on localhost (1 nodes x 2 tasks)" in log.read_text()
    records = [[json.loads(line) for line in (tmp_path / f"rank{rank}.jsonl").read_text().splitlines()]
               for rank in (0, 1)]
    for rank, rank_records in enumerate(records):
        assert [r["step"] for r in rank_records] == list(range(steps))
        assert all(r["rank"] == rank and r["world_size"] == 2 for r in rank_records)
    # each rank draws its own resampled stream (seeded by rank): different batches at every step
    assert all(records[0][step]["keys"] != records[1][step]["keys"] for step in range(steps))
    run_dir = tmp_path / "runs" / f"clap_train-{job_id}"
    assert json.loads((run_dir / "summary.json").read_text())["global_step"] == steps
