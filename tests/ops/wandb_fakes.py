"""W&B test helpers: an isolated offline environment, the offline run file, and a local stand-in for
`wandb.Api` (there is no W&B server here)."""

from __future__ import annotations

import shutil
from pathlib import Path


def wandb_env(tmp_path: Path) -> dict:
    """Environment for an offline W&B run that writes nothing outside `tmp_path`."""
    dirs = {name: str(tmp_path / "wandb_home" / name.lower()) for name in
            ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR")}
    return {"WANDB_MODE": "offline", "HOME": str(tmp_path / "home"), **dirs}


def offline_run_file(run_dir: Path, run_id: str) -> Path:
    found = sorted(run_dir.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert found, f"no offline W&B run {run_id} under {run_dir / 'wandb'}"
    return found[-1]


class FakeArtifact:
    def __init__(self, source: Path):
        self.source = source

    def download(self, root: str) -> str:
        Path(root).mkdir(parents=True, exist_ok=True)
        shutil.copy(self.source, Path(root) / "model.ckpt")
        return root


class FakeApi:
    """Local stand-in for `wandb.Api`: `.artifact(name).download(root)` copies the checkpoint `source`
    instead of downloading the artifact `name` (recorded in `requested`)."""

    def __init__(self, source: Path, requested: list[str]):
        self.source, self.requested = source, requested

    def artifact(self, name: str, type: str | None = None) -> FakeArtifact:
        self.requested.append(name)
        return FakeArtifact(self.source)
