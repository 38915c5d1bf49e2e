"""Standalone evaluation of any checkpoint `clap_train.load_model` reads.

    python -m clap_train.evaluate checkpoint=PATH data.val_shards.NAME=PATTERN [data.tokenizer=...]
        [evaluation.zeroshot.NAME={}] [out_dir=DIR] [logger=wandb]

Runs the validation path of training (`clap_train/evaluate_checkpoint.py`), so its metrics equal those
logged as `val/<set>/...` during training for the same checkpoint and data. Prints a table and writes
`metrics.json`, `report.html` (+ `clips/`) and `config.yaml` into `out_dir` (default
`<checkpoint dir>/eval`). Config: conf/evaluate.yaml; docs/evaluation.md.

This module imports neither torch nor Lightning: the config is composed and its paths checked
(`preflight.check_evaluate_inputs`) first, so a typo or a missing file is reported in seconds, in one
line `clap_train.evaluate: error: ...` with exit status 2.
"""

from __future__ import annotations

import sys

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

import clap_train.config_sets  # noqa: F401  (registers `open_sets` and `checkpoint_dir`, used by conf/evaluate.yaml)
from clap_train.cli import reporting_user_errors
from clap_train.preflight import check_evaluate_inputs, compose_config

PROG = "clap_train.evaluate"
CONFIG_ERRORS = (HydraException, OmegaConfBaseException)  # composition, interpolation, instantiation


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def hydra_main(cfg: DictConfig) -> None:
    from clap_train.evaluate_checkpoint import evaluate  # why: torch and Lightning load only after the checks

    with reporting_user_errors(PROG, CONFIG_ERRORS):
        evaluate(cfg)


def main() -> None:
    """A launch with plain overrides (no --cfg, --help, -m, ...) is composed and checked before the heavy imports."""
    if not any(arg.startswith("-") for arg in sys.argv[1:]):
        with reporting_user_errors(PROG, CONFIG_ERRORS):
            check_evaluate_inputs(compose_config("evaluate", sys.argv[1:]))
    hydra_main()


if __name__ == "__main__":
    main()
