"""Contrastive gradient accumulation (GradCache, Gao et al. 2021): a batch K times larger than fits in memory.

Plain gradient accumulation does not work for contrastive losses: each micro-batch would only see its
own negatives. GradCache instead
  (a) encodes all K chunks without a graph, keeping only the (rows, D) embeddings,
  (b) computes the loss once on the concatenated embeddings and its gradient with respect to the
      embeddings and to the loss's own parameters (logit scales, SigLIP bias),
  (c) re-encodes each chunk with a graph and backpropagates the cached embedding gradient into the
      encoder parameters, one chunk at a time.
Peak activation memory is that of one chunk; the parameter gradient equals the gradient of one step on the
concatenated batch. The loss may gather across ranks (step (b) runs its collectives once, on every rank).

Under FSDP2 the logit scales are sharded between forwards: step (b) then runs on full copies of them,
backpropagates the loss for real (FSDP2 reduce-scatters the loss module's own sharded parameters) and adds
the rank-averaged scale gradients to this rank's shards, which is what a plain FSDP2 backward would do.

Dropout stays exact: the RNG state is recorded before each chunk's pass (a) and restored before its pass
(c), so both passes draw the same masks. Batch-norm layers are not exact: they see per-chunk statistics,
and in train mode their running statistics are updated by both passes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor

EncodeFn = Callable[[Any], tuple[torch.Tensor, torch.Tensor]]
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]

_RngState = tuple[torch.Tensor, list[torch.Tensor] | None]


def _get_rng_state() -> _RngState:
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda_states


def _set_rng_state(state: _RngState) -> None:
    cpu_state, cuda_states = state
    torch.set_rng_state(cpu_state)
    if cuda_states is not None:
        torch.cuda.set_rng_state_all(cuda_states)


def _loss_parameters(loss_fn: LossFn, *logit_scales: torch.Tensor | None) -> list[torch.Tensor]:
    """The logit scales and the loss module's own parameters that require grad, each once."""
    candidates = [*logit_scales, *(loss_fn.parameters() if isinstance(loss_fn, nn.Module) else ())]
    params, seen = [], set()
    for param in candidates:
        if param is not None and param.requires_grad and id(param) not in seen:
            params.append(param)
            seen.add(id(param))
    return params


def _default_backward(surrogate: torch.Tensor) -> None:
    surrogate.backward()


