"""Hydra entry point: `python -m clap_train +experiment=htsat_roberta [key=value ...]`.

Before torch and Lightning are imported: the OpenMP spin policy is set (`cpu_threads.set_spin_policy`)
and, for a launch with plain overrides, the config is composed and checked (`preflight.py`), so
bad input is reported in seconds. User errors end with one line `clap_train: error: ...` and exit status 2
(`clap_train/cli.py`); a launch that fails so leaves no run directory behind unless one existed before.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from clap_train.training.cpu_threads import set_spin_policy

set_spin_policy()  # must precede the first import of torch (OpenMP reads it when it loads)

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from clap_train.cli import reporting_user_errors

PROG = "clap_train"
CONFIG_ERRORS = (HydraException, OmegaConfBaseException)  # composition, interpolation, instantiation
_new_run_dir: Path | None = None  # the run directory this launch creates (it did not exist before)


def preflight(argv: list[str]) -> None:
    """Compose and check the config of a launch given only overrides (no --cfg, --help, -m, ...)."""
    global _new_run_dir
    if any(arg.startswith("-") for arg in argv):
        return
    from clap_train.preflight import check_config, compose_train_config  # why: only plain launches compose early

    with reporting_user_errors(PROG, CONFIG_ERRORS):
        cfg = compose_train_config(argv)
        check_config(cfg)
        run_dir = Path(cfg.run_dir)
    _new_run_dir = None if run_dir.exists() else run_dir


def remove_new_run_dir() -> None:
    """Remove the run directory of a launch that failed before it saved anything (Hydra creates it first)."""
    run_dir = _new_run_dir
    if run_dir is not None and run_dir.is_dir() and not any((run_dir / "checkpoints").glob("*")):
        shutil.rmtree(run_dir, ignore_errors=True)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def hydra_main(cfg: DictConfig) -> None:
    from clap_train.train import train  # why: torch and Lightning load only after the checks

    try:
        with reporting_user_errors(PROG, CONFIG_ERRORS):
            train(cfg)
    except SystemExit as exc:
        if exc.code == 2:  # a user error (cli.EXIT_USER_ERROR)
            remove_new_run_dir()
        raise


def main() -> None:
    # why: importing it registers `open_sets` (conf/train.yaml) before Hydra composes
    import clap_train.config_sets  # noqa: F401

    preflight(sys.argv[1:])
    hydra_main()


if __name__ == "__main__":
    main()
