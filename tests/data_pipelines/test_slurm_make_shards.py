"""slurm/make_shards.sbatch on the real one-node Slurm cluster of tests/ops: a 3-task array job and its
dependent merge give exactly the samples of a single-process make_shards run."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys

import pytest

from data_pipelines.make_shards import main
from tests.data_pipelines.test_shard_tasks import manifest, samples_of  # noqa: F401 - a fixture
from tests.ops._entry import REPO, wait_for
from tests.ops.test_slurm_requeue import cluster, job_states, slurm, wait_completed  # noqa: F401 - a fixture

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("slurmctld") is None, reason="Slurm is not installed (slurmctld)"),
    pytest.mark.skipif(os.geteuid() != 0, reason=".ci/slurm_up.sh runs munged and the Slurm daemons as root"),
]


def test_array_job_and_dependent_merge_equal_one_process(cluster, manifest, tmp_path):  # noqa: F811
    base, env = cluster
    env.update(CLAP_PYTHON=sys.executable)
    logs, out = tmp_path / "logs", tmp_path / "shards"
    logs.mkdir()
    args = ["--manifest", str(manifest), "--out", str(out), "--workers", "0", "--samples-per-shard", "2"]
    array_id = slurm(env, "sbatch", "--parsable", "--array=0-2", "--cpus-per-task=1", "--time=10",
                     f"--output={logs}/slurm-%A_%a.out", str(REPO / "slurm" / "make_shards.sbatch"), *args).strip()
    first_log = logs / f"slurm-{array_id}_0.out"
    wait_for(lambda: first_log.is_file() and "merge job" in first_log.read_text(), 120, "the merge job's submission")
    merge_id = re.search(r"merge job (\d+) after array job", first_log.read_text()).group(1)
    wait_completed(base / "log" / "jobcomp.txt", merge_id, out / f"merge_shards-{merge_id}.out", 300)

    for index in range(3):
        assert f"task {index} of 3" in (logs / f"slurm-{array_id}_{index}.out").read_text()
    report = json.loads((out / "report.json").read_text())
    assert report["num_tasks"] == 3 and report["written"] == 11
    assert main([*args[:2], "--out", str(tmp_path / "single"), *args[4:]]) == 0
    assert samples_of(out) == samples_of(tmp_path / "single")
    sizes = json.loads((out / "sizes.json").read_text())
    assert sorted(sizes) == sorted(p.name for p in out.glob("*.tar")) and sum(sizes.values()) == 11
