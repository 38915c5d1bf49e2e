import csv
import json
import subprocess
import sys

import pytest

from data_pipelines.make_shards import main, make_shards
from data_pipelines.manifest import read_manifest, scan_audio_dir
from data_pipelines.shards import decode_audio, iter_tar, read_meta
from tests.data_pipelines.conftest import write_audio, write_broken


def read_all(out_dir):
    samples = {}
    for shard in sorted(out_dir.glob("*.tar")):
        for key, members in iter_tar(shard):
            samples[key] = (members, read_meta(members), shard.name)
    return samples


@pytest.fixture
def csv_manifest(tmp_path):
    """Good clips in 4 formats/rates/layouts, 3 broken files, a missing file and a caption-less row."""
    root = tmp_path / "data"
    write_audio(root / "audio" / "mono16k.wav", 0.5, 16000, 1)
    write_audio(root / "audio" / "stereo44k.flac", 0.7, 44100, 2)
    write_audio(root / "audio" / "vorbis.ogg", 0.6, 44100, 2, format="OGG", subtype="VORBIS")
    write_audio(root / "audio" / "sub" / "tags_only.wav", 0.55, 16000, 1)
    write_audio(root / "audio" / "other.wav", 0.5, 16000, 1)
    write_audio(root / "audio" / "uncaptioned.wav", 0.5, 16000, 1)
    broken = write_broken(root / "audio" / "broken")
    rows = [
        {"audio": "audio/mono16k.wav", "caption": "a sine | ein Sinus, schön", "tags": "tone;sine"},
        {"audio": "audio/stereo44k.flac", "caption_1": "stéréo sine", "caption_2": "正弦波"},
        {"audio": "audio/vorbis.ogg", "caption": "a vorbis tone", "split_note": "x"},
        {"audio": "audio/sub/tags_only.wav", "tags": "beep; tone"},
        {"audio": "audio/missing.wav", "caption": "gone"},
        {"audio": "audio/other.wav", "caption": "other", "key": "audio_mono16k"},  # repeats mono16k's derived key
        {"audio": "audio/uncaptioned.wav", "key": "no_caption"},
        # one row per caption (AudioCaps/Clotho): the same file again, a new caption, a repeated one, more tags
        {"audio": "audio/mono16k.wav", "caption": "a second caption", "tags": "sine;beep", "key": "ignored"},
        {"audio": "./audio/mono16k.wav", "caption": "a sine", "split_note": "later"},
    ]
    rows += [{"audio": f"audio/broken/{p.name}", "caption": name} for name, p in broken.items()]
    fields = ["audio", "key", "caption", "caption_1", "caption_2", "tags", "split_note"]
    path = root / "manifest.csv"
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_read_manifest_csv(csv_manifest):
    rows = {}
    for row in read_manifest(csv_manifest):
        rows.setdefault(row["key"], row)
    assert rows["audio_mono16k"]["text"] == ["a sine", "ein Sinus, schön"]
    assert rows["audio_mono16k"]["tags"] == ["tone", "sine"]
    assert rows["audio_stereo44k"]["text"] == ["stéréo sine", "正弦波"]
    assert rows["audio_vorbis"]["original_data"]["split_note"] == "x"
    assert rows["audio_mono16k"]["audio"] == str(csv_manifest.parent / "audio" / "mono16k.wav")


def test_make_shards_writes_decodable_shards_and_report(csv_manifest, tmp_path):
    out = tmp_path / "shards"
    report = make_shards(read_manifest(csv_manifest), out, "train", samples_per_shard=2, num_workers=0, seed=3)
    samples = read_all(out)
    assert sorted(samples) == ["audio_mono16k", "audio_stereo44k", "audio_sub_tags_only", "audio_vorbis"]
    for members, meta, _ in samples.values():
        wave, rate = decode_audio(members["flac"])
        assert rate == 48000 and wave.shape[0] == 1 and wave.shape[1] > 20000
    assert samples["audio_stereo44k"][1]["text"] == ["stéréo sine", "正弦波"]
    assert samples["audio_stereo44k"][1]["original_data"]["channels"] == 2
    assert samples["audio_sub_tags_only"][1]["text"] == ["the sound of beep and tone"]
    assert samples["audio_sub_tags_only"][1]["tags"] == ["beep", "tone"]
    sizes = json.loads((out / "sizes.json").read_text())
    assert sizes == {"train-000000.tar": 2, "train-000001.tar": 2}
    reasons = {item["audio"].rsplit("/", 1)[-1]: item["reason"] for item in report["skipped"]}
    assert set(reasons) == {"missing.wav", "other.wav", "uncaptioned.wav", "corrupt.flac", "truncated.flac", "empty.wav"}
    assert reasons["missing.wav"] == "missing file" and "empty" in reasons["empty.wav"]
    assert reasons["uncaptioned.wav"] == "no caption or tags" and reasons["other.wav"] == "repeated key"
    merged = samples["audio_mono16k"][1]
    assert merged["text"] == ["a sine", "ein Sinus, schön", "a second caption"]
    assert merged["tags"] == ["tone", "sine", "beep"]
    assert merged["original_data"]["split_note"] == "later" and report["num_merged_rows"] == 2
    assert "undecodable" in reasons["corrupt.flac"] and "undecodable" in reasons["truncated.flac"]
    assert report["written"] == 4 and report["num_skipped"] == 6
    assert report["hours"] == pytest.approx((0.5 + 0.7 + 0.6 + 0.55) / 3600, rel=0.02)
    assert json.loads((out / "report.json").read_text()) == report


