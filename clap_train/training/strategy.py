"""The FSDP2 strategy: Lightning's `ModelParallelStrategy` with every rank in one data-parallel group."""

from __future__ import annotations

from lightning.pytorch.strategies import ModelParallelStrategy


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

    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()
