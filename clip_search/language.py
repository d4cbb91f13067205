"""Which language a few words are in (labels typed by a user), for choosing prompt templates in that language."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=8)
def _identifier(languages: tuple[str, ...]) -> Any:
    # langid's model is read once per process (about 6 s); only label sets through a multilingual student need it.
    from langid.langid import LanguageIdentifier, model

    identifier = LanguageIdentifier.from_modelstring(model, norm_probs=True)
    identifier.set_languages(list(languages))
    return identifier


def detect_language(texts: Sequence[str], languages: Sequence[str], min_confidence: float) -> str | None:
    """The language of `texts` taken together, among `languages` (ISO 639-1), or None below `min_confidence`.

    Taken together because one dictionary word rarely says its language ("orange"), while a set of them does
    ("rot, grün, blau, orange" is German)."""
    text = ", ".join(t for t in texts if t.strip())
    if not text or not languages:
        return None
    language, confidence = _identifier(tuple(sorted(languages))).classify(text)
    return language if confidence >= min_confidence else None
