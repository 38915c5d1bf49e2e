"""The documented Lightning recipe: manual optimization + GradCache under 2-rank CPU DDP is exact.

Each rank asserts inside `training_step` that the DDP-averaged gradient equals the single-process
gradient of the global batch (world_size * LOCAL_BATCH rows), for two consecutive steps.
"""

import contextlib

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Subset, TensorDataset

from clap_train.losses.siglip import SigLipLoss
from clap_train.training.grad_cache import contrastive_accumulation_step, split_batch
from tests.losses._toy import gradients, make_inputs, make_model

WORLD_SIZE, LOCAL_BATCH, NUM_CHUNKS, NUM_STEPS = 2, 4, 2, 2
TOLERANCE = 1e-10


class GradCacheModule(L.LightningModule):
    def __init__(self, state, expected_grads, audio, text):
        super().__init__()
        self.automatic_optimization = False
        self.model = make_model()
        self.model.load_state_dict(state)
        self.model.logit_scale_t.requires_grad_(False)  # not used by SigLipLoss; DDP needs every trained param used
        self.loss = SigLipLoss(bias_init=-2.0).double()
        self.expected_grads, self.audio, self.text = expected_grads, audio, text

    def _encode(self, chunk):
        return self.model(chunk["audio"], chunk["text"])

    def training_step(self, batch, batch_idx):
        audio, text = batch
        optimizer = self.optimizers()
        optimizer.zero_grad()
        loss = contrastive_accumulation_step(
            self._encode,
            self.loss,
            split_batch({"audio": audio, "text": text}, NUM_CHUNKS),
            self.model.logit_scale_a,
            self.model.logit_scale_t,
            backward=self.manual_backward,
            no_sync=getattr(self.trainer.strategy, "block_backward_sync", contextlib.nullcontext),
        )
        for key, grad in gradients(self.model, self.loss).items():
            assert torch.allclose(grad, self.expected_grads[key], atol=TOLERANCE, rtol=0), (batch_idx, key)
        optimizer.step()  # lr = 0: the next step must reproduce the same gradient
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def train_dataloader(self):
        rows = list(range(self.global_rank * LOCAL_BATCH, (self.global_rank + 1) * LOCAL_BATCH)) * NUM_STEPS
        return DataLoader(Subset(TensorDataset(self.audio, self.text), rows), batch_size=LOCAL_BATCH)


@pytest.mark.slow
def test_lightning_manual_optimization_recipe_is_exact_under_ddp():
    model, loss_fn = make_model(), SigLipLoss(bias_init=-2.0).double()
    audio, text = make_inputs(WORLD_SIZE * LOCAL_BATCH)
    loss_fn(*model(audio, text), model.logit_scale_a, model.logit_scale_t).backward()
    state = {key: value.detach().clone() for key, value in model.state_dict().items()}
    module = GradCacheModule(state, gradients(model, loss_fn), audio, text)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=WORLD_SIZE,
        strategy="ddp_spawn",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    trainer.fit(module)  # a failed assertion on any rank raises here
