"""slurm/*.sbatch: valid bash, only documented #SBATCH options, requeue on a pre-emption signal."""

from __future__ import annotations

import gzip
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((REPO / "slurm").glob("*.sbatch"))
TRAINING_SCRIPTS = [p for p in SCRIPTS if p.name != "make_shards.sbatch"]
SBATCH_MAN = Path("/usr/share/man/man1/sbatch.1.gz")
# Long options of sbatch(1), Slurm 22.05 (the Debian 12 package this project's CI installs).
DOCUMENTED = {
    "account", "acctg-freq", "array", "batch", "bb", "bbf", "begin", "chdir", "cluster-constraint", "clusters",
    "comment", "constraint", "container", "contiguous", "core-spec", "cores-per-socket", "cpu-freq", "cpus-per-gpu",
    "cpus-per-task", "deadline", "delay-boot", "dependency", "distribution", "error", "exclude", "exclusive",
    "export", "export-file", "extra-node-info", "get-user-env", "gid", "gpu-bind", "gpu-freq", "gpus",
    "gpus-per-node", "gpus-per-socket", "gpus-per-task", "gres", "gres-flags", "hint", "hold", "ignore-pbs", "input",
    "job-name", "kill-on-invalid-dep", "licenses", "mail-type", "mail-user", "mcs-label", "mem", "mem-bind",
    "mem-per-cpu", "mem-per-gpu", "mincpus", "network", "nice", "no-kill", "no-requeue", "nodefile", "nodelist",
    "nodes", "ntasks", "ntasks-per-core", "ntasks-per-gpu", "ntasks-per-node", "ntasks-per-socket", "open-mode",
    "output", "overcommit", "oversubscribe", "parsable", "partition", "power", "prefer", "priority", "profile",
    "propagate", "qos", "quiet", "reboot", "requeue", "reservation", "signal", "sockets-per-node", "spread-job",
    "switches", "test-only", "thread-spec", "threads-per-core", "time", "time-min", "tmp", "uid", "use-min-nodes",
    "verbose", "wait", "wait-all-nodes", "wckey", "wrap",
}


def sbatch_options(script: Path) -> dict[str, str | None]:
    """{option: value or None} of the `#SBATCH --option[=value]` lines."""
    options = {}
    for line in script.read_text().splitlines():
        if line.startswith("#SBATCH"):
            match = re.fullmatch(r"#SBATCH\s+--([a-z][a-z-]*)(?:=(\S+))?\s*", line)
            assert match, f"{script.name}: not a '#SBATCH --long-option[=value]' line: {line!r}"
            options[match.group(1)] = match.group(2)
    return options


def test_scripts_exist():
    assert {p.name for p in SCRIPTS} == {"train.sbatch", "multinode.sbatch", "make_shards.sbatch"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_valid_bash(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", TRAINING_SCRIPTS, ids=lambda p: p.name)
def test_documented_options_and_requeue_setup(script):
    options = sbatch_options(script)
    assert set(options) <= DOCUMENTED, set(options) - DOCUMENTED
    assert re.fullmatch(r"USR1@\d+", options["signal"]), "USR1 (no B:) reaches the srun-started python"
    assert "requeue" in options and options["requeue"] is None
    assert options["ntasks-per-node"] == options["gpus-per-node"], "one task per GPU"
    text = script.read_text()
    assert "srun" in text and "-m clap_train" in text and '"$@"' in text


def test_make_shards_script_submits_the_merge_after_the_array():
    script = REPO / "slurm" / "make_shards.sbatch"
    assert set(sbatch_options(script)) <= DOCUMENTED
    text = script.read_text()
    assert "--dependency=\"afterok:${SLURM_ARRAY_JOB_ID}\"" in text and "data_pipelines.merge_shards" in text
    assert "-m data_pipelines.make_shards \"$@\"" in text


@pytest.mark.skipif(not SBATCH_MAN.is_file(), reason="sbatch man page not installed")
def test_options_are_in_the_installed_man_page():
    man = gzip.decompress(SBATCH_MAN.read_bytes()).decode(errors="replace").replace("\\-", "-")
    in_man = {m.group(1) for line in man.splitlines() if line.startswith("\\fB")
              for m in re.finditer(r"--([a-z][a-z-]*)", line)}
    for script in SCRIPTS:
        assert set(sbatch_options(script)) <= in_man, (script.name, set(sbatch_options(script)) - in_man)
