"""Keyword-to-caption augmentation (CLAP paper, section 3.3): tags -> a generated natural caption.

    python -m data_pipelines.keyword_to_caption --shards 'DIR/train-{000000..000003}.tar' --out DIR2
        [--model PATH] [--batch-size 32] [--min-seconds 2.0] [--device cuda]

For every sample with `tags` and at least `--min-seconds` of audio, a seq2seq model (T5-style,
loaded from a local directory with transformers' AutoModelForSeq2SeqLM) turns the keywords,
joined by ", ", into a caption; gendered words are then neutralised (`debias`) and the caption
stored as `text_augment_t5` (a list of one string). Without `--model`, captions come from the
deterministic template "the sound of a, b and c". Shards are copied to DIR2 under the same names
with the audio bytes untouched, plus DIR2/sizes.json and DIR2/keyword_to_caption.json (counts).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from data_pipelines.captions import debias, template_caption
from data_pipelines.shards import (
    AUDIO_MEMBERS,
    audio_duration,
    encode_meta,
    expand_shards,
    iter_tar,
    read_meta,
    update_sizes,
    write_tar,
)


class TemplateCaptioner:
    """Deterministic captions: `["dog", "bark"]` -> `"the sound of dog and bark"`."""

    name = "templates"

    def __call__(self, keyword_lists: list[list[str]]) -> list[str]:
        return [template_caption(keywords) for keywords in keyword_lists]


class Seq2SeqCaptioner:
    """Batched generation with a local seq2seq model (transformers is imported here, lazily).

    Args:
        model_path: directory holding the model and its tokenizer (`save_pretrained` layout).
        batch_size: prompts per `generate` call.
        device: torch device; default cuda when available, else cpu.
        prompt_prefix: text put before the joined keywords (some models are trained with one).
        max_new_tokens / num_beams: generation settings.
    Empty generations fall back to the template caption.
    """

    def __init__(
        self,
        model_path: str | Path,
        batch_size: int = 32,
        device: str | None = None,
        prompt_prefix: str = "",
        max_new_tokens: int = 48,
        num_beams: int = 1,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
        if not Path(model_path).is_dir():
            raise ValueError(f"model_path: {model_path} is not a directory")
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        self.name = str(model_path)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModelForSeq2SeqLM.from_pretrained(model_path).to(self.device).eval()
        self.batch_size = batch_size
        self.prompt_prefix = prompt_prefix
        self.generate_kwargs = {"max_new_tokens": max_new_tokens, "num_beams": num_beams, "do_sample": False}

    def prompt(self, keywords: list[str]) -> str:
        return self.prompt_prefix + ", ".join(keywords)

    @torch.no_grad()
    def __call__(self, keyword_lists: list[list[str]]) -> list[str]:
        captions = []
        for start in range(0, len(keyword_lists), self.batch_size):
            batch = keyword_lists[start : start + self.batch_size]
            inputs = self.tokenizer([self.prompt(k) for k in batch], return_tensors="pt", padding=True).to(self.device)
            inputs.pop("token_type_ids", None)
            generated = self.model.generate(**inputs, **self.generate_kwargs)  # (b, new_len)
            texts = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
            captions += [" ".join(text.split()) or template_caption(k) for text, k in zip(texts, batch, strict=True)]
        return captions


def _duration(members: dict[str, bytes]) -> float | None:
    for extension in AUDIO_MEMBERS:
        if extension in members:
            try:
                return audio_duration(members[extension])
            except Exception:  # noqa: BLE001 - an unreadable header only means "not captioned"
                return None
    return None


def augment_shards(shard_paths: list[str], out_dir: str | Path, captioner, min_seconds: float = 2.0) -> dict:
    """Copy `shard_paths` into `out_dir` (same names), adding `text_augment_t5` where possible.

    A sample is captioned when it has tags and at least `min_seconds` of readable audio; other
    samples are copied unchanged. Returns counts: samples, captioned, short, no_tags.
    Raises:
        SystemExit when `out_dir` is not empty or two input shards share a file name.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise SystemExit(f"keyword_to_caption: output dir {out_dir} is not empty")
    names = [Path(path).name for path in shard_paths]
    if len(set(names)) != len(names):
        raise SystemExit("keyword_to_caption: input shards share file names; augment each directory separately")
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {"samples": 0, "captioned": 0, "short": 0, "no_tags": 0}
    for path in shard_paths:
        samples = [(key, members, read_meta(members)) for key, members in iter_tar(path)]
        todo = []
        for index, (_, members, meta) in enumerate(samples):
            if not meta.get("tags"):
                counts["no_tags"] += 1
                continue
            duration = _duration(members)
            if duration is None or duration < min_seconds:
                counts["short"] += 1
            else:
                todo.append(index)
        captions = captioner([samples[i][2]["tags"] for i in todo]) if todo else []
        for index, caption in zip(todo, captions, strict=True):
            samples[index][2]["text_augment_t5"] = [debias(caption)]
        counts["samples"] += len(samples)
        counts["captioned"] += len(todo)
        out_samples = [(key, {**members, "json": encode_meta(meta)}) for key, members, meta in samples]
        name = Path(path).name
        update_sizes(out_dir, {name: write_tar(out_dir / name, out_samples)})
    report = {"generator": captioner.name, "min_seconds": min_seconds, "shards": len(shard_paths), **counts}
    (out_dir / "keyword_to_caption.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data_pipelines.keyword_to_caption", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--shards", required=True, help="brace pattern of input shards, e.g. 'd/train-{000000..000003}.tar'"
    )
    parser.add_argument("--out", required=True, help="output directory for the augmented shards")
    parser.add_argument("--model", help="local seq2seq model directory (default: deterministic templates)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--min-seconds", type=float, default=2.0, help="shorter clips are copied uncaptioned")
    parser.add_argument("--device", help="torch device (default: cuda if available)")
    parser.add_argument("--prompt-prefix", default="", help="text before the joined keywords")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--num-beams", type=int, default=1)
    args = parser.parse_args(argv)

    shard_paths = expand_shards(args.shards, "--shards")
    if args.model:
        captioner = Seq2SeqCaptioner(
            args.model, args.batch_size, args.device, args.prompt_prefix, args.max_new_tokens, args.num_beams
        )
    else:
        print("keyword_to_caption: no --model given: captions come from deterministic templates", file=sys.stderr)
        captioner = TemplateCaptioner()
    report = augment_shards(shard_paths, args.out, captioner, args.min_seconds)
    print(
        f"keyword_to_caption ({report['generator']}): {report['captioned']} of {report['samples']} samples captioned; "
        f"{report['short']} too short or unreadable, {report['no_tags']} without tags",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
