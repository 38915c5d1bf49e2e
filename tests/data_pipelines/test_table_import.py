"""Parquet / Arrow tables laid out as Hugging Face `datasets` writes them -> manifest -> shards."""

import subprocess
import sys

import pytest

pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq

from data_pipelines.import_dataset import main
from data_pipelines.make_shards import make_shards
from data_pipelines.manifest import read_manifest
from data_pipelines.shards import iter_tar, read_meta
from tests.data_pipelines.conftest import ENV, write_audio

AUDIO = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # datasets.Audio's storage type


def clips(tmp_path, n=3):
    return [write_audio(tmp_path / "src" / f"clip{i}.flac", 0.2 + 0.05 * i, 16000) for i in range(n)]


def test_parquet_with_audio_bytes_one_row_per_caption(tmp_path):
    files = clips(tmp_path)
    rows = [(files[0], "a first caption", ["dog"]), (files[0], "a second caption", ["bark", "dog"]),
            (files[1], "clip one", []), (files[2], "clip two", ["x"])]
    table = pa.table({
        "audio": pa.array([{"bytes": f.read_bytes(), "path": f.name} for f, _, _ in rows], AUDIO),
        "caption": [c for _, c, _ in rows], "labels": [t for _, _, t in rows], "source": ["freesound"] * 4,
    })
    pq.write_table(table, tmp_path / "train.parquet", row_group_size=2)  # 2 record batches: streamed
    for f in files:
        f.unlink()  # only the table holds the audio now
    out = tmp_path / "m.jsonl"
    assert main(["table", "--root", str(tmp_path / "train.parquet"), "--out", str(out), "--tag-columns", "labels"]) == 0
    report = make_shards(read_manifest(out), tmp_path / "shards")
    assert report["written"] == 3 and report["num_merged_rows"] == 1
    samples = {k: read_meta(m) for k, m in iter_tar(tmp_path / "shards" / "train-000000.tar")}
    assert samples["clip0"]["text"] == ["a first caption", "a second caption"]
    assert samples["clip0"]["tags"] == ["dog", "bark"]
    assert samples["clip1"]["original_data"]["source"] == "freesound"
    assert sorted(p.name for p in (tmp_path / "m_audio").iterdir()) == ["clip0.flac", "clip1.flac", "clip2.flac"]


def test_save_to_disk_arrow_stream_files_with_paths(tmp_path):
    files = clips(tmp_path, 4)
    disk = tmp_path / "ds"
    disk.mkdir()
    for shard, part in enumerate((files[:2], files[2:])):  # data-0000k-of-00002.arrow: IPC streams
        table = pa.table({"file": [str(f) for f in part], "captions": [[f"{f.stem} a", f"{f.stem} b"] for f in part],
                          "id": [f"id_{f.stem}" for f in part]})
        with pa.ipc.new_stream(disk / f"data-{shard:05d}-of-00002.arrow", table.schema) as writer:
            writer.write_table(table)
    (disk / "state.json").write_text("{}")
    out = tmp_path / "m.jsonl"
    assert main(["table", "--root", str(disk), "--out", str(out), "--audio-column", "file",
                 "--text-columns", "captions", "--key-column", "id"]) == 0
    rows = read_manifest(out)
    assert [r["key"] for r in rows] == ["id_clip0", "id_clip1", "id_clip2", "id_clip3"]
    assert rows[3]["text"] == ["clip3 a", "clip3 b"] and rows[3]["audio"] == str(files[3])
    assert make_shards(rows, tmp_path / "shards")["written"] == 4


@pytest.mark.parametrize("flags, message", [
    (["--audio-column", "sound"], "--audio-column 'sound' is not a column"),
    (["--text-columns", "text"], "--text-columns 'text' is not a column"),
    (["--text-columns", ","], "--text-columns needs one or more"),
])
def test_bad_column_flags_are_one_line(tmp_path, flags, message):
    pq.write_table(pa.table({"audio": ["x.wav"], "caption": ["c"]}), tmp_path / "t.parquet")
    argv = ["table", "--root", str(tmp_path / "t.parquet"), "--out", str(tmp_path / "m.jsonl"), *flags]
    if flags[0] == "--audio-column":  # once through the real entry point: what the user sees on stderr
        result = subprocess.run([sys.executable, "-m", "data_pipelines.import_dataset", *argv], capture_output=True,
                                text=True, check=False, env=ENV)
        assert result.returncode != 0 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as error:
        main(argv)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_missing_files_are_left_out(tmp_path, capsys):
    pq.write_table(pa.table({"audio": ["nowhere.wav"], "caption": ["c"]}), tmp_path / "t.parquet")
    assert main(["table", "--root", str(tmp_path / "t.parquet"), "--out", str(tmp_path / "m.jsonl")]) == 0
    assert "1 left out" in capsys.readouterr().err and (tmp_path / "m.jsonl").read_text() == ""
