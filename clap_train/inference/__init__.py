"""Embedding raw audio and caption strings with a loaded `CLAPModel` (`clap_train.load_model`)."""

from clap_train.inference.embed import caption_tokenizer, embed_audio, embed_text

__all__ = ["caption_tokenizer", "embed_audio", "embed_text"]
