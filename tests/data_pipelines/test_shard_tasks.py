"""make_shards split over tasks (--num-tasks / --task-index, Slurm array defaults) and merge_shards."""

import json
import subprocess
import sys

import pytest
import soundfile as sf

from data_pipelines.make_shards import main
from data_pipelines.manifest import write_manifest
from data_pipelines.merge_shards import main as merge_main
from data_pipelines.merge_shards import merge_shards
from data_pipelines.shards import iter_tar
from data_pipelines.tasks import Task, resolve_task
from tests.data_pipelines.conftest import ENV, write_audio


def samples_of(out_dir):
    """{key: {member extension: bytes}} over every shard of `out_dir`."""
    return {key: members for shard in sorted(out_dir.glob("*.tar")) for key, members in iter_tar(shard)}


@pytest.fixture
def manifest(tmp_path):
    """15 clips (one unreadable, one caption-less, two copies of others under new names) and a second
    caption row for clip 0."""
    root = tmp_path / "data"
    rows = []
    for i in range(11):
        write_audio(root / f"c{i}.wav", 0.2 + 0.01 * i, 16000)
        rows.append({"audio": str(root / f"c{i}.wav"), "key": f"c{i}", "text": [f"clip {i}"], "tags": [],
                     "original_data": {}})
    rows.append({"audio": str(root / "c0.wav"), "key": "c0", "text": ["again"], "tags": [], "original_data": {}})
    for copy, of in (("d1", 3), ("d2", 5)):  # the same samples in another container: exact duplicates
        pcm, rate = sf.read(root / f"c{of}.wav", dtype="int16")
        sf.write(root / f"{copy}.flac", pcm, rate)
        rows.append({"audio": str(root / f"{copy}.flac"), "key": copy, "text": ["copy"], "tags": [],
                     "original_data": {}})
    (root / "bad.wav").write_bytes(b"not audio")
    rows.append({"audio": str(root / "bad.wav"), "key": "bad", "text": ["x"], "tags": [], "original_data": {}})
    write_audio(root / "nocap.wav", 0.2, 16000)
    rows.append({"audio": str(root / "nocap.wav"), "key": "nocap", "text": [], "tags": [], "original_data": {}})
    path = root / "manifest.jsonl"
    write_manifest(rows, path)
    return path



def test_three_tasks_give_the_single_process_samples_and_merge(manifest, tmp_path):
    single, split = tmp_path / "single", tmp_path / "split"
    assert main(["--manifest", str(manifest), "--out", str(single), "--workers", "0", "--samples-per-shard", "2"]) == 0
    for index in range(3):
        argv = ["--manifest", str(manifest), "--out", str(split), "--workers", "0", "--samples-per-shard", "2",
                "--num-tasks", "3", "--task-index", str(index)]
        if index == 1:
            with pytest.raises(SystemExit, match="task 1 of 3 is missing"):
                merge_shards(split)
        assert main(argv) == 0
    assert not (split / "sizes.json").exists()
    report = merge_shards(split)
    expected = samples_of(single)
    assert samples_of(split) == expected and len(expected) == 11
    single_report = json.loads((single / "report.json").read_text())
    assert report["num_duplicates"] == single_report["num_duplicates"] == 2
    at_merge = json.loads((split / "merge_duplicates.json").read_text())  # here both copies were in other tasks
    assert sorted(item["key"] for item in at_merge) == ["c3", "d2"] and all(item["at_merge"] for item in at_merge)
    assert json.loads(samples_of(split)["c0"]["json"])["text"] == ["clip 0", "again"]
    sizes = json.loads((split / "sizes.json").read_text())
    assert sum(sizes.values()) == 11 and {name.split("-")[1] for name in sizes} == {"t0000", "t0001", "t0002"}
    assert all((split / name).is_file() for name in sizes)
    for field in ("written", "num_merged_rows", "num_skipped", "num_duplicates", "hours"):
        assert report[field] == pytest.approx(single_report[field], abs=2e-6), field
    assert sorted(item["reason"] for item in report["skipped"]) == sorted(
        item["reason"] for item in single_report["skipped"])
    assert json.loads((split / "report.json").read_text()) == report and report["num_tasks"] == 3
    assert merge_shards(split) == report  # idempotent


