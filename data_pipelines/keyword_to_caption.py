"""Keyword-to-caption augmentation (CLAP paper, section 3.3): tags -> a generated natural caption.

    python -m data_pipelines.keyword_to_caption --shards 'DIR/train-{000000..000003}.tar' --out DIR2
        [--model PATH] [--model-kind auto|seq2seq|causal] [--prompt-template '... {keywords} ...']
        [--field text_augment_t5] [--batch-size 32] [--min-seconds 2.0] [--device cuda]

For every sample with `tags` and at least `--min-seconds` of audio, a seq2seq model (T5-style,
loaded from a local directory with transformers' AutoModelForSeq2SeqLM) turns the keywords,
joined by ", ", into a caption, or a causal LM (`CausalCaptioner`, AutoModelForCausalLM) continues a
prompt template holding the keywords; gendered words are then neutralised (`debias`) and the caption
stored as `--field` (default `text_augment_t5`, a list of one string). Without `--model`, captions come from the
deterministic template "the sound of a, b and c". Shards are copied to DIR2 under the same names
with the audio bytes untouched, plus DIR2/sizes.json and DIR2/keyword_to_caption.json (counts).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from clap_train.cli import ArgumentParser, run_tool
from data_pipelines.captions import debias, template_caption
from data_pipelines.encode import member_seconds
from data_pipelines.shards import (
    AUDIO_MEMBERS,
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


DEFAULT_PROMPT = "Keywords: {keywords}\nA one-sentence description of the sound:"
RESERVED_FIELDS = ("text", "tags", "original_data")


class CausalCaptioner:
    """Batched generation with a local causal LM (decoder-only: Llama, Qwen, GPT-2, ...), the route of
    WavCaps, AudioSetCaps and LAION's annotation pipeline.

    Args:
        model_path: directory with the model and its tokenizer (`save_pretrained` layout).
        prompt_template: text holding `{keywords}`, replaced by the keywords joined by ", " (plain
            substitution: nothing in the template is evaluated).
        batch_size, device, max_new_tokens, num_beams: as for `Seq2SeqCaptioner`.
    The caption is the first non-empty line of the generated continuation (prompt tokens removed);
    an empty one falls back to the template caption. Prompts are left-padded so that every row of a
    batch continues from its last prompt token.
    Raises:
        ValueError naming `prompt_template` without `{keywords}`, `batch_size` or `model_path`.
    """

    def __init__(self, model_path: str | Path, prompt_template: str = DEFAULT_PROMPT, batch_size: int = 32,
                 device: str | None = None, max_new_tokens: int = 48, num_beams: int = 1):
        if "{keywords}" not in prompt_template:
            raise ValueError(f"prompt_template: must contain '{{keywords}}', got {prompt_template!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
        if not Path(model_path).is_dir():
            raise ValueError(f"model_path: {model_path} is not a directory")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = str(model_path)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_path).to(self.device).eval()
        self.prompt_template, self.batch_size = prompt_template, batch_size
        self.generate_kwargs = {"max_new_tokens": max_new_tokens, "num_beams": num_beams, "do_sample": False,
                                "pad_token_id": self.tokenizer.pad_token_id}

    def prompt(self, keywords: list[str]) -> str:
        return self.prompt_template.replace("{keywords}", ", ".join(keywords))

    @torch.no_grad()
    def __call__(self, keyword_lists: list[list[str]]) -> list[str]:
        captions = []
        for start in range(0, len(keyword_lists), self.batch_size):
            batch = keyword_lists[start : start + self.batch_size]
            inputs = self.tokenizer([self.prompt(k) for k in batch], return_tensors="pt", padding=True).to(self.device)
            inputs.pop("token_type_ids", None)
            generated = self.model.generate(**inputs, **self.generate_kwargs)  # (b, prompt_len + new_len)
            texts = self.tokenizer.batch_decode(generated[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
            for text, keywords in zip(texts, batch, strict=True):
                line = next((line.strip() for line in text.splitlines() if line.strip()), "")
                captions.append(" ".join(line.split()) or template_caption(keywords))
        return captions


def build_captioner(model: str | None, kind: str = "auto", **kwargs):
    """The captioner for `--model` (None: templates). `kind` "auto" reads the model's config:
    encoder-decoder -> `Seq2SeqCaptioner`, else `CausalCaptioner`.

    Raises:
        ValueError naming `kind` or `model_path`.
    """
    if kind not in ("auto", "seq2seq", "causal"):
        raise ValueError(f"model_kind: must be auto, seq2seq or causal, got {kind!r}")
    if model is None:
        return TemplateCaptioner()
    if not Path(model).is_dir():
        raise ValueError(f"model_path: {model} is not a directory")
    if kind == "auto":
        from transformers import AutoConfig

        kind = "seq2seq" if AutoConfig.from_pretrained(model).is_encoder_decoder else "causal"
    prompt_template = kwargs.pop("prompt_template", DEFAULT_PROMPT)
    prompt_prefix = kwargs.pop("prompt_prefix", "")
    if kind == "seq2seq":
        return Seq2SeqCaptioner(model, prompt_prefix=prompt_prefix, **kwargs)
    return CausalCaptioner(model, prompt_template, **kwargs)


def _duration(members: dict[str, bytes]) -> float | None:
    for extension in AUDIO_MEMBERS:
        if extension in members:
            try:
                return member_seconds(members[extension], extension)
            except Exception:  # noqa: BLE001 - an unreadable header only means "not captioned"
                return None
    return None


def augment_shards(shard_paths: list[str], out_dir: str | Path, captioner, min_seconds: float = 2.0,
                   field: str = "text_augment_t5") -> dict:
    """Copy `shard_paths` into `out_dir` (same names), adding the generated caption as json `field`
    (a list of one string; default `text_augment_t5`, which the loader reads) where possible.

    A sample is captioned when it has tags and at least `min_seconds` of readable audio; other
    samples are copied unchanged. Returns counts: samples, captioned, short, no_tags.
    Raises:
        SystemExit when `out_dir` is not empty or two input shards share a file name.
        ValueError naming `field` when it is empty or one of the json fields make_shards writes.
    """
    if not field or not field.replace("_", "").isalnum() or field in RESERVED_FIELDS:
        raise ValueError(f"field: must be a name like text_augment_llm, not one of {RESERVED_FIELDS}, got {field!r}")
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
            samples[index][2][field] = [debias(caption)]
        counts["samples"] += len(samples)
        counts["captioned"] += len(todo)
        out_samples = [(key, {**members, "json": encode_meta(meta)}) for key, members, meta in samples]
        name = Path(path).name
        update_sizes(out_dir, {name: write_tar(out_dir / name, out_samples)})
    report = {"generator": captioner.name, "field": field, "min_seconds": min_seconds, "shards": len(shard_paths),
              **counts}
    (out_dir / "keyword_to_caption.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m data_pipelines.keyword_to_caption", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--shards", required=True, help="brace pattern of input shards, e.g. 'd/train-{000000..000003}.tar'"
    )
    parser.add_argument("--out", required=True, help="output directory for the augmented shards")
    parser.add_argument("--model", help="local seq2seq or causal LM directory (default: deterministic templates)")
    parser.add_argument("--model-kind", default="auto", help="auto (from the model's config), seq2seq or causal")
    parser.add_argument("--prompt-template", default=DEFAULT_PROMPT, help="causal LMs: prompt with {keywords}")
    parser.add_argument("--field", default="text_augment_t5", help="json field the captions go to")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--min-seconds", type=float, default=2.0, help="shorter clips are copied uncaptioned")
    parser.add_argument("--device", help="torch device (default: cuda if available)")
    parser.add_argument("--prompt-prefix", default="", help="text before the joined keywords")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--num-beams", type=int, default=1)
    args = parser.parse_args(argv)

    shard_paths = expand_shards(args.shards, "--shards")
    for flag, value, low in (("--batch-size", args.batch_size, 1), ("--max-new-tokens", args.max_new_tokens, 1),
                             ("--num-beams", args.num_beams, 1)):
        if value < low:
            raise SystemExit(f"keyword_to_caption: {flag} must be >= {low}, got {value}")
    if not args.field or not args.field.replace("_", "").isalnum() or args.field in RESERVED_FIELDS:
        raise SystemExit(f"keyword_to_caption: --field must be a name not in {RESERVED_FIELDS}, got {args.field!r}")
    if args.model_kind not in ("auto", "seq2seq", "causal"):
        raise SystemExit(f"keyword_to_caption: --model-kind must be auto, seq2seq or causal, got {args.model_kind!r}")
    if "{keywords}" not in args.prompt_template:
        raise SystemExit(f"keyword_to_caption: --prompt-template must contain {{keywords}}, got {args.prompt_template!r}")
    if args.model and not Path(args.model).is_dir():
        raise SystemExit(f"keyword_to_caption: --model {args.model} is not a directory")
    if not args.model:
        print("keyword_to_caption: no --model given: captions come from deterministic templates", file=sys.stderr)
    captioner = build_captioner(args.model, args.model_kind, batch_size=args.batch_size, device=args.device,
                                prompt_prefix=args.prompt_prefix, prompt_template=args.prompt_template,
                                max_new_tokens=args.max_new_tokens, num_beams=args.num_beams)
    report = augment_shards(shard_paths, args.out, captioner, args.min_seconds, args.field)
    print(
        f"keyword_to_caption ({report['generator']}): {report['captioned']} of {report['samples']} samples captioned; "
        f"{report['short']} too short or unreadable, {report['no_tags']} without tags",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    run_tool(main)
