"""TextEmbedder (zero-shot prompts) on an FSDP2-sharded model between training steps: 2 gloo ranks
equal the unsharded model, and training forward/backward still works afterwards."""

import pytest
import torch
from torch.distributed.device_mesh import init_device_mesh

from clap_train.distributed.parallelize import parallelize
from clap_train.evaluation.tasks import TextEmbedder
from tests.distributed._dist import run_distributed
from tests.training._tiny import make_batch, make_model


class CharTokenizer:
    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        ids = torch.tensor([[0] + [5 + ord(c) % 40 for c in text[:5]] + [2] for text in texts])  # (N, 7)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _embed_sharded(rank: int, world_size: int) -> None:
    texts = ["abcde", "xyzuv", "hello"]
    model = make_model()  # dropout 0: train and eval modes agree
    expected = TextEmbedder(model, CharTokenizer(), torch.device("cpu"))(texts)
    parallelize(model, init_device_mesh("cpu", (world_size,)), fsdp=True)
    batch = make_batch(4, rank)
    for _ in range(2):  # a training forward/backward (which reshards the root's parameters), then embed
        out = model(batch)
        (out["audio_embeds"] * out["text_embeds"] * model.logit_scale_a.exp()).sum().backward()
        with torch.no_grad():
            embeds = TextEmbedder(model, CharTokenizer(), torch.device("cpu"), batch_size=2)(texts)
        assert torch.allclose(embeds, expected, atol=1e-6)


@pytest.mark.slow
def test_text_embedder_on_fsdp_model_matches_unsharded():
    run_distributed(_embed_sharded)
