"""Caption tokenisation with the `tokenizers` library (no transformers at run time).

LAION-CLAP tokenises with RoBERTa's byte-level BPE, padding and truncating to 77 tokens. A
`tokenizer.json` from any transformers RoBERTa/CLAP directory loads here; for from-scratch
towers and tests `train_bpe_tokenizer` builds one with RoBERTa's special-token ids.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

# RoBERTa's ids: <s>=0, <pad>=1, </s>=2, <unk>=3, <mask>=4. The text tower relies on pad id 1.
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train a RoBERTa-style byte-level BPE tokenizer on `texts`."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return tokenizer


class CaptionTokenizer:
    """Turns a list of captions into padded `input_ids` and `attention_mask` tensors.

    Args:
        path: a `tokenizer.json` file, or a directory that holds one.
        max_length: pad/truncate every caption to this many tokens (77 in LAION-CLAP).
    Raises:
        FileNotFoundError naming the path when no tokenizer.json is there.
    """

    def __init__(self, path: str | Path, max_length: int = 77):
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer: no tokenizer.json at {path}")
        self.path = str(path)
        self.max_length = max_length
        self._tokenizer = Tokenizer.from_file(self.path)
        pad_id = self._tokenizer.token_to_id("<pad>")
        self.pad_id = 1 if pad_id is None else pad_id
        self._tokenizer.enable_truncation(max_length)
        self._tokenizer.enable_padding(pad_id=self.pad_id, pad_token="<pad>", length=max_length)

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size()

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        encodings = self._tokenizer.encode_batch(list(texts))
        input_ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)  # (N, max_length)
        attention_mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def __getstate__(self):  # picklable for spawned data workers: reload from the file
        return {"path": self.path, "max_length": self.max_length}

    def __setstate__(self, state):
        self.__init__(state["path"], state["max_length"])