def test_merge_refuses_missing_or_unfinished_tasks_and_mixed_settings(manifest, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["--manifest", str(manifest), "--out", str(out), "--workers", "0", "--num-tasks", "3"]
    main(base + ["--task-index", "0"])
    main(base + ["--task-index", "2"])
    with pytest.raises(SystemExit, match="task 1 of 3 is missing"):
        merge_main([str(out)])
    main(base + ["--task-index", "1"])
    (out / "report.t0001.json").unlink()
    with pytest.raises(SystemExit, match=r"task 1 of 3 has not finished \(no report.t0001.json\)"):
        merge_shards(out)
    with pytest.raises(SystemExit, match="task 1 already ran .* pass --resume"):
        main(base + ["--task-index", "1"])
    with pytest.raises(SystemExit, match="different settings"):
        main(base + ["--task-index", "1", "--seed", "7", "--resume"])
    with pytest.raises(SystemExit, match="not a multi-task make_shards run"):
        merge_shards(manifest.parent)


def test_resume_is_per_task(manifest, tmp_path):
    out = tmp_path / "out"
    base = ["--manifest", str(manifest), "--out", str(out), "--workers", "0", "--samples-per-shard", "1",
            "--num-tasks", "2"]
    main(base + ["--task-index", "0"])
    main(base + ["--task-index", "1"])
    before = samples_of(out)
    task1 = sorted(out.glob("train-t0001-*.tar"))
    task1[-1].unlink()  # as if task 1 died before its last shard
    (out / "train-t0001-000099.tar.tmp").write_bytes(b"partial")
    (out / "train-t0000-000099.tar.tmp").write_bytes(b"another task's write in progress")
    (out / "report.t0001.json").unlink()
    main(base + ["--task-index", "1", "--resume"])
    report = json.loads((out / "report.t0001.json").read_text())
    assert report["written"] == 1 and report["already_present"] == len(task1) - 1
    assert samples_of(out) == before
    assert not (out / "train-t0001-000099.tar.tmp").exists() and (out / "train-t0000-000099.tar.tmp").exists()


def test_task_defaults_from_slurm_array_and_bad_values():
    env = {"SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_ID": "2"}
    assert resolve_task(None, None, env) == Task(2, 3)
    assert resolve_task(None, None, {}) is None
    assert resolve_task(4, 3, env) == Task(3, 4)  # flags win
    rerun = {"SLURM_ARRAY_TASK_COUNT": "1", "SLURM_ARRAY_TASK_ID": "5"}  # sbatch --array=5 ... --num-tasks 16
    assert resolve_task(16, None, rerun) == Task(5, 16)
    assert Task(1, 3).take(list(range(8))) == [1, 4, 7]
    cases = [((0, 0, {}), "--num-tasks must be >= 1, got 0"), ((3, 3, {}), "--task-index must be in [0, 2]"),
             ((None, 1, {}), "--task-index needs --num-tasks"), ((2, None, {}), "--num-tasks needs --task-index"),
             ((None, None, {**env, "SLURM_ARRAY_TASK_ID": "x"}), "SLURM_ARRAY_TASK_ID must be an integer"),
             ((None, None, {**env, "SLURM_ARRAY_TASK_ID": "3"}), "SLURM_ARRAY_TASK_ID must be in [0, 2]")]
    for args, message in cases:
        with pytest.raises(SystemExit) as error:
            resolve_task(*args)
        assert message in str(error.value) and "\n" not in str(error.value)


def test_cli_bad_task_flags_are_one_line(tmp_path, manifest):
    base = ["--manifest", str(manifest), "--out", str(tmp_path / "o")]
    command = [sys.executable, "-m", "data_pipelines.make_shards", *base, "--num-tasks", "2", "--task-index", "5"]
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=ENV)
    assert result.returncode != 0 and result.stderr.strip().splitlines() == [
        "make_shards: error: --task-index must be in [0, 1] for 2 tasks, got 5 (Slurm arrays: --array=0-1)"]
    with pytest.raises(SystemExit, match="--num-tasks must be >= 1, got 0"):
        main([*base, "--num-tasks", "0", "--task-index", "0"])
    assert not (tmp_path / "o").exists()
