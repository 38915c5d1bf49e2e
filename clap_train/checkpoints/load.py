"""`load_model(source)`: a ready `CLAPModel` (eval mode) from any supported checkpoint.

Sources:
- a transformers CLAP directory (config.json + weights; `clap_train.checkpoints.hf`),
- a LAION-CLAP `.pt` (`clap_train.checkpoints.laion`),
- a clap_train Lightning checkpoint (`.ckpt`, carries its resolved config).
Weights are read with safetensors or `torch.load(weights_only=True)` (no pickled objects), and loaded
strictly: missing or unexpected keys raise, listing them. The model of a clap_train checkpoint is built
from its stored config through an allow-list of clap_train's own classes (`checkpoints.build`): nothing
in a file is instantiated or imported. A file that is none of these gives a one-line error naming it.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from clap_train.checkpoints.build import build_model_from_config, check_plain, stored_model_config
from clap_train.checkpoints.hf import load_hf_directory
from clap_train.checkpoints.laion import load_laion_checkpoint
from clap_train.checkpoints.state_dict import load_state_dict_strict, read_checkpoint_file

MODEL_PREFIX = "model."  # CLAPModule stores the CLAPModel as `self.model`


def load_clap_train_checkpoint(checkpoint: dict, source: str) -> nn.Module:
    """`CLAPModel` (eval mode) from a loaded clap_train checkpoint dict; see the module docstring.

    Raises:
        KeyError: no stored model config, or weights that do not match it. UnsafeConfigError (ValueError):
            a stored config clap_train will not build, naming the field.
    """
    model = build_model_from_config(stored_model_config(checkpoint, source), source)
    state_dict = checkpoint.get("state_dict")
    if not isinstance(state_dict, dict):
        raise KeyError(f"{source}: a clap_train checkpoint without a 'state_dict'")
    state = {k[len(MODEL_PREFIX):]: v for k, v in state_dict.items() if k.startswith(MODEL_PREFIX)}
    load_state_dict_strict(model, state, source)
    # Inference settings the model config leaves unset default to what the run's data config used.
    config = checkpoint["clap_train_config"]
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    tokenizer = data.get("tokenizer")
    if isinstance(tokenizer, str):
        check_plain(tokenizer, "data.tokenizer", source)
        if Path(tokenizer).exists():
            model.tokenizer_path = tokenizer  # read by clap_train.inference.embed_text
    if config["model"].get("clip_samples") is None and isinstance(data.get("clip_samples"), int):
        model.clip_samples = data["clip_samples"]
    return model.eval()


def load_model(source: str | Path) -> nn.Module:
    """Load a CLAP model in eval mode from `source` (see module docstring). A transformers directory's
    tokenizer.json, or a clap_train run's `data.tokenizer`, is attached as `model.tokenizer_path`.

    Raises:
        FileNotFoundError: missing path, or a directory without config.json / weights.
        KeyError: a key or shape mismatch, or a file that is none of the supported kinds.
        ValueError: a file torch cannot read safely (truncated, not a checkpoint), a stored config
            clap_train will not build (`UnsafeConfigError`), or an architecture clap_train does not
            implement (e.g. a LAION PANN checkpoint). Every message starts with the path.
    """
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"load_model: {path} does not exist")
    if path.is_dir():
        if (path / "meta.pt").is_file() or (path / ".metadata").is_file():
            raise ValueError(f"{path}: a sharded (DCP) training checkpoint directory, not a model checkpoint: "
                             "resume training from it, or train with "
                             "trainer.strategy.save_distributed_checkpoint=false for single-file checkpoints")
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: a directory without config.json: not a transformers CLAP directory "
                                    "(nor a clap_train or LAION checkpoint file)")
        return load_hf_directory(path)
    checkpoint = read_checkpoint_file(path)
    if isinstance(checkpoint, dict) and "clap_train_config" in checkpoint:
        return load_clap_train_checkpoint(checkpoint, str(path))
    return load_laion_checkpoint(checkpoint, str(path))  # raises KeyError if it is not one either