def contrastive_accumulation_step(
    encode: EncodeFn,
    loss_fn: LossFn,
    chunks: Sequence[Any],
    logit_scale_a: torch.Tensor,
    logit_scale_t: torch.Tensor | None = None,
    backward: Callable[[torch.Tensor], None] | None = None,
    no_sync: Callable[[], contextlib.AbstractContextManager] | None = None,
    loss_kwargs: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Accumulate into `.grad` the gradient of `loss_fn` on all `chunks` at once; return the loss, detached.

    Args:
        encode: `encode(chunk) -> (audio_embeds (b_k, D), text_embeds (b_k, D))`, the model's forward on one
            chunk (unit-norm embeddings). It is called twice per chunk, first under `torch.no_grad()`.
        loss_fn: a loss with the common signature `loss_fn(audio (B, D), text (B, D), logit_scale_a,
            logit_scale_t) -> scalar`; it may gather across ranks and may own parameters (an nn.Module's
            parameters receive their gradient here too). B = sum_k b_k rows per rank.
        chunks: the K micro-batches of this rank (see `split_batch`), K >= 1.
        logit_scale_a, logit_scale_t: the raw (log) scale parameters passed on to `loss_fn`.
        backward: called once per chunk on a scalar surrogate whose gradient is the cached one
            (in Lightning: `self.manual_backward`, which also applies AMP loss scaling). Default:
            `surrogate.backward()`.
        no_sync: a context-manager factory under which chunks 0..K-2 are re-encoded and backpropagated
            without the DDP gradient all-reduce (in Lightning: `self.trainer.strategy.block_backward_sync`;
            in plain torch: `ddp_model.no_sync`); the last chunk's backward then all-reduces the sum.
        loss_kwargs: extra keyword inputs of `loss_fn` for the whole (concatenated) batch, e.g. `pair_ids`.

    Returns:
        The loss of step (b), detached: exactly what `loss_fn` returns for the concatenated batch (per rank
        for losses whose value is per rank). Backward has already run; the caller steps the optimizer
        and zeroes gradients. Parameters the loss does not use keep `.grad` untouched (None stays None).

    Raises:
        ValueError: `chunks` is empty.
    """
    if len(chunks) == 0:
        raise ValueError("chunks must hold at least one micro-batch")
    backward = backward or _default_backward
    loss_kwargs = loss_kwargs or {}

    # (a) embeddings of every chunk, no graph; the RNG state before each chunk is kept for pass (c)
    rng_states, audio_parts, text_parts = [], [], []
    with torch.no_grad():
        for chunk in chunks:
            rng_states.append(_get_rng_state())
            audio_embeds, text_embeds = encode(chunk)
            audio_parts.append(audio_embeds)
            text_parts.append(text_embeds)
    rng_after = _get_rng_state()

    # (b) the loss on the whole batch; gradient w.r.t. the embeddings and the loss-side parameters
    all_audio = torch.cat(audio_parts).requires_grad_()  # (B, D)
    all_text = torch.cat(text_parts).requires_grad_()  # (B, D)
    if isinstance(logit_scale_a, DTensor):  # FSDP2: the gradients of the loss side are applied here
        all_grads, loss = _sharded_loss_backward(loss_fn, all_audio, all_text, logit_scale_a, logit_scale_t,
                                                 **loss_kwargs)
        loss_param_grads = []
    else:
        loss_params = _loss_parameters(loss_fn, logit_scale_a, logit_scale_t)
        with torch.enable_grad():
            loss = loss_fn(all_audio, all_text, logit_scale_a, logit_scale_t, **loss_kwargs)
            grads = torch.autograd.grad(loss, [all_audio, all_text, *loss_params], allow_unused=True)
        all_grads = grads[:2]
        loss_param_grads = [(param, grad) for param, grad in zip(loss_params, grads[2:]) if grad is not None]
    audio_grads = all_grads[0].split([part.shape[0] for part in audio_parts])
    text_grads = all_grads[1].split([part.shape[0] for part in text_parts])

    # (c) one chunk at a time: same RNG as in (a), backprop the cached gradient through a surrogate scalar
    last = len(chunks) - 1
    for index, chunk in enumerate(chunks):
        _set_rng_state(rng_states[index])
        sync_context = no_sync() if no_sync is not None and index < last else contextlib.nullcontext()
        with sync_context:
            with torch.enable_grad():
                audio_embeds, text_embeds = encode(chunk)
                # d(surrogate)/d(embeds) is exactly the cached gradient
                surrogate = (audio_embeds * audio_grads[index]).sum() + (text_embeds * text_grads[index]).sum()
                if index == last:  # the loss-side parameters join the synchronised backward
                    for param, grad in loss_param_grads:
                        surrogate = surrogate + (param * grad).sum()
            backward(surrogate)
    _set_rng_state(rng_after)
    return loss.detach()


def _sharded_loss_backward(loss_fn: LossFn, all_audio: torch.Tensor, all_text: torch.Tensor,
                           *logit_scales: torch.Tensor | None,
                           **loss_kwargs: Any) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Step (b) under FSDP2: ((d loss / d audio, d loss / d text), loss). The loss runs on full copies of the
    sharded logit scales and is backpropagated for real, so an FSDP2-wrapped loss module reduce-scatters its
    own parameters' gradients; each scale's gradient is averaged over ranks (FSDP2's reduction) and its
    shard added to the scale's `.grad`."""
    leaves = [None if scale is None else scale.full_tensor().detach().requires_grad_(scale.requires_grad)
              for scale in logit_scales]
    with torch.enable_grad():
        loss = loss_fn(all_audio, all_text, *leaves, **loss_kwargs)
        loss.backward()
    for scale, leaf in zip(logit_scales, leaves):
        if leaf is None or leaf.grad is None:
            continue
        grad = leaf.grad
        if dist.is_initialized():
            dist.all_reduce(grad)
            grad = grad / dist.get_world_size()
        shard = distribute_tensor(grad, scale.device_mesh, scale.placements)
        scale.grad = shard if scale.grad is None else scale.grad + shard
    return (all_audio.grad, all_text.grad), loss


def split_batch(batch: dict[str, Any], num_chunks: int) -> list[dict[str, Any]]:
    """Split every tensor and list of a batch dict along dim 0 into `num_chunks` contiguous chunks.

    Chunk sizes follow `torch.tensor_split` (they differ by at most one row). Other values (None,
    scalars) are shared by every chunk. Index-valued keys are not rebased: a `text_to_audio` column is
    only meaningful per chunk when captions and clips are paired row by row, as in training.

    Raises:
        ValueError: `num_chunks` < 1, the batch has no tensor or list, tensors and lists disagree on the
            number of rows, or there are fewer rows than chunks.
    """
    if num_chunks < 1:
        raise ValueError(f"num_chunks must be >= 1, got {num_chunks}")
    row_counts = {len(value) for value in batch.values() if isinstance(value, (torch.Tensor, list))}
    if len(row_counts) != 1:
        raise ValueError(f"batch tensors and lists must share one row count, got {sorted(row_counts)}")
    (num_rows,) = row_counts
    if num_rows < num_chunks:
        raise ValueError(f"num_chunks={num_chunks} exceeds the {num_rows} rows of the batch")
    bounds = torch.tensor_split(torch.arange(num_rows), num_chunks)
    chunks = []
    for rows in bounds:
        start, stop = int(rows[0]), int(rows[-1]) + 1
        chunks.append(
            {
                key: value[start:stop] if isinstance(value, (torch.Tensor, list)) else value
                for key, value in batch.items()
            }
        )
    return chunks
