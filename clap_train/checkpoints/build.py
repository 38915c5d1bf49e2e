"""Models from stored configs (checkpoints, W&B artifacts, `resume=`, fine-tuning inits), built safely.

A config read from a file is data, never code: nothing in it is instantiated by Hydra or imported. A
model config is a tree of plain nodes, each `{"_target_": NAME, ARGUMENT: value, ...}`; NAME must be a
key of the allow-list in `clap_train.models.registry` for its slot (the CLAP model at the root, an
audio encoder / text encoder / front end below it) and every argument must be one of that class's
constructor parameters. Values are plain: None, bool, int, float, str, or lists of those. Anything
else is refused with a one-line `UnsafeConfigError` naming the field, e.g.
`model.audio_encoder._target_`: foreign targets, `_partial_` / `_args_` / `_recursive_` / `_convert_`,
nodes inside lists, and strings holding `${` (OmegaConf interpolations and resolvers such as
`${oc.env:...}`, which would run when resolved).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

from torch import nn

from clap_train.models.registry import MODELS, NESTED, RETIRED_ARGUMENTS

PLAIN = (type(None), bool, int, float, str)


class UnsafeConfigError(ValueError):
    """A stored config names something clap_train will not build; the message names the field."""


def check_plain(value, path: str, source: str) -> None:
    """Raise `UnsafeConfigError` naming `path` unless `value` is plain data: scalars, lists and dicts of them,
    with no `_`-prefixed keys (Hydra's `_target_`, `_partial_`, ...) and no `${` in any string."""
    if isinstance(value, str):
        if "${" in value:
            raise UnsafeConfigError(f"{source}: {path}: interpolations ('${{...}}') are not allowed in a stored "
                                    f"config, got {value[:80]!r}")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise UnsafeConfigError(f"{source}: {path}: keys must be strings, got {key!r}")
            if key.startswith("_"):
                raise UnsafeConfigError(f"{source}: {path}.{key}: not allowed in a stored config "
                                        "(nothing read from a file is instantiated)")
            check_plain(item, f"{path}.{key}", source)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_plain(item, f"{path}[{index}]", source)
    elif not isinstance(value, PLAIN):
        raise UnsafeConfigError(f"{source}: {path}: {type(value).__name__} is not a plain config value")


def _check_argument(value, path: str, source: str, in_list: bool = False) -> None:
    """A constructor argument: a plain scalar or a (nested) list of plain scalars; no nodes, no interpolations."""
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_argument(item, f"{path}[{index}]", source, in_list=True)
    elif isinstance(value, Mapping):
        if "_target_" in value:
            where = "targets inside lists are not allowed" if in_list else "a nested config is only allowed where " \
                "the class takes a module"
            raise UnsafeConfigError(f"{source}: {path}._target_: {where}")
        raise UnsafeConfigError(f"{source}: {path}: only plain values are allowed here (no mappings)")
    else:
        check_plain(value, path, source)


def _build_node(node, path: str, allowed: dict[str, type], source: str, build: bool = True) -> nn.Module | None:
    if not isinstance(node, Mapping):
        raise UnsafeConfigError(f"{source}: {path}: expected a config node with a _target_, got "
                                f"{type(node).__name__}")
    target = node.get("_target_")
    if not isinstance(target, str) or target not in allowed:
        raise UnsafeConfigError(f"{source}: {path}._target_: {target!r} is not one of clap_train's classes "
                                f"here {sorted(allowed)}")
    cls = allowed[target]
    parameters = [name for name in inspect.signature(cls).parameters if name not in ("self", "args", "kwargs")]
    nested = NESTED.get(cls, {})
    kwargs = {}
    for key, value in node.items():
        field = f"{path}.{key}"
        if key == "_target_":
            continue
        if not isinstance(key, str) or key.startswith("_"):
            raise UnsafeConfigError(f"{source}: {field}: not allowed in a stored config "
                                    "(nothing read from a file is instantiated)")
        if key in RETIRED_ARGUMENTS.get(cls, ()):
            check_plain(value, field, source)
            continue  # e.g. a tower's old `pretrained` init path: the checkpoint holds the trained weights
        if key not in parameters:
            raise UnsafeConfigError(f"{source}: {field}: {cls.__name__} takes no argument {key!r}")
        if key in nested:
            kwargs[key] = _build_node(value, field, nested[key], source, build)
        else:
            _check_argument(value, field, source)
            kwargs[key] = value
    missing = [name for name in nested if name not in kwargs]
    if missing:
        raise UnsafeConfigError(f"{source}: {path}.{missing[0]}: missing (a config node with a _target_)")
    if not build:
        return None
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: {path}: {exc}") from None


def build_model_from_config(config: Mapping, source: str, path: str = "model") -> nn.Module:
    """An untrained model built from a stored model config through the allow-list (module docstring).

    Args:
        config: the model node, e.g. a clap_train checkpoint's `clap_train_config["model"]`.
        source: the file or URL it came from, for error messages.
        path: the config path of `config`, for error messages.
    Raises:
        UnsafeConfigError (a ValueError): a foreign target, an unknown argument, a Hydra key or an
            interpolation, naming the field. ValueError: a constructor refused a value (naming the field).
    """
    return _build_node(config, path, MODELS, source)


def check_model_config(config: Mapping, source: str, path: str = "model") -> None:
    """Check a stored model config as `build_model_from_config` would, without building anything (cheap, for
    checkpoints a launch resumes from). Raises UnsafeConfigError naming the field."""
    _build_node(config, path, MODELS, source, build=False)


def stored_model_config(checkpoint, source: str) -> Mapping:
    """The model node of a loaded clap_train checkpoint (`clap_train_config["model"]`).

    Raises:
        KeyError: the checkpoint carries no clap_train config with a model entry.
    """
    config = checkpoint.get("clap_train_config") if isinstance(checkpoint, Mapping) else None
    if not isinstance(config, Mapping) or not isinstance(config.get("model"), Mapping):
        raise KeyError(f"{source}: not a clap_train checkpoint (no 'clap_train_config' with a 'model' entry)")
    return config["model"]
