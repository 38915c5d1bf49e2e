"""GradCache: K chunks give the gradient of one K-times larger batch (single process and 2 DDP ranks)."""

import contextlib

import pytest
import torch
from torch.nn.parallel import DistributedDataParallel

from clap_train.losses.contrastive import ClipLoss
from clap_train.losses.multipos import MultiPositiveLoss
from clap_train.losses.siglip import SigLipLoss
from clap_train.training.grad_cache import contrastive_accumulation_step, split_batch
from tests.distributed._dist import run_distributed
from tests.losses._toy import gradients, make_inputs, make_model

TOLERANCE = 1e-10  # float64
LOSSES = {
    "clip": lambda: ClipLoss(),
    "clip_local_loss": lambda: ClipLoss(local_loss=True),
    "siglip": lambda: SigLipLoss(bias_init=-2.0),
}


def _chunks(audio, text, num_chunks):
    return list(zip(audio.tensor_split(num_chunks), text.tensor_split(num_chunks)))


def _reference_step(model, loss_fn, chunks):
    """Ordinary step on the whole batch, forwarding chunk by chunk so dropout draws the same masks."""
    embeds = [model(audio, text) for audio, text in chunks]
    audio_embeds = torch.cat([a for a, _ in embeds])
    text_embeds = torch.cat([t for _, t in embeds])
    loss = loss_fn(audio_embeds, text_embeds, model.logit_scale_a, model.logit_scale_t)
    loss.backward()
    return loss.detach()


def _cached_step(model, loss_fn, chunks, **kwargs):
    return contrastive_accumulation_step(
        lambda chunk: model(*chunk), loss_fn, chunks, model.logit_scale_a, model.logit_scale_t, **kwargs
    )


def _assert_same_gradients(actual: dict, expected: dict):
    assert actual.keys() == expected.keys()
    for key, grad in expected.items():
        assert torch.allclose(actual[key], grad, atol=TOLERANCE, rtol=0), key


@pytest.mark.parametrize("name", list(LOSSES))
def test_chunks_equal_one_big_batch(name):
    audio, text = make_inputs(7)
    model, loss_fn = make_model(), LOSSES[name]().double()
    expected_loss = loss_fn(*model(audio, text), model.logit_scale_a, model.logit_scale_t)
    expected_loss.backward()
    expected = gradients(model, loss_fn)

    model, loss_fn = make_model(), LOSSES[name]().double()
    loss = _cached_step(model, loss_fn, _chunks(audio, text, 3))  # uneven chunks: 3 + 2 + 2 rows
    assert not loss.requires_grad
    assert loss.item() == pytest.approx(expected_loss.item(), abs=TOLERANCE)
    _assert_same_gradients(gradients(model, loss_fn), expected)
    assert model.logit_scale_t.grad is None  # unused by the loss: untouched, as in an ordinary step


def test_loss_kwargs_reach_the_loss_on_the_whole_batch():
    audio, text = make_inputs(7)
    ids = torch.tensor([[0, 9], [1, 8], [0, 7], [2, 8], [3, 6], [4, 5], [5, 4]])  # repeats across chunks
    model, loss_fn = make_model(), MultiPositiveLoss()
    expected_loss = loss_fn(*model(audio, text), model.logit_scale_a, model.logit_scale_t, pair_ids=ids)
    expected_loss.backward()
    expected = gradients(model)

    model = make_model()
    loss = _cached_step(model, loss_fn, _chunks(audio, text, 3), loss_kwargs={"pair_ids": ids})
    assert loss.item() == pytest.approx(expected_loss.item(), abs=TOLERANCE)
    _assert_same_gradients(gradients(model), expected)


def test_dropout_in_train_mode_is_exact():
    audio, text = make_inputs(6)
    chunks = _chunks(audio, text, 3)
    model, loss_fn = make_model(dropout=0.5), ClipLoss()
    assert not torch.equal(model(audio, text)[0], model(audio, text)[0])  # dropout is active
    torch.manual_seed(123)
    expected_loss = _reference_step(model, loss_fn, chunks)
    expected_rng = torch.get_rng_state()
    expected = gradients(model, loss_fn)

    model = make_model(dropout=0.5)
    torch.manual_seed(123)
    loss = _cached_step(model, loss_fn, chunks)
    assert loss.item() == pytest.approx(expected_loss.item(), abs=TOLERANCE)
    _assert_same_gradients(gradients(model, loss_fn), expected)
    assert torch.equal(torch.get_rng_state(), expected_rng)  # the RNG stream continues as after one pass


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_dropout_on_cuda_is_exact():
    audio, text = (x.cuda() for x in make_inputs(6))
    chunks = _chunks(audio, text, 3)
    model, loss_fn = make_model(dropout=0.5).cuda(), ClipLoss()
    torch.manual_seed(123)
    expected_loss = _reference_step(model, loss_fn, chunks)
    expected = gradients(model, loss_fn)

    model = make_model(dropout=0.5).cuda()
    torch.manual_seed(123)
    loss = _cached_step(model, loss_fn, chunks)
    assert loss.item() == pytest.approx(expected_loss.item(), abs=TOLERANCE)
    _assert_same_gradients(gradients(model, loss_fn), expected)


