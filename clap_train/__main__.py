"""Hydra entry point: `python -m clap_train +experiment=htsat_roberta [key=value ...]`."""

from __future__ import annotations

import sys

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from clap_train.train import train

# Errors a user fixes in their config or paths: report them in one line instead of a stack trace.
USER_ERRORS = (FileNotFoundError, ValueError, KeyError, InstantiationException)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    try:
        train(cfg)
    except USER_ERRORS as exc:
        print(f"clap_train: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
