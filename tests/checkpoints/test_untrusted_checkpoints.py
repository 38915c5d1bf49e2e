"""Checkpoints from strangers never run code, through every loading path; bad files give one line.

Each crafted checkpoint carries a config whose `_target_` would create a marker file if it were
instantiated (`pathlib.Path.touch`; `test_the_payload_is_live` shows Hydra would do it). Loading paths
covered: `load_model` (in-process, every case), `python -m clap_train.evaluate`, `python -m
clap_train.export` and `python -m clap_train resume=...` (real subprocesses). Each asserts the marker
never appears and the one-line error names the offending field.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from clap_train import load_model
from clap_train.checkpoints import UnsafeConfigError, build_model_from_config
from tests.checkpoints.test_export import debug_model_config
from tests.ops._entry import TINY_DEMO, clean_env

REPO = Path(__file__).resolve().parents[2]
TOUCH = "pathlib.Path.touch"


def _payload(marker: Path) -> dict:
    """A node Hydra's instantiate turns into `Path.touch(marker)`."""
    return {"_target_": TOUCH, "_args_": [str(marker)]}


def _set(config: dict, dotted: str, value) -> dict:
    """A copy of `config` with `value` at `dotted` (`a.b.c` or `a.b[1]`)."""
    config = copy.deepcopy(config)
    node, *parts = config, *dotted.split(".")
    for part in parts[:-1]:
        node = node[part]
    last = parts[-1]
    if last.endswith("]"):
        name, index = last[:-1].split("[")
        node[name][int(index)] = value
    else:
        node[last] = value
    return config


def _crafted(marker: Path) -> dict[str, tuple[dict, str]]:
    """{case: (model config, the field path the error must name)} over the CNN14 + RoBERTa debug preset."""
    base = debug_model_config(False, "debug")
    touch = _payload(marker)
    return {
        "foreign_root_target": ({**touch}, "model._target_"),
        "foreign_tower_target": (_set(base, "audio_encoder", touch), "model.audio_encoder._target_"),
        "target_as_an_argument": (_set(base, "text_encoder.vocab_size", touch), "model.text_encoder.vocab_size._target_"),
        "target_inside_a_list": (_set(base, "audio_encoder.channels[1]", touch), "model.audio_encoder.channels[1]._target_"),
        "nested_list_target": (_set(base, "audio_encoder.channels[1]", [[touch]]),
                               "model.audio_encoder.channels[1][0][0]._target_"),
        "partial": (_set(base, "frontend._partial_", True), "model.frontend._partial_"),
        "args": (_set(base, "_args_", [str(marker)]), "model._args_"),
        "recursive": (_set(base, "text_encoder._recursive_", False), "model.text_encoder._recursive_"),
        "convert": (_set(base, "_convert_", "all"), "model._convert_"),
        "env_resolver": (_set(base, "frontend.mel_scale", "${oc.env:HOME}"), "model.frontend.mel_scale"),
        "custom_resolver": (_set(base, "embed_dim", "${touch_marker:" + str(marker) + "}"), "model.embed_dim"),
        "unknown_argument": (_set(base, "audio_encoder.hook", "x"), "model.audio_encoder.hook"),
        "tower_in_the_wrong_slot": (_set(base, "text_encoder", base["audio_encoder"]), "model.text_encoder._target_"),
    }


@pytest.fixture(autouse=True)
def touch_resolver():
    """A resolver that writes the marker when OmegaConf resolves `${touch_marker:PATH}`."""
    OmegaConf.register_new_resolver("touch_marker", lambda path: Path(path).touch() or 1, replace=True)
    yield
    OmegaConf.clear_resolver("touch_marker")


def _save(path: Path, model_config: dict, data: dict | None = None) -> Path:
    torch.save({"clap_train_config": {"model": model_config, "data": data or {}}, "state_dict": {},
                "global_step": 1}, path)
    return path


def test_the_payload_is_live(tmp_path):
    """What the old loader did with a stored config (Hydra instantiate) does write the marker."""
    from hydra.utils import instantiate

    instantiate(OmegaConf.create(_payload(tmp_path / "live")))
    assert (tmp_path / "live").exists()
    OmegaConf.create({"x": "${touch_marker:" + str(tmp_path / "resolved") + "}"}).x  # noqa: B018 (resolves)
    assert (tmp_path / "resolved").exists()


@pytest.mark.parametrize("case", sorted(_crafted(Path("m"))))
def test_load_model_refuses_crafted_configs(case, tmp_path):
    marker = tmp_path / "marker"
    config, field = _crafted(marker)[case]
    with pytest.raises(UnsafeConfigError) as error:
        load_model(_save(tmp_path / "crafted.ckpt", config))
    message = str(error.value)
    assert field in message and str(tmp_path / "crafted.ckpt") in message and "\n" not in message, message
    assert not marker.exists()


