"""`python -m clap_train.embed`: a folder of mixed files, manifests, shards and captions."""

import numpy as np
import pytest
import soundfile as sf
import torch

from clap_train import load_model
from clap_train.inference import embed_audio, embed_text
from clap_train.inference.runner import default_workers, embed_entries, ready_for_inference
from clap_train.inference.sources import list_entries
from tests.inference.conftest import CORRUPT, FILES, run_cli


def mono(path) -> tuple[np.ndarray, int]:
    wave, rate = sf.read(path, dtype="float32", always_2d=True)
    return wave.mean(axis=1), rate


@pytest.fixture(scope="module")
def embedded(demo_sources, audio_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("embed")
    runs = [run_cli("clap_train.embed", "--checkpoint", demo_sources["hf"], "--audio", audio_folder,
                    "--out", out / f"run{i}.npz", "--num-workers", workers, "--batch-size", 2)
            for i, workers in enumerate((0, 2))]
    for run in runs:
        assert run.returncode == 0, run.stderr[-3000:]
    return [np.load(out / f"run{i}.npz") for i in range(2)], runs


def test_embed_folder_matches_embed_audio_and_lists_the_corrupt_file(embedded, demo_sources, audio_folder):
    (data, _), (run, _) = embedded
    expected_keys = sorted(name for name, *_ in FILES)
    assert list(data["keys"]) == expected_keys and data["embeddings"].dtype == np.float32
    assert data["embeddings"].shape == (len(FILES), 32) and list(data["failed"]) == [CORRUPT]
    assert CORRUPT in run.stderr and "skipped 1 unreadable" in run.stderr
    model = load_model(demo_sources["hf"])
    for key, row in zip(data["keys"], data["embeddings"]):
        wave, rate = mono(audio_folder / key)
        expected = embed_audio(model, [wave], rate)[0].numpy()
        np.testing.assert_allclose(row, expected, atol=2e-5, err_msg=key)


def test_two_runs_are_bitwise_identical_whatever_the_workers(embedded):
    (first, second), _ = embedded
    assert first["embeddings"].tobytes() == second["embeddings"].tobytes()
    assert list(first["keys"]) == list(second["keys"])


def test_existing_output_is_kept_unless_overwrite(embedded, demo_sources, audio_folder, tmp_path):
    out = tmp_path / "e.npz"
    out.write_bytes(b"keep me")
    run = run_cli("clap_train.embed", "--checkpoint", demo_sources["hf"], "--audio", audio_folder, "--out", out)
    assert run.returncode == 2 and out.read_bytes() == b"keep me"
    assert run.stderr.strip().splitlines()[-1] == f"clap_train.embed: error: --out: {out} exists; " \
                                                  "pass --overwrite to replace it"


def test_fused_clips_equal_embed_audio_clip_by_clip(demo_sources, audio_folder):
    model = load_model(demo_sources["hf_fused"])
    result = embed_entries(model, list_entries(audio_folder), batch_size=3, seed=4, progress=False)
    assert len(result.keys) == len(FILES) and [key for key, _ in result.failed] == [CORRUPT]
    for key, row in zip(result.keys, result.embeddings):
        wave, rate = mono(audio_folder / key)
        np.testing.assert_allclose(row, embed_audio(model, [wave], rate, seed=4)[0].numpy(), atol=2e-5, err_msg=key)


def test_text_lines_and_shards_and_manifests(demo_sources, audio_folder, tmp_path):
    captions = tmp_path / "captions.txt"
    captions.write_text("a dog barks\n\nrain on a roof\n")
    run = run_cli("clap_train.embed", "--checkpoint", demo_sources["hf"], "--text", captions, "--out", tmp_path / "t.npz")
    assert run.returncode == 0, run.stderr[-2000:]
    text = np.load(tmp_path / "t.npz")
    model = load_model(demo_sources["hf"])
    assert list(text["keys"]) == ["a dog barks", "rain on a roof"] and str(text["modality"]) == "text"
    np.testing.assert_allclose(text["embeddings"], embed_text(model, ["a dog barks", "rain on a roof"]).numpy(),
                               atol=1e-5)
    shard_entries = list_entries(f"{demo_sources['demo']}/val-*.tar")
    assert len(shard_entries) == 10 and shard_entries[0].key == "val_000000" and shard_entries[0].columns["tags"]
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"audio,label,fold\n{audio_folder / 'a/tone.wav'},tone,1\nb/missing.wav,noise,2\n")
    entries = list_entries(manifest)
    assert [e.columns["label"] for e in entries] == ["tone", "noise"] and entries[1].path == str(tmp_path / "b/missing.wav")
    result = embed_entries(model, entries, progress=False)
    assert result.keys == [str(audio_folder / "a/tone.wav")] and result.failed[0][0] == "b/missing.wav"
    with torch.no_grad():
        assert result.embeddings.shape == (1, 32)


def test_bad_inputs_are_one_line(demo_sources, tmp_path):
    run = run_cli("clap_train.embed", "--checkpoint", demo_sources["hf"], "--audio", tmp_path / "nothing",
                  "--out", tmp_path / "x.npz")
    assert run.returncode == 2 and run.stderr.strip().splitlines()[-1].startswith(
        "clap_train.embed: error: --audio: ")
    run = run_cli("clap_train.embed", "--checkpoint", demo_sources["hf"], "--audio", tmp_path, "--out", tmp_path / "x.bin")
    assert run.returncode == 2 and "must end with .npz" in run.stderr


def test_int8_precision_stays_close_to_float32(embedded, demo_sources, audio_folder, tmp_path):
    """--precision int8 quantizes every Linear layer (faster on the CPU: bench/embed.py)."""
    (data, _), _ = embedded
    run = run_cli("clap_train.embed", "--checkpoint", demo_sources["hf"], "--audio", audio_folder,
                  "--out", tmp_path / "int8.npz", "--num-workers", 0, "--batch-size", 2, "--precision", "int8")
    assert run.returncode == 0, run.stderr[-3000:]
    quantized = np.load(tmp_path / "int8.npz")
    assert list(quantized["keys"]) == list(data["keys"])
    cosine = (quantized["embeddings"] * data["embeddings"]).sum(axis=1)
    assert cosine.min() > 0.999 and not np.array_equal(quantized["embeddings"], data["embeddings"]), cosine
    model = ready_for_inference(load_model(demo_sources["hf"]), "cpu", precision="int8")
    assert not any(type(module) is torch.nn.Linear for module in model.modules())


def test_default_workers_leave_the_cpu_to_the_forward_pass():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert [default_workers(cpu, cores) for cores in (1, 2, 7, 8, 32)] == [0, 0, 0, 1, 4]
    assert [default_workers(gpu, cores) for cores in (1, 2, 16)] == [1, 1, 8]
