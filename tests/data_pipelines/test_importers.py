import json
import subprocess
import sys

import pytest

from data_pipelines.importers import import_audiocaps, import_clotho, import_esc50, import_tags
from data_pipelines.make_shards import main as make_shards_main
from data_pipelines.manifest import read_manifest
from data_pipelines.shards import iter_tar, read_meta
from tests.data_pipelines.conftest import write_audio


def write_lines(path, lines, encoding="utf-8"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding=encoding)
    return path


def by_key(rows):
    return {row["key"]: row for row in rows}


def test_audiocaps_layout(tmp_path):
    root = tmp_path / "audiocaps"
    write_lines(
        root / "dataset" / "train.csv",
        [
            "audiocap_id,youtube_id,start_time,caption",
            "91139,r1nicOVtvkQ,130,A woman talks nearby as water pours",
            "58146,UDGBjjwyaqE,20,Multiple clanging and clanking sounds",
            "11,missingClip,0,never downloaded",
            '777,-abcDEF_123,30,"A dog barks, then a car passes"',
        ],
    )
    write_lines(
        root / "dataset" / "val.csv",
        ["audiocap_id,youtube_id,start_time,caption", "1,valClip,0,first", "2,valClip,0,second"],
    )
    write_audio(root / "audio" / "train" / "Yr1nicOVtvkQ.wav", 0.5)
    write_audio(root / "audio" / "train" / "58146.wav", 0.5)
    write_audio(root / "audio" / "train" / "-abcDEF_123_30000.flac", 0.5)
    write_audio(root / "audio" / "val" / "valClip_0.wav", 0.5)
    rows, missing = import_audiocaps(root, "train")
    rows = by_key(rows)
    assert sorted(rows) == ["-abcDEF_123_30000", "58146", "Yr1nicOVtvkQ"]
    assert rows["-abcDEF_123_30000"]["text"] == ["A dog barks, then a car passes"]
    assert rows["Yr1nicOVtvkQ"]["original_data"]["start_time"] == "130"
    assert missing == [{"id": "missingClip", "reason": "audio file not found"}]
    val, _ = import_audiocaps(root, "val")
    assert [row["text"] for row in val] == [["first", "second"]]
    with pytest.raises(ValueError, match="split"):
        import_audiocaps(root, "dev")


def test_clotho_layout_with_latin1_metadata(tmp_path):
    root = tmp_path / "clotho"
    header = "file_name,caption_1,caption_2,caption_3,caption_4,caption_5"
    write_lines(
        root / "clotho_captions_development.csv",
        [header, "Santa Motor.wav,a motor hums,an engine idles,c3,c4,c5", "pug 1.14.wav,a pug breathes,,,,"],
    )
    write_lines(
        root / "clotho_metadata_development.csv",
        ["file_name,keywords,sound_id,license", "Santa Motor.wav,motor;engine;café,1234,CC0"],
        encoding="latin-1",
    )
    write_audio(root / "clotho_audio_development" / "development" / "Santa Motor.wav", 0.5)
    write_audio(root / "clotho_audio_development" / "development" / "pug 1.14.wav", 0.5)
    write_audio(root / "clotho_audio_evaluation" / "evaluation" / "Santa Motor.wav", 0.5)
    rows, missing = import_clotho(root, "development")
    rows = by_key(rows)
    assert missing == [] and sorted(rows) == ["Santa Motor", "pug 1_14"]
    motor = rows["Santa Motor"]
    assert motor["text"] == ["a motor hums", "an engine idles", "c3", "c4", "c5"]
    assert motor["tags"] == ["motor", "engine", "café"] and motor["original_data"]["sound_id"] == "1234"
    assert "development" in motor["audio"] and rows["pug 1_14"]["text"] == ["a pug breathes"]


