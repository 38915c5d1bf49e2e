"""The FSDP2 strategy: Lightning's `ModelParallelStrategy` with every rank in one data-parallel group."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.strategies import ModelParallelStrategy

from clap_train.training.checkpointing import remove_path, swap_in_directory


class FSDP2Strategy(ModelParallelStrategy):
    """`ModelParallelStrategy(data_parallel_size=num_nodes * devices, tensor_parallel_size=1)`, sized at launch.

    `ModelParallelStrategy`'s defaults are wrong for pure data parallelism: `tensor_parallel_size="auto"`
    becomes the number of devices per node and `data_parallel_size="auto"` the number of nodes, so on one
    node every rank would read all the data and no gradient would be averaged. The world size is only
    known once the Trainer has set `num_nodes` and the devices, so it is filled in here rather than in the
    config: `trainer=fsdp trainer.num_nodes=4 trainer.devices=8` needs nothing else.

    The LightningModule shards itself in `configure_model` (see `clap_train.distributed.parallelize`).
    Checkpoints are sharded DCP directories (`<name>.ckpt/` with one `.distcp` file per rank and `meta.pt`);
    pass `save_distributed_checkpoint=False` to gather a single file on rank 0 instead.
    """

    def __init__(self, save_distributed_checkpoint: bool = True, process_group_backend: str | None = None, **kwargs):
        super().__init__(
            data_parallel_size="auto",
            tensor_parallel_size=1,
            save_distributed_checkpoint=save_distributed_checkpoint,
            process_group_backend=process_group_backend,
            **kwargs,
        )

    def save_checkpoint(self, checkpoint, filepath, storage_options=None) -> None:
        """Sharded saves are atomic too: every rank writes into `<name>.tmp/`, then rank 0 swaps it in.

        Lightning's own save writes the shards into the existing directory in place, so a kill during
        a save would leave a mix of two steps.
        """
        if not self._save_distributed_checkpoint:
            return super().save_checkpoint(checkpoint, filepath, storage_options)
        path = Path(self.broadcast(str(filepath)))
        tmp = path.with_name(path.name + ".tmp")
        if self.global_rank == 0:
            remove_path(tmp)
        self.barrier("fsdp2_checkpoint_tmp")
        super().save_checkpoint(checkpoint, tmp, storage_options)
        self.barrier("fsdp2_checkpoint_written")
        if self.global_rank == 0:
            swap_in_directory(tmp, path)
        self.barrier("fsdp2_checkpoint_swapped")

    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()
