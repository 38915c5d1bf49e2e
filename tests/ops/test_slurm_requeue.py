"""On a real one-node Slurm cluster: pre-emption (slurm/train.sbatch gets USR1, Lightning saves an HPC
checkpoint and requeues the job, the rerun resumes from it and the job completes), and
slurm/multinode.sbatch launching one DDP rank per srun task.

The cluster (munged, slurmctld, slurmd on localhost, no systemd) is started by .ci/slurm_up.sh in a
tmp SLURM_BASE on free ports and stopped by .ci/slurm_down.sh.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
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
def cluster(tmp_path, tmp_path_factory):
    """A started one-node cluster; one at a time across xdist workers (two would both be node `localhost`)."""
    lock_path = tmp_path_factory.getbasetemp().parent / "slurm_cluster.lock"  # shared by the workers of a run
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield from _started_cluster(tmp_path)


def _started_cluster(tmp_path):
    # a short base: slurmd's step sockets live under it and a Unix socket path has at most 108 bytes
    # (xdist's popen-gwN/ level made tmp_path too long); the logs are copied to tmp_path/slurm at the end
    base = Path(tempfile.mkdtemp(prefix="clap_slurm_"))
    env = {**clean_env(tmp_path), "SLURM_BASE": str(base), "SLURMCTLD_PORT": str(free_port()),
           "SLURMD_PORT": str(free_port())}
    up = subprocess.run([str(REPO / ".ci" / "slurm_up.sh")], env=env, capture_output=True, text=True, check=False)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield base, {**env, "SLURM_CONF": str(base / "etc" / "slurm.conf")}
    finally:
        subprocess.run([str(REPO / ".ci" / "slurm_down.sh")], env=env, capture_output=True, check=False)
        if (base / "log").is_dir():
            shutil.copytree(base / "log", tmp_path / "slurm" / "log", dirs_exist_ok=True)
        shutil.rmtree(base, ignore_errors=True)


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


def submit_train(env: dict, tmp_path: Path, *sbatch: str, overrides: tuple[str, ...] = (), sleep_s: float = 0.5):
    """slurm/train.sbatch at CPU size (one task, no GPU) with a probe recording each step; returns
    (job id, run dir, job log, steps file). Everything after the script name goes to python -m clap_train."""
    env.update(CLAP_PYTHON=sys.executable, CLAP_ACCELERATOR="cpu")
    out_dir = tmp_path / "out"
    out_dir.mkdir(exist_ok=True)
    probe = ["+callbacks.probe._target_=tests.ops.probe.RecordBatches", f"+callbacks.probe.path={tmp_path}/b.jsonl",
             f"+callbacks.probe.sleep_s={sleep_s}"]
    job_id = slurm(env, "sbatch", "--parsable", "--gpus-per-node=0", "--ntasks-per-node=1", "--cpus-per-task=1",
                   f"--output={out_dir}/slurm-%j.out", *sbatch, str(REPO / "slurm" / "train.sbatch"),
                   *TINY_DEMO, *overrides, *probe).strip()
    return job_id, tmp_path / "runs" / f"clap_train-{job_id}", out_dir / f"slurm-{job_id}.out", tmp_path / "b.jsonl"


def resumed_step(text: str, run_dir: Path) -> int:
    resumed = re.search(rf"resuming from {re.escape(str(run_dir))}/checkpoints/last\.ckpt \(global step (\d+)\)", text)
    assert resumed, text[-4000:]
    return int(resumed.group(1))


@pytest.mark.parametrize("scancel", [["--signal=USR1"], ["--signal=USR1", "--batch"]], ids=["tasks", "batch-shell"])
def test_manual_usr1_requeues_and_the_rerun_resumes(cluster, tmp_path, scancel):
    """`scancel --signal=USR1` reaches the tasks; with `--batch` only the batch shell, which forwards it."""
    base, env = cluster
    job_id, run_dir, log, steps_file = submit_train(
        env, tmp_path, "--time=15", overrides=(f"trainer.max_steps={MAX_STEPS}", "callbacks.last.every_n_steps=1000"))
    wait_for(lambda: steps_file.is_file() and len(steps_file.read_text().splitlines()) >= 3, 300,
             "the job's third step", poll_s=0.2)
    slurm(env, "scancel", *scancel, job_id)
    wait_completed(base / "log" / "jobcomp.txt", job_id, log, 300)

    assert "Restarts=1" in slurm(env, "scontrol", "show", "job", job_id)
    text = log.read_text()
    assert f"clap_train: job {job_id} restart 0" in text and f"clap_train: job {job_id} restart 1" in text
    assert ("clap_train: batch shell got SIGUSR1: forwarding it to srun" in text) == ("--batch" in scancel)
    step = resumed_step(text, run_dir)
    assert f"clap_train: SIGUSR1 at step {step}: saved {run_dir}/checkpoints/last.ckpt; the Slurm job is requeued" in text
    assert 3 <= step < MAX_STEPS
    assert json.loads((run_dir / "summary.json").read_text())["global_step"] == MAX_STEPS
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == MAX_STEPS
    # the rerun trained on from the saved step, not from scratch
    steps = [json.loads(line)["step"] for line in steps_file.read_text().splitlines()]
    restart = next(i for i in range(1, len(steps)) if steps[i] <= steps[i - 1])
    assert steps[restart:] == list(range(step, MAX_STEPS))


def test_scheduled_usr1_requeues_then_plain_scancel_saves(cluster, tmp_path):
    """`--signal=USR1@120` on a 4-minute job (Slurm sends it 120-180 s before the limit): saved, requeued,
    resumed. Then a plain `scancel` (TERM to the tasks and the batch shell) saves last.ckpt once more and
    ends the job without another requeue."""
    base, env = cluster
    job_id, run_dir, log, steps_file = submit_train(
        env, tmp_path, "--time=4", "--signal=USR1@120", overrides=("trainer.max_steps=100000",))
    wait_for(lambda: log.is_file() and f"clap_train: job {job_id} restart 1" in log.read_text(), 240,
             "the scheduled USR1 and the requeue", poll_s=1.0)
    wait_for(lambda: "resuming from" in log.read_text(), 120, "the rerun's resume", poll_s=0.5)
    step = resumed_step(log.read_text(), run_dir)
    assert f"clap_train: SIGUSR1 at step {step}: saved" in log.read_text()
    steps_before = len(steps_file.read_text().splitlines())
    wait_for(lambda: len(steps_file.read_text().splitlines()) >= steps_before + 2, 120, "two more steps", poll_s=0.2)
    slurm(env, "scancel", job_id)
    pattern = rf"clap_train: SIGTERM at step (\d+): saved {re.escape(str(run_dir))}/checkpoints/last\.ckpt"
    wait_for(lambda: re.search(pattern, log.read_text()), 120, "the save on SIGTERM", poll_s=0.5)
    wait_for(lambda: "CANCELLED" in job_states(base / "log" / "jobcomp.txt", job_id), 120, "the cancelled job",
             poll_s=1.0)
    saved = re.search(pattern, log.read_text())
    assert int(saved.group(1)) > step
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == int(saved.group(1))
    assert "Restarts=1" in slurm(env, "scontrol", "show", "job", job_id)


def test_documented_cpu_command_starts_on_a_small_node(cluster, tmp_path):
    """The CPU command of docs/operations.md as written (plus tiny-run overrides) runs to COMPLETED on
    this cluster's node, which has fewer CPUs than the script's #SBATCH --cpus-per-task=8."""
    base, env = cluster
    env.update(CLAP_PYTHON=sys.executable)
    doc = (REPO / "docs" / "operations.md").read_text()
    command = next(line for line in doc.splitlines() if line.startswith("CLAP_ACCELERATOR=cpu sbatch "))
    assignments = [w for w in command.split() if re.fullmatch(r"[A-Z_]+=\S*", w)]  # leading VAR=value words
    env.update(w.split("=", 1) for w in assignments)
    argv = command.split()[len(assignments):]
    assert argv[0] == "sbatch" and "slurm/train.sbatch" in argv
    job_id = subprocess.run([*argv[:1], "--parsable", f"--output={tmp_path}/slurm-%j.out", *argv[1:], *TINY_DEMO,
                             "trainer.max_steps=2"], cwd=REPO, env=env, capture_output=True, text=True, check=True,
                            ).stdout.strip()
    wait_completed(base / "log" / "jobcomp.txt", job_id, tmp_path / f"slurm-{job_id}.out", 300)


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