def test_esc50_layout_and_cli(tmp_path):
    root = tmp_path / "ESC-50-master"
    write_lines(
        root / "meta" / "esc50.csv",
        [
            "filename,fold,target,category,esc10,src_file,take",
            "1-100032-A-0.wav,1,0,dog,True,100032,A",
            "2-100038-A-14.wav,2,14,chirping_birds,False,100038,A",
            "5-9032-A-0.wav,5,0,dog,True,9032,A",
        ],
    )
    for name in ("1-100032-A-0", "2-100038-A-14", "5-9032-A-0"):
        write_audio(root / "audio" / f"{name}.wav", 0.5, 44100)
    rows, missing = import_esc50(root, folds=[1, 2])
    assert [row["key"] for row in rows] == ["1-100032-A-0", "2-100038-A-14"] and missing == []
    assert rows[1]["text"] == ["the sound of chirping birds"] and rows[1]["tags"] == ["chirping birds"]
    assert rows[1]["original_data"]["fold"] == 2 and rows[1]["original_data"]["target"] == 14
    with pytest.raises(ValueError, match="folds"):
        import_esc50(root, folds=[6])

    manifest = tmp_path / "manifests" / "esc50.jsonl"
    command = [
        sys.executable,
        "-m",
        "data_pipelines.import_dataset",
        "esc50",
        "--root",
        str(root),
        "--out",
        str(manifest),
    ]
    result = subprocess.run(command, check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "3 clips" in result.stderr
    assert json.loads(manifest.read_text().splitlines()[0])["audio"] == "../ESC-50-master/audio/1-100032-A-0.wav"
    assert len(read_manifest(manifest)) == 3
    assert make_shards_main(["--manifest", str(manifest), "--out", str(tmp_path / "shards"), "--workers", "0"]) == 0
    metas = [read_meta(m) for _, m in iter_tar(tmp_path / "shards" / "train-000000.tar")]
    assert sorted(meta["original_data"]["fold"] for meta in metas) == [1, 2, 5]


def test_tags_audioset_layout_with_label_map(tmp_path):
    root = tmp_path / "audioset"
    write_lines(
        root / "balanced_train_segments.csv",
        [
            "# Segments csv created Sun Mar  5 10:54:31 2017",
            "# num_ytids=3, num_segs=3, num_unique_labels=3, num_positive_labels=4",
            "# YTID, start_seconds, end_seconds, positive_labels",
            '--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/t/dd00088"',
            '-0RWZT-miFs, 420.000, 430.000, "/m/03v3yw"',
            'notThere, 0.000, 10.000, "/m/09x0r"',
        ],
    )
    write_lines(
        root / "class_labels_indices.csv",
        [
            "index,mid,display_name",
            '0,/m/09x0r,"Speech"',
            '1,/t/dd00088,"Male speech, man speaking"',
            "2,/m/03v3yw,Keys jangling",
        ],
    )
    write_audio(root / "audios" / "Y--PJHxphWEs.wav", 0.5)
    write_audio(root / "audios" / "-0RWZT-miFs_420.wav", 0.5)
    rows, missing = import_tags(root, "balanced_train_segments.csv", root / "class_labels_indices.csv")
    rows = by_key(rows)
    speech = rows["audios_Y--PJHxphWEs"]
    assert speech["tags"] == ["Speech", "Male speech, man speaking"]
    assert speech["text"] == ["the sound of speech and male speech, man speaking"]
    assert speech["original_data"]["labels"] == ["/m/09x0r", "/t/dd00088"]
    assert rows["audios_-0RWZT-miFs_420"]["tags"] == ["Keys jangling"]
    assert missing == [{"id": "notThere", "reason": "audio file not found"}]


def test_tags_generic_csv(tmp_path):
    root = tmp_path / "sfx"
    write_lines(root / "labels.csv", ["path,labels", "clips/door.ogg,door; knock", "clips/none.wav,"])
    write_audio(root / "clips" / "door.ogg", 0.5, 44100, format="OGG", subtype="VORBIS")
    rows, missing = import_tags(root, "labels.csv")
    assert [(row["key"], row["tags"], row["text"]) for row in rows] == [
        ("clips_door", ["door", "knock"], ["the sound of door and knock"])
    ]
    assert missing == [{"id": "clips/none.wav", "reason": "no labels"}]
    with pytest.raises(ValueError, match="labels_column"):
        import_tags(root, "labels.csv", labels_column="classes")
