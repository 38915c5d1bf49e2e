"""Apply activation checkpointing, `torch.compile` and FSDP2 to a single-device CLAP model, from outside.

The model code knows nothing of distribution. Each tower names its repeated units through `blocks()`
(Swin blocks, RoBERTa layers, conv blocks); this module applies, in order (as torchtitan does):

1. activation checkpointing per block, with `torch.distributed._composable.checkpoint`: the block's
   activations are recomputed in backward. It hooks the module in place, so parameter names (state-dict
   keys, optimizer groups, checkpoints) do not change. The towers' own `activation_checkpointing`
   constructor flags are an alternative for single-tower use; leave them off when this knob is on,
   or the blocks are checkpointed twice.
2. `torch.compile` per block (`nn.Module.compile`, in place, names unchanged). Compiling blocks rather than
   the whole model keeps graphs small and identical across repeated blocks, and leaves the data-dependent
   parts (fusion row selection, padding masks) eager.
3. FSDP2 (`fully_shard`) per block, then per tower, then the root, over the data-parallel mesh. The
   1-element logit scales and the projection heads belong to the root group.

The loss module may own parameters (the SigLIP bias); under FSDP it is a separate root, see `shard_module`.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn
from torch.distributed._composable import checkpoint
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard


def tower_blocks(model: nn.Module) -> Iterator[nn.Module]:
    """The blocks of both towers, audio first: `model.audio_encoder.blocks()` then `model.text_encoder.blocks()`.

    Raises:
        ValueError: the model lacks an `audio_encoder`/`text_encoder` with a `blocks()` method.
    """
    for name in ("audio_encoder", "text_encoder"):
        tower = getattr(model, name, None)
        if tower is None or not callable(getattr(tower, "blocks", None)):
            raise ValueError(f"model.{name} must exist and define blocks() (docs/ARCHITECTURE.md)")
        yield from tower.blocks()


def parallelize(
    model: nn.Module,
    mesh: DeviceMesh | None,
    fsdp: bool = True,
    activation_checkpointing: bool = False,
    compile: bool | str = False,
    mp_policy: MixedPrecisionPolicy | None = None,
) -> nn.Module:
    """Apply activation checkpointing, compilation and FSDP2 to `model` in place; return it.

    Args:
        model: a `CLAPModel` (any module with `audio_encoder.blocks()` and `text_encoder.blocks()`).
        mesh: the 1-D data-parallel device mesh FSDP shards over (Lightning's
            `ModelParallelStrategy.device_mesh["data_parallel"]`); only read when `fsdp` is True.
        fsdp: shard parameters, gradients and optimizer state with `fully_shard` per block, per tower, root.
        activation_checkpointing: recompute each block's activations in backward.
        compile: False, True (the default inductor backend) or a backend name ("aot_eager", "eager") with
            which each block is compiled.
        mp_policy: FSDP2 mixed precision (parameter/reduce dtypes); None keeps the parameter dtype.
            Autocast through the Trainer's `precision` is the usual way and needs nothing here.

    Returns:
        The same module object, modified in place (FSDP2 changes the class of the modules it shards).

    Raises:
        ValueError: `fsdp` is True and `mesh` is None or not 1-D, or the model lacks tower `blocks()`.
        TypeError: `compile` is neither a bool nor a str.
    """
    if fsdp and (mesh is None or mesh.ndim != 1):
        raise ValueError(f"fsdp=True needs a 1-D data-parallel mesh, got mesh={mesh}")
    if not isinstance(compile, (bool, str)):
        raise TypeError(f"compile must be a bool or a backend name, got {compile!r}")
    blocks = list(tower_blocks(model))
    if activation_checkpointing:
        for block in blocks:
            checkpoint(block)
    if compile:
        backend = "inductor" if compile is True else compile
        for block in blocks:
            block.compile(backend=backend)
    if fsdp:
        kwargs = {"mesh": mesh} if mp_policy is None else {"mesh": mesh, "mp_policy": mp_policy}
        for block in blocks:
            fully_shard(block, **kwargs)
        # the towers' remaining parameters (embeddings, stems, final norms) get one group per tower
        fully_shard(model.audio_encoder, **kwargs)
        fully_shard(model.text_encoder, **kwargs)
        fully_shard(model, **kwargs)
    return model


def shard_module(module: nn.Module, mesh: DeviceMesh) -> nn.Module:
    """`fully_shard` a module that holds trained parameters outside the model (the SigLIP loss bias).

    A module without parameters is returned unchanged. Without this, such parameters would be plain
    replicated tensors under FSDP whose gradients no collective averages.
    """
    if any(True for _ in module.parameters()):
        fully_shard(module, mesh=mesh)
    return module
