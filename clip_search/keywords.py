"""Keyword search over a store's text: a BM25 index (bm25s) with tokens that work in every language.

Words of alphabetic scripts are split on anything that is not a letter or digit and case-folded. Chinese, Japanese
and Korean write no spaces between words, so a run of their characters becomes its overlapping character bigrams
("红色星星" → 红色 色星 星星), the usual unit of CJK keyword search; a lone character is its own token. Stop words of
the European languages bm25s lists ("a", "the", "der", "и" …) are left out: on short captions they otherwise score as
much as the words that matter. No stemming: "stars" does not match "star".

`without_words` cuts words out of a query as typed (hybrid search hands the image encoder a query without the words
only the text index can explain).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]+|[^\W{_CJK}]+")
_CJK_RUN = re.compile(rf"[{_CJK}]+")
_WORD = re.compile(r"\w+")
_EDGE = " \t,;:.!?-–—/&+"  # what is left dangling at either end of a query once words are cut out


STOPWORD_LISTS = ("STOPWORDS_EN", "STOPWORDS_GERMAN", "STOPWORDS_FRENCH", "STOPWORDS_SPANISH", "STOPWORDS_ITALIAN", "STOPWORDS_PORTUGUESE", "STOPWORDS_RUSSIAN")


@lru_cache(maxsize=1)
def stopwords() -> frozenset[str]:
    """The stop words left out of keyword search (bm25s's lists, case-folded)."""
    import bm25s.stopwords

    return frozenset(w.casefold() for name in STOPWORD_LISTS for w in getattr(bm25s.stopwords, name))


def tokenize(text: str | None) -> list[str]:
    """The BM25 tokens of a text: case-folded words that are not stop words, and character bigrams of CJK runs."""
    tokens: list[str] = []
    for match in _TOKEN.finditer((text or "").casefold()):
        run = match.group()
        if _CJK_RUN.fullmatch(run) and len(run) > 1:
            tokens.extend(run[i : i + 2] for i in range(len(run) - 1))
        elif run not in stopwords():
            tokens.append(run)
    return tokens


def without_words(text: str, words: set[str]) -> str:
    """`text` without the (case-folded) `words`, and without the stop words that led up to each one ("a red star from
    the harbour collection" without {harbour, collection}: "a red star"); separators left dangling at the ends go."""
    matches = list(_WORD.finditer(text))
    dropped = [m.group().casefold() in words for m in matches]
    for i in [i for i, d in enumerate(dropped) if d]:
        j = i - 1
        while j >= 0 and not dropped[j] and matches[j].group().casefold() in stopwords():
            dropped[j] = True
            j -= 1
    kept, end = [], 0
    for m, drop in zip(matches, dropped):
        if drop:
            kept.append(text[end : m.start()].rstrip(_EDGE) if kept else "")
        else:
            kept.append(text[end : m.start()] if kept else "")
            kept.append(m.group())
        end = m.end()
    return "".join(kept).strip(_EDGE)


class KeywordIndex:
    """BM25 over one text per store row (bm25s, its default Lucene variant and parameters)."""

    def __init__(self, retriever: object, count: int) -> None:
        self._retriever = retriever
        self.count = count

    @classmethod
    def build(cls, texts: Sequence[str | None]) -> KeywordIndex:
        """Index one text per row (an empty or missing text matches nothing)."""
        import bm25s

        retriever = bm25s.BM25()
        retriever.index([tokenize(t) for t in texts], show_progress=False)
        return cls(retriever, len(texts))

    def save(self, folder: Path) -> None:
        """Write the index's arrays and vocabulary into `folder`."""
        self._retriever.save(str(folder), show_progress=False)

    @classmethod
    def load(cls, folder: Path, count: int) -> KeywordIndex:
        """Read an index written by `save`, for a store of `count` rows."""
        import bm25s

        return cls(bm25s.BM25.load(str(folder), show_progress=False, verbosity=0), count)

    def known_words(self, text: str) -> list[str]:
        """The words of `text` (case-folded, stop words and CJK runs left out) that some indexed text holds."""
        return [w for w in dict.fromkeys(_WORD.findall((text or "").casefold())) if not _CJK_RUN.search(w) and w not in stopwords() and w in self._retriever.vocab_dict]

    def scores(self, text: str) -> np.ndarray:
        """The BM25 score of every row for `text` (0 where no query token occurs), float32."""
        tokens = [t for t in tokenize(text) if t in self._retriever.vocab_dict]
        if not tokens:
            return np.zeros(self.count, np.float32)
        return np.asarray(self._retriever.get_scores(tokens), np.float32)