def test_backward_and_no_sync_hooks_are_called_per_chunk():
    audio, text = make_inputs(8)
    model = make_model()
    surrogates, entered = [], []

    @contextlib.contextmanager
    def no_sync():
        entered.append(len(surrogates))
        yield

    def backward(surrogate):
        surrogates.append(surrogate.item())
        surrogate.backward()

    _cached_step(model, ClipLoss(), _chunks(audio, text, 4), backward=backward, no_sync=no_sync)
    assert len(surrogates) == 4
    assert entered == [0, 1, 2]  # every chunk but the last skips the gradient all-reduce


def test_empty_chunks_are_rejected():
    model = make_model()
    with pytest.raises(ValueError, match="chunks"):
        _cached_step(model, ClipLoss(), [])


def test_split_batch_splits_tensors_and_lists_and_shares_the_rest():
    batch = {"waveform": torch.arange(10).reshape(5, 2), "key": list("abcde"), "sample_rate": 48000, "x": None}
    chunks = split_batch(batch, 2)
    assert [c["key"] for c in chunks] == [["a", "b", "c"], ["d", "e"]]
    assert torch.equal(torch.cat([c["waveform"] for c in chunks]), batch["waveform"])
    assert all(c["sample_rate"] == 48000 and c["x"] is None for c in chunks)


@pytest.mark.parametrize(
    ("batch", "num_chunks", "match"),
    [
        ({"a": torch.zeros(4)}, 0, "num_chunks"),
        ({"a": torch.zeros(4), "b": [1, 2]}, 2, "row count"),
        ({"a": torch.zeros(2)}, 3, "exceeds"),
    ],
)
def test_split_batch_rejects_bad_arguments(batch, num_chunks, match):
    with pytest.raises(ValueError, match=match):
        split_batch(batch, num_chunks)


class _ModelAndLoss(torch.nn.Module):
    """What DDP wraps in training: the model and the loss (whose parameters must be averaged too)."""

    def __init__(self, model, loss_fn):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, audio, text):
        return self.model(audio, text)


def _rank_cached_step(rank, world_size, name, state, expected_loss, expected_grads, local_rows, num_chunks):
    model = make_model()
    model.load_state_dict(state)
    model.logit_scale_t.requires_grad_(False)  # unused by the losses; DDP requires every trained param used
    wrapped = _ModelAndLoss(model, LOSSES[name]().double())
    ddp = DistributedDataParallel(wrapped)
    audio, text = make_inputs(world_size * local_rows)
    shard = slice(rank * local_rows, (rank + 1) * local_rows)
    loss = contrastive_accumulation_step(
        lambda chunk: ddp(*chunk),
        wrapped.loss_fn,
        _chunks(audio[shard], text[shard], num_chunks),
        model.logit_scale_a,
        model.logit_scale_t,
        no_sync=ddp.no_sync,
    )
    mean_loss = loss.clone()
    torch.distributed.all_reduce(mean_loss)
    assert abs(mean_loss.item() / world_size - expected_loss) < TOLERANCE
    for key, grad in gradients(model, wrapped.loss_fn).items():  # DDP has averaged them
        assert torch.allclose(grad, expected_grads[key], atol=TOLERANCE, rtol=0), (name, key)


@pytest.mark.parametrize("name", ["clip_local_loss", "siglip"])
def test_two_ddp_ranks_with_chunks_equal_one_big_batch(name):
    world_size, local_rows, num_chunks = 2, 4, 2
    model, loss_fn = make_model(), LOSSES[name]().double()
    state = {key: value.clone() for key, value in model.state_dict().items()}
    audio, text = make_inputs(world_size * local_rows)
    loss = loss_fn(*model(audio, text), model.logit_scale_a, model.logit_scale_t)
    loss.backward()
    run_distributed(_rank_cached_step, name, state, loss.item(), gradients(model, loss_fn), local_rows, num_chunks)
