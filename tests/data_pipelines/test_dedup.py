"""Exact duplicates by decoded-PCM fingerprint, evaluation leakage removed with --exclude, the fingerprint CLI."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from data_pipelines.encode import encode_row
from data_pipelines.fingerprint import audio_hash, fingerprint_shards, read_exclusions
from data_pipelines.fingerprint import main as fingerprint_main
from data_pipelines.make_shards import main
from data_pipelines.manifest import write_manifest
from data_pipelines.shards import encode_flac, iter_tar
from tests.data_pipelines.conftest import ENV, sine, write_audio


def row(path, key, text="a clip"):
    return {"audio": str(path), "key": key, "text": [text], "tags": [], "original_data": {"source_audio": path.name}}


def keys_of(out_dir):
    return sorted(key for shard in out_dir.glob("*.tar") for key, _ in iter_tar(shard))


def test_fingerprint_is_of_the_decoded_resampled_pcm(tmp_path):
    pcm = (sine(0.3, 44100, 2) * 32767).astype(np.int16)
    sf.write(tmp_path / "a.wav", pcm, 44100)
    sf.write(tmp_path / "a.flac", pcm, 44100)  # same samples, other container: other bytes
    sf.write(tmp_path / "b.wav", pcm[1:], 44100)  # one sample shorter: another clip
    hashes = {name: encode_row(row(tmp_path / name, "k"))["pcm_sha1"] for name in ("a.wav", "a.flac", "b.wav")}
    assert (tmp_path / "a.wav").read_bytes() != (tmp_path / "a.flac").read_bytes()
    assert hashes["a.wav"] == hashes["a.flac"] != hashes["b.wav"]
    flac = encode_row(row(tmp_path / "a.wav", "k"))["data"]
    assert audio_hash(flac, "flac") == hashes["a.wav"]  # a shard member hashes as make_shards wrote it
    assert audio_hash((tmp_path / "a.wav").read_bytes(), "wav") == hashes["a.wav"]  # 44.1 kHz stereo: converted
    assert encode_row(row(tmp_path / "a.wav", "k"), codec="pcm16")["pcm_sha1"] == hashes["a.wav"]


@pytest.fixture
def eval_and_train(tmp_path):
    """Eval shards of 2 clips; a training manifest holding both again (one re-encoded), a within-set copy,
    a clip listed by key and one by file name in an exclusion list, and 2 clean clips."""
    audio = tmp_path / "audio"
    for i, name in enumerate(["e1", "e2", "t1", "t2", "t3", "t4"]):
        write_audio(audio / f"{name}.wav", 0.2 + 0.013 * i, 22050)
    pcm, rate = sf.read(audio / "e2.wav", dtype="int16")
    sf.write(audio / "e2_again.flac", pcm, rate)
    sf.write(audio / "t1_copy.flac", *sf.read(audio / "t1.wav", dtype="int16"))
    write_manifest([row(audio / "e1.wav", "e1"), row(audio / "e2.wav", "e2")], tmp_path / "eval.jsonl")
    assert main(["--manifest", str(tmp_path / "eval.jsonl"), "--out", str(tmp_path / "eval"), "--workers", "0",
                 "--split", "test"]) == 0
    train = [row(audio / f"{n}", n.split(".")[0]) for n in
             ("e1.wav", "e2_again.flac", "t1.wav", "t1_copy.flac", "t2.wav", "t3.wav", "t4.wav")]
    write_manifest(train, tmp_path / "train.jsonl")
    (tmp_path / "more.txt").write_text("# hand-made list\nt2\nt3.wav\n")
    return tmp_path


def test_fingerprint_cli_and_exclusions_reported(eval_and_train, capsys):
    root = eval_and_train
    assert fingerprint_main(["--shards", str(root / "eval" / "test-*.tar"), "--out", str(root / "eval.hashes")]) == 0
    lines = (root / "eval.hashes").read_text().splitlines()
    assert len(lines) == 2 and all(len(line.split("\t")[0]) == 40 for line in lines)
    assert sorted(line.split("\t")[1] for line in lines) == ["e1", "e2"]
    exclusions = read_exclusions([root / "eval.hashes", root / "more.txt"])
    assert exclusions.keys == {"t2": "more.txt"} and exclusions.names == {"t3.wav": "more.txt"}

    out = root / "train"
    argv = ["--manifest", str(root / "train.jsonl"), "--out", str(out), "--workers", "0",
            "--exclude", str(root / "eval.hashes"), "--exclude", str(root / "more.txt")]
    assert main(argv) == 0
    assert keys_of(out) == ["t1", "t4"] or keys_of(out) == ["t1_copy", "t4"]
    report = json.loads((out / "report.json").read_text())
    reasons = {item["key"]: item["reason"] for item in report["skipped"]}
    assert reasons["e1"] == "excluded by eval.hashes (key e1): same decoded PCM"
    assert reasons["e2_again"] == "excluded by eval.hashes (key e2): same decoded PCM"
    assert reasons["t2"] == "excluded by more.txt: key t2" and reasons["t3"] == "excluded by more.txt: file name t3.wav"
    copy = ({"t1", "t1_copy"} - set(keys_of(out))).pop()
    assert reasons[copy].startswith("duplicate of t1") and "same decoded PCM" in reasons[copy]
    assert report["num_excluded"] == 4 and report["num_duplicates"] == 1 and report["written"] == 2
    assert "2 clips, 2 distinct" in capsys.readouterr().err


def test_resume_keeps_duplicate_detection(eval_and_train):
    root = eval_and_train
    out = root / "train"
    base = ["--manifest", str(root / "train.jsonl"), "--out", str(out), "--workers", "0", "--samples-per-shard", "1"]
    main(base)
    first = keys_of(out)
    (out / "hashes.jsonl").unlink()  # lost: fingerprinted again from the shards
    max(out.glob("train-*.tar")).unlink()
    main(base + ["--resume"])
    assert keys_of(out) == first and len(first) == 6


def test_fingerprint_skips_undecodable_samples(tmp_path):
    from data_pipelines.shards import write_shards

    write_shards([("good", encode_flac(sine(0.2, 48000)[:, 0], 48000), {"text": ["x"]}),
                  ("bad", b"not audio", {"text": ["y"]})], tmp_path, "test")
    rows, bad = fingerprint_shards(str(tmp_path / "test-*.tar"))
    assert [r[1] for r in rows] == ["good"] and bad[0].startswith("test-000000.tar:bad:")


def test_fingerprint_bad_flags_are_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "data_pipelines.fingerprint", "--shards", "/nonexistent/x-*.tar",
                             "--out", "o"], cwd=tmp_path, capture_output=True, text=True, check=False, env=ENV)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == ["fingerprint: error: --shards: no shards match '/nonexistent/x-*.tar'"]
    with pytest.raises(SystemExit, match="--workers must be >= 0"):
        fingerprint_main(["--shards", "x.tar", "--out", "o", "--workers", "-1"])


@pytest.mark.parametrize("flags, message", [(["--exclude", "/nonexistent/missing.hashes"], "--exclude /nonexistent/missing.hashes"),
                                            (["--codec", "mp3"], "--codec must be one of flac, pcm16"),
                                            (["--samples-per-shard", "0"], "--samples-per-shard must be >= 1")])
def test_make_shards_bad_flags_are_one_line(eval_and_train, flags, message):
    argv = ["--manifest", str(eval_and_train / "train.jsonl"), "--out", str(eval_and_train / "o"), *flags]
    with pytest.raises(SystemExit) as error:
        main(argv)
    assert message in str(error.value) and "\n" not in str(error.value)
