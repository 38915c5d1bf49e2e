"""Caption text helpers shared by the importers and keyword_to_caption: templates and de-biasing."""

from __future__ import annotations

import re

# Gendered words and the neutral word that replaces them (the CLAP paper de-biases generated
# captions the same way). Whole words only, so "manage" or "human" are untouched.
NEUTRAL_WORDS = {
    "woman": "person",
    "man": "person",
    "lady": "person",
    "gentleman": "person",
    "women": "people",
    "men": "people",
    "ladies": "people",
    "gentlemen": "people",
    "girl": "child",
    "boy": "child",
    "girls": "children",
    "boys": "children",
    "he": "they",
    "she": "they",
    "him": "them",
    "his": "their",
    "her": "their",
    "hers": "theirs",
    "himself": "themselves",
    "herself": "themselves",
    "male": "person",
    "female": "person",
}
_GENDERED = re.compile(r"\b(" + "|".join(sorted(NEUTRAL_WORDS, key=len, reverse=True)) + r")\b", re.IGNORECASE)


def _match_case(word: str, replacement: str) -> str:
    if word.isupper() and len(word) > 1:
        return replacement.upper()
    if word[0].isupper():
        return replacement[0].upper() + replacement[1:]
    return replacement


def debias(text: str) -> str:
    """Replace gendered words by neutral ones, whole-word and case-preserving.

    `"A Man and a WOMAN talk"` -> `"A Person and a PERSON talk"`.
    """
    return _GENDERED.sub(lambda match: _match_case(match.group(0), NEUTRAL_WORDS[match.group(0).lower()]), text)


def clean_label(label: str) -> str:
    """`"chirping_birds"` -> `"chirping birds"`; collapses whitespace."""
    return " ".join(label.replace("_", " ").split())


def join_keywords(keywords: list[str]) -> str:
    """`["a", "b", "c"]` -> `"a, b and c"`."""
    keywords = [clean_label(keyword) for keyword in keywords if clean_label(keyword)]
    if len(keywords) <= 1:
        return "".join(keywords)
    return ", ".join(keywords[:-1]) + " and " + keywords[-1]


def template_caption(keywords: list[str]) -> str:
    """The deterministic caption of a keyword list: `"the sound of a, b and c"`.

    Raises:
        ValueError when `keywords` holds no non-empty keyword.
    """
    joined = join_keywords(keywords)
    if not joined:
        raise ValueError(f"keywords: no non-empty keyword in {keywords!r}")
    return f"the sound of {joined.lower()}"


def split_list(value: str, separators: str) -> list[str]:
    """Split `value` at any of `separators`, strip items and drop empty ones."""
    pattern = "[" + re.escape(separators) + "]"
    return [item.strip() for item in re.split(pattern, value) if item.strip()]
