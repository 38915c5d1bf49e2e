"""HTML report of a finished evaluation: metrics tables, retrieval examples, confusion matrices.

`write_report` writes `report.html` (styles and spectrogram PNGs inline), `metrics.json` and the
example clips as `clips/clip_NNNN.wav` next to the page, so the folder opens in any browser offline.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clap_train.evaluation.media import encode_png, encode_wav, spectrogram_image
from clap_train.evaluation.retrieval import text_to_audio_ranks, top_k_retrievals

_STYLE = """
body { font-family: sans-serif; margin: 24px; color: #222; }
table { border-collapse: collapse; margin: 8px 0 24px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; font-size: 13px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.query { margin-bottom: 28px; }
.hits { display: flex; gap: 8px; flex-wrap: wrap; }
.hit { border: 3px solid #ddd; padding: 4px; width: 190px; font-size: 12px; }
.hit.correct { border-color: #1a9850; background: #e5f5e0; }
.hit img { width: 180px; height: 96px; display: block; margin: 4px 0; }
.hit audio { width: 180px; height: 32px; }
table.confusion td { min-width: 20px; height: 20px; padding: 0 2px; font-size: 10px; text-align: center; }
table.confusion td.diag { outline: 1px solid #333; }
"""


@dataclass
class Retrieved:
    """One retrieved clip: its key, the similarity score, and whether it is the query's clip."""

    key: str
    score: float
    correct: bool


@dataclass
class QueryExample:
    """A text query, its clip's key and 1-based rank, and the top retrieved clips (best first)."""

    text: str
    target_key: str
    target_rank: int
    retrieved: list[Retrieved]


def sample_text_queries(
    audio_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    text_to_audio: torch.Tensor,
    keys: Sequence[str],
    captions: Sequence[str],
    num_queries: int = 8,
    top_k: int = 5,
    seed: int = 0,
) -> list[QueryExample]:
    """Top-k retrieved clips for a seeded random sample of `num_queries` captions.

    Args match `retrieval_metrics`, plus `keys` (Na clip keys) and `captions` (Nt caption strings).
    The reported rank uses the same pessimistic tie rule as `retrieval_metrics`.
    """
    if len(keys) != audio_embeds.shape[0] or len(captions) != text_embeds.shape[0]:
        raise ValueError(f"need {audio_embeds.shape[0]} keys and {text_embeds.shape[0]} captions")
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(text_embeds.shape[0], generator=generator)[:num_queries].sort().values
    scores, indices = top_k_retrievals(text_embeds[chosen], audio_embeds, k=top_k)
    ranks = text_to_audio_ranks(audio_embeds, text_embeds[chosen], text_to_audio[chosen])
    examples = []
    for row, caption_index in enumerate(chosen.tolist()):
        target = int(text_to_audio[caption_index])
        hits = [Retrieved(keys[int(i)], float(s), int(i) == target) for s, i in zip(scores[row], indices[row])]
        examples.append(QueryExample(captions[caption_index], keys[target], int(ranks[row]) + 1, hits))
    return examples


def _format_value(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else html.escape(str(value))


def _metrics_tables(metrics: Mapping[str, float]) -> str:
    """One table per first key segment ('clotho/t2a_R@1' -> table 'clotho', row 't2a_R@1')."""
    groups: dict[str, list[tuple[str, float]]] = {}
    for key, value in metrics.items():
        group, _, name = key.partition("/") if "/" in key else ("metrics", "", key)
        groups.setdefault(group, []).append((name, value))
    parts = []
    for group, rows in groups.items():
        body = "".join(
            f"<tr><td>{html.escape(name)}</td><td class='num'>{_format_value(value)}</td></tr>" for name, value in rows
        )
        parts.append(
            f"<h3>{html.escape(group)}</h3><table class='metrics'><tr><th>metric</th><th>value</th></tr>{body}</table>"
        )
    return "".join(parts)


class _ClipWriter:
    """Writes each clip once as clips/clip_NNNN.wav and renders its spectrogram once.

    Clips are identified by (set name, key): keys need only be unique within a set.
    """

    def __init__(self, out_dir: Path, sample_rate: int):
        self.out_dir, self.sample_rate = out_dir, sample_rate
        self.written: dict[tuple[str, str], tuple[str, str] | None] = {}
        self.num_files = 0

    def media(self, set_name: str, key: str, clip_audio) -> tuple[str, str] | None:
        """(relative wav path, PNG data URI) of a clip, or None when no audio is known for it."""
        if (set_name, key) not in self.written:
            waveform = _lookup(clip_audio, key)
            if waveform is None:
                self.written[set_name, key] = None
            else:
                name = f"clips/clip_{self.num_files:04d}.wav"
                self.num_files += 1
                (self.out_dir / "clips").mkdir(exist_ok=True)
                (self.out_dir / name).write_bytes(encode_wav(waveform, self.sample_rate))
                png = encode_png(spectrogram_image(waveform, self.sample_rate))
                self.written[set_name, key] = (name, "data:image/png;base64," + base64.b64encode(png).decode("ascii"))
        return self.written[set_name, key]


def _lookup(clip_audio, key: str):
    if clip_audio is None:
        return None
    if callable(clip_audio):
        return clip_audio(key)
    return clip_audio.get(key)


def _query_section(set_name: str, queries: Sequence[QueryExample], clip_audio, clips: _ClipWriter,
                   first_number: int, rows: list[dict]) -> str:
    """The HTML of one set's examples; appends one row per retrieved clip to `rows` (examples.json)."""
    title = "Text-to-audio examples" + (f": {html.escape(set_name)}" if set_name else "")
    parts = [f"<h2>{title}</h2>"]
    for number, query in enumerate(queries, start=first_number):
        hits = []
        for position, hit in enumerate(query.retrieved, start=1):
            media = clips.media(set_name, hit.key, clip_audio)
            rows.append({"set": set_name, "query": query.text, "target_key": query.target_key,
                         "target_rank": query.target_rank, "position": position, "key": hit.key, "score": hit.score,
                         "correct": hit.correct, "audio": media[0] if media else None})
            player = (
                f"<img src='{media[1]}' alt='spectrogram'><audio controls preload='none' src='{media[0]}'></audio>"
                if media
                else ""
            )
            css = "hit correct" if hit.correct else "hit"
            hits.append(
                f"<div class='{css}'><b>{position}.</b> {html.escape(hit.key)} "
                f"<span class='score'>({hit.score:.3f})</span>{player}</div>"
            )
        parts.append(
            f"<div class='query' id='query-{number}'><p><b>&ldquo;{html.escape(query.text)}&rdquo;</b> "
            f"&rarr; {html.escape(query.target_key)} (rank {query.target_rank})</p>"
            f"<div class='hits'>{''.join(hits)}</div></div>"
        )
    return "".join(parts)


def _confusion_section(name: str, matrix, class_names: Sequence[str]) -> str:
    """A heat-map table: row = true class, column = predicted class, shade = row-normalised count."""
    counts = np.asarray(matrix, dtype=np.int64)
    if counts.shape != (len(class_names), len(class_names)):
        raise ValueError(f"confusion {name!r}: matrix {counts.shape} does not match {len(class_names)} class names")
    totals = np.maximum(counts.sum(1, keepdims=True), 1)
    shares = counts / totals
    header = "".join(f"<th title='{html.escape(c)}'>{i}</th>" for i, c in enumerate(class_names))
    rows = []
    for i, label in enumerate(class_names):
        cells = []
        for j in range(len(class_names)):
            lightness = 100 - 70 * shares[i, j]
            css = " class='diag'" if i == j else ""
            text = str(counts[i, j]) if counts[i, j] else ""
            cells.append(
                f"<td{css} style='background:hsl(210,70%,{lightness:.0f}%)' "
                f"title='{html.escape(label)} &rarr; {html.escape(class_names[j])}: {counts[i, j]}'>{text}</td>"
            )
        rows.append(f"<tr><th>{i}. {html.escape(label)}</th>{''.join(cells)}</tr>")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    return (
        f"<h2>Confusion matrix: {html.escape(name)}</h2><p>top-1 accuracy {accuracy:.4f}; "
        f"rows are true classes, columns predicted classes</p>"
        f"<table class='confusion'><tr><th></th>{header}</tr>{''.join(rows)}</table>"
    )


def write_report(
    out_dir: str | Path,
    metrics: Mapping[str, float],
    queries: Sequence[QueryExample] = (),
    clip_audio: Mapping[str, np.ndarray] | Callable[[str], np.ndarray | None] | None = None,
    sample_rate: int = 48000,
    confusions: Mapping[str, tuple[object, Sequence[str]]] | None = None,
    title: str = "CLAP evaluation",
    query_sets: Mapping[str, tuple[Sequence[QueryExample], object]] | None = None,
) -> Path:
    """Write report.html, metrics.json, the example clips (clips/*.wav) and examples.json (one row per
    retrieved clip: set, query, target_key, target_rank, position, key, score, correct, and the audio path
    relative to `out_dir` or None) into `out_dir`; returns the html path.

    Args:
        out_dir: created if missing.
        metrics: flat metric dict; keys 'dataset/metric' are grouped into one table per dataset.
        queries: text queries with their top retrieved clips (`sample_text_queries`).
        clip_audio: mono float waveforms (L,) by clip key, as a mapping or a function (None = unknown);
            clips without audio are listed without player or spectrogram.
        sample_rate: of those waveforms.
        confusions: zero-shot confusion matrices by set name: ((C, C) counts, C class names).
        title: page title.
        query_sets: several evaluation sets' examples, {set name: (queries, clip_audio)}, one section
            each, shown after those of `queries`; keys need only be unique within a set.

    Raises:
        ValueError: if a confusion matrix does not match its class names.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
    (out_dir / "metrics.json").write_text(json.dumps(clean, indent=2, sort_keys=True) + "\n")
    sections = [f"<h1>{html.escape(title)}</h1>", "<h2>Metrics</h2>", _metrics_tables(metrics)]
    clips, number, rows = _ClipWriter(out_dir, sample_rate), 0, []
    named = ({"": (queries, clip_audio)} if queries else {}) | dict(query_sets or {})
    for set_name, (set_queries, set_audio) in named.items():
        sections.append(_query_section(set_name, set_queries, set_audio, clips, number, rows))
        number += len(set_queries)
    (out_dir / "examples.json").write_text(json.dumps(rows, indent=1) + "\n")
    for name, (matrix, class_names) in (confusions or {}).items():
        sections.append(_confusion_section(name, matrix, class_names))
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>{''.join(sections)}</body></html>\n"
    )
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
