"""Weights in and out: transformers / LAION / clap_train checkpoints, pretrained tower inits, and the one
safe way to build a model from a stored config (`build_model_from_config`)."""

from clap_train.checkpoints.build import (
    UnsafeConfigError,
    build_model_from_config,
    check_model_config,
    stored_model_config,
)
from clap_train.checkpoints.load import load_model

__all__ = ["UnsafeConfigError", "build_model_from_config", "check_model_config", "load_model", "stored_model_config"]
