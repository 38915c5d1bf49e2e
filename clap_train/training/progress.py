"""A progress bar that tells the truth about a step-bounded run.

Training is bounded by `trainer.max_steps` (Lightning's `max_epochs` stays -1), and the training loader is
a stream without a length, so Lightning's own bar shows "Epoch 3/-2" and a per-epoch total that is the
number of steps left (800, 736, 672, ...). This one shows the epoch out of the epochs the step budget
spans and the datamodule's batches per epoch (`CLAPDataModule.batches_per_rank`), fewer only in the last.
"""

from __future__ import annotations

import math

from lightning.pytorch.callbacks import RichProgressBar


class StepProgressBar(RichProgressBar):
    """`RichProgressBar` with "Epoch e/E" (0-based, as Lightning) and a fixed per-epoch total."""

    def _epoch_batches(self) -> int | None:
        batches = getattr(self.trainer.datamodule, "batches_per_rank", None)
        return batches if isinstance(batches, int) and batches > 0 else None

    def _steps_left(self) -> int | None:
        max_steps = self.trainer.max_steps
        return max(0, max_steps - self.trainer.global_step) if max_steps is not None and max_steps > 0 else None

    @property
    def total_train_batches(self) -> int | float:
        batches, left = self._epoch_batches(), self._steps_left()
        if batches is None:
            return super().total_train_batches
        return batches if left is None else min(batches, left)

    def _get_train_description(self, current_epoch: int) -> str:
        batches, left = self._epoch_batches(), self._steps_left()
        if batches is None or left is None or self.trainer.max_epochs not in (None, -1):
            return super()._get_train_description(current_epoch)
        last_epoch = current_epoch + max(1, math.ceil(left / batches)) - 1
        description = f"Epoch {current_epoch}/{last_epoch}"
        return description.ljust(len(self.validation_description))  # equal widths: no flicker (as Lightning)
