"""clap_train: distributed contrastive language-audio pretraining."""

__version__ = "0.1.0"


def load_model(source):
    """A ready `CLAPModel` (eval mode) from a checkpoint path; see `clap_train.checkpoints.load`."""
    # why: `import clap_train` stays light (no torch/transformers import until a model is loaded)
    from clap_train.checkpoints.load import load_model as _load_model

    return _load_model(source)