def test_shuffle_is_deterministic_and_independent_of_workers(csv_manifest, tmp_path):
    rows = read_manifest(csv_manifest)
    make_shards(rows, tmp_path / "a", samples_per_shard=3, num_workers=0, seed=1)
    make_shards(rows, tmp_path / "b", samples_per_shard=3, num_workers=0, seed=1)
    make_shards(rows, tmp_path / "c", samples_per_shard=3, num_workers=0, seed=2)
    order = {name: list(read_all(tmp_path / name)) for name in "abc"}
    assert order["a"] == order["b"]
    assert (tmp_path / "a" / "train-000000.tar").read_bytes() == (tmp_path / "b" / "train-000000.tar").read_bytes()
    assert sorted(order["a"]) == sorted(order["c"])


def test_rerun_is_refused_and_resume_skips_written_keys(csv_manifest, tmp_path):
    out = tmp_path / "shards"
    rows = read_manifest(csv_manifest)
    make_shards(rows[:2], out, samples_per_shard=1, seed=0, run={"manifest": "m"})
    with pytest.raises(SystemExit, match="not empty"):
        make_shards(rows, out, samples_per_shard=1, seed=0, run={"manifest": "m"})
    with pytest.raises(SystemExit, match="different settings"):
        make_shards(rows, out, samples_per_shard=1, seed=5, resume=True, run={"manifest": "m"})
    (out / "train-000009.tar.tmp").write_bytes(b"partial")
    report = make_shards(rows, out, samples_per_shard=1, seed=0, resume=True, run={"manifest": "m"})
    assert report["already_present"] == 2 and report["written"] == 2
    assert sorted(report["shards"]) == ["train-000002.tar", "train-000003.tar"]
    assert len(read_all(out)) == 4 and not list(out.glob("*.tmp"))
    assert sum(json.loads((out / "sizes.json").read_text()).values()) == 4


def test_audio_dir_with_sidecars(tmp_path):
    root = tmp_path / "clips"
    write_audio(root / "a.wav", 0.5, 16000)
    (root / "a.txt").write_text("first caption\nsecond caption\n", encoding="utf-8")
    write_audio(root / "deep" / "b.flac", 0.5, 44100, 2)
    (root / "deep" / "b.json").write_text(json.dumps({"text": "b caption", "tags": ["x"], "license": "CC0"}))
    write_audio(root / "c.wav", 0.5, 16000)
    rows, skipped = scan_audio_dir(root)
    assert [row["key"] for row in rows] == ["a", "deep_b"]
    assert rows[0]["text"] == ["first caption", "second caption"]
    assert rows[1]["original_data"]["license"] == "CC0" and rows[1]["tags"] == ["x"]
    assert skipped == [{"audio": "c.wav", "reason": "no caption sidecar (.txt or .json)"}]
    assert main(["--audio-dir", str(root), "--out", str(tmp_path / "out"), "--workers", "0"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["written"] == 2 and report["skipped"][0]["audio"] == "c.wav"


@pytest.mark.slow
def test_cli_with_worker_processes(csv_manifest, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "data_pipelines.make_shards", "--manifest", str(csv_manifest), "--out", str(out)]
    result = subprocess.run(
        command + ["--workers", "2", "--samples-per-shard", "3"], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "wrote 4 samples" in result.stderr and "corrupt.flac" in result.stderr
    assert json.loads((out / "sizes.json").read_text()) == {"train-000000.tar": 3, "train-000001.tar": 1}
    again = subprocess.run(command + ["--workers", "0"], check=False, capture_output=True, text=True)
    assert again.returncode != 0 and "--resume" in again.stderr


def test_bad_manifest_is_one_line(tmp_path):
    (tmp_path / "m.csv").write_text("file,caption\nx.wav,c\n")
    for manifest, message in ((tmp_path / "missing.jsonl", "No such file"), (tmp_path / "m.csv", "no 'audio' column")):
        with pytest.raises(SystemExit) as error:
            main(["--manifest", str(manifest), "--out", str(tmp_path / "o")])
        assert str(error.value).startswith("make_shards: --manifest: ") and message in str(error.value)