def test_build_model_from_config_accepts_the_presets_and_old_target_names():
    model = build_model_from_config(debug_model_config(False), "preset")
    assert type(model).__name__ == "CLAPModel" and type(model.audio_encoder).__name__ == "HTSATEncoder"
    old = _set(debug_model_config(False), "frontend._target_", "clap_train.models.audio.frontend.LogMelFrontend")
    assert build_model_from_config(old, "old").frontend.n_mels == 16  # checkpoints from before issue 12
    with pytest.raises(ValueError, match=r"old: model.frontend: mel_scale must be 'slaney' or 'htk'"):
        build_model_from_config(_set(old, "frontend.mel_scale", "x"), "old")


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = tmp_path / "good.pt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, good)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (tmp_path / "empty.ckpt").write_bytes(b"")
    (tmp_path / "random.ckpt").write_bytes(os.urandom(4096))
    (tmp_path / "text.ckpt").write_text("not a checkpoint\n")
    (tmp_path / "plain_dir").mkdir()
    (tmp_path / "sharded.ckpt").mkdir()
    (tmp_path / "sharded.ckpt" / "meta.pt").write_bytes(b"")
    torch.save({"args": __import__("argparse").Namespace(lr=1)}, tmp_path / "objects.ckpt")
    return {
        "truncated": (truncated, "truncated or corrupt zip archive"),
        "empty": (tmp_path / "empty.ckpt", "an empty file"),
        "random_bytes": (tmp_path / "random.ckpt", "not a torch checkpoint"),
        "text_file": (tmp_path / "text.ckpt", "not a torch checkpoint"),
        "plain_directory": (tmp_path / "plain_dir", "not a transformers CLAP directory"),
        "sharded_directory": (tmp_path / "sharded.ckpt", "a sharded (DCP) training checkpoint directory"),
        "pickled_objects": (tmp_path / "objects.ckpt", "weights_only=True) refuses"),
    }


def test_bad_files_give_one_line_naming_the_file(tmp_path):
    for name, (path, what) in _bad_files(tmp_path).items():
        with pytest.raises((ValueError, FileNotFoundError)) as error:
            load_model(path)
        message = str(error.value)
        assert message.startswith(str(path)) and what in message and "\n" not in message, (name, message)


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = clean_env(tmp_path)
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                          check=False)


def _assert_refused(run: subprocess.CompletedProcess, field: str, marker: Path) -> None:
    output = run.stdout + run.stderr
    assert run.returncode == 2, output[-3000:]
    assert field in output and "Traceback" not in output, output[-3000:]
    assert len([line for line in output.splitlines() if field in line]) == 1
    assert not marker.exists()


EVALUATE_CASES = ("target_inside_a_list", "env_resolver")  # every case runs through load_model above


@pytest.mark.slow  # a subprocess per case (imports torch, Lightning, Hydra): 5-30 s each on the shared 2 cores
@pytest.mark.parametrize("case", EVALUATE_CASES)
def test_evaluate_refuses_crafted_checkpoints(case, tmp_path):
    marker = tmp_path / "marker"
    config, field = _crafted(marker)[case]
    checkpoint = _save(tmp_path / "crafted.ckpt", config)
    (tmp_path / "x.tar").touch()  # the shard exists (evaluate checks its inputs first), the checkpoint is refused
    run = _run(["-m", "clap_train.evaluate", f"checkpoint={checkpoint}", f"data.val_shards.x={tmp_path}/x.tar"],
               tmp_path)
    _assert_refused(run, field, marker)


@pytest.mark.slow
def test_evaluate_refuses_crafted_stored_data_settings(tmp_path):
    marker = tmp_path / "marker"
    checkpoint = _save(tmp_path / "crafted.ckpt", debug_model_config(False, "debug"),
                       data={"tokenizer": "${oc.env:HOME}", "val_shards": {"x": _payload(marker)}})
    run = _run(["-m", "clap_train.evaluate", f"checkpoint={checkpoint}"], tmp_path)
    _assert_refused(run, "data.tokenizer", marker)


@pytest.mark.slow
@pytest.mark.parametrize("case", ("partial",))
def test_export_refuses_crafted_checkpoints(case, tmp_path):
    marker = tmp_path / "marker"
    config, field = _crafted(marker)[case]
    run = _run(["-m", "clap_train.export", str(_save(tmp_path / "crafted.ckpt", config)), str(tmp_path / "out")],
               tmp_path)
    _assert_refused(run, field, marker)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("case", ("foreign_tower_target",))
def test_resume_refuses_crafted_checkpoints(case, tmp_path):
    marker = tmp_path / "marker"
    config, field = _crafted(marker)[case]
    checkpoint = _save(tmp_path / "crafted.ckpt", config)
    run = _run(["-m", "clap_train", *TINY_DEMO, "run_name=crafted", f"resume={checkpoint}"], tmp_path)
    _assert_refused(run, field, marker)
    assert not list((tmp_path / "runs" / "crafted").glob("**/*.ckpt"))


@pytest.mark.slow
def test_entry_points_give_one_line_for_bad_files(tmp_path):
    files = _bad_files(tmp_path)
    for args, (path, what) in (
        (["-m", "clap_train.evaluate", f"checkpoint={files['truncated'][0]}"], files["truncated"]),
        (["-m", "clap_train.export", str(files["random_bytes"][0]), str(tmp_path / "out")], files["random_bytes"]),
        (["-m", "clap_train", *TINY_DEMO, "run_name=bad", f"resume={files['empty'][0]}"], files["empty"]),
    ):
        run = _run(args, tmp_path)
        output = run.stdout + run.stderr
        assert run.returncode == 2 and "Traceback" not in output, output[-3000:]
        assert [line for line in output.splitlines() if what in line and str(path) in line], output[-3000:]


def test_resume_check_covers_files_and_sharded_directories(tmp_path):
    """`resume=PATH`, `resume=wandb://...` downloads and run-directory checkpoints all pass through
    `check_resume_checkpoint` before Lightning reads them."""
    from clap_train.train import check_resume_checkpoint

    marker = tmp_path / "marker"
    config, field = _crafted(marker)["target_inside_a_list"]
    with pytest.raises(UnsafeConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        check_resume_checkpoint(_save(tmp_path / "crafted.ckpt", config))
    sharded = tmp_path / "sharded.ckpt"
    sharded.mkdir()
    _save(sharded / "meta.pt", _crafted(marker)["partial"][0])
    with pytest.raises(UnsafeConfigError, match="model.frontend._partial_"):
        check_resume_checkpoint(sharded)
    check_resume_checkpoint(_save(tmp_path / "fine.ckpt", debug_model_config(False)))
    assert not marker.exists()
