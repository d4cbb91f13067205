"""BM25 keyword search: tokens for alphabetic scripts and CJK, ranking, a saved index read back, and words cut out of
a query."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clip_search.keywords import KeywordIndex, tokenize, without_words

TEXTS = [
    "Boats in the harbour of Lisbon",
    "A red tram climbing a street in Lisbon",
    "港口的红色小船",  # red boats in the harbour
    "山上的雪和蓝天",  # snow on the mountain and a blue sky
    "Schnee auf dem Berg",
    "",
]


def test_words_are_case_folded_and_split_on_punctuation() -> None:
    assert tokenize("Boats, near HARBOUR-side!") == ["boats", "near", "harbour", "side"]
    assert tokenize("Straße") == ["strasse"]
    assert tokenize(None) == []


def test_cjk_runs_become_character_bigrams() -> None:
    assert tokenize("红色小船") == ["红色", "色小", "小船"]
    assert tokenize("船") == ["船"]
    assert tokenize("red 小船 boat") == ["red", "小船", "boat"]


def test_stop_words_are_left_out() -> None:
    assert tokenize("a dog on the beach") == ["dog", "beach"]
    assert tokenize("der Hund und die Katze") == ["hund", "katze"]
    assert tokenize("photo东京2024") == ["photo", "东京", "2024"]


def test_bm25_ranks_rows_with_the_query_words_first() -> None:
    index = KeywordIndex.build(TEXTS)
    scores = index.scores("harbour Lisbon")
    assert scores.shape == (len(TEXTS),) and scores.dtype == np.float32
    assert int(np.argmax(scores)) == 0  # both words
    assert scores[1] > 0 and scores[2] == scores[3] == scores[5] == 0


def test_chinese_query_finds_chinese_text_without_spaces() -> None:
    index = KeywordIndex.build(TEXTS)
    scores = index.scores("红色的船")  # "red boat": shares the bigram 红色 with row 2 only
    assert int(np.argmax(scores)) == 2 and scores[3] == 0


def test_unknown_words_score_nothing() -> None:
    assert not KeywordIndex.build(TEXTS).scores("zebra giraffe").any()


def test_saved_index_gives_the_same_scores(tmp_path: Path) -> None:
    index = KeywordIndex.build(TEXTS)
    index.save(tmp_path / "bm25")
    loaded = KeywordIndex.load(tmp_path / "bm25", len(TEXTS))
    np.testing.assert_array_equal(loaded.scores("harbour 红色 Berg"), index.scores("harbour 红色 Berg"))


def test_known_words_are_the_query_words_some_text_holds() -> None:
    index = KeywordIndex.build(TEXTS)
    assert index.known_words("Red boats in the Harbour, red!") == ["red", "boats", "harbour"]  # once each, no stop words
    assert index.known_words("港口 zebra") == []  # CJK runs are never cut out of a query


@pytest.mark.parametrize(
    "text, words, left",
    [
        ("a red star in the harbour collection", {"harbour", "collection"}, "a red star"),  # with the stop words before them
        ("a red star, harbour", {"harbour"}, "a red star"),
        ("Harbour: red stars", {"harbour"}, "red stars"),
        ("a red star in the harbour, at night", {"harbour"}, "a red star, at night"),
        ("harbour", {"harbour"}, ""),
        ("a red star", set(), "a red star"),
    ],
)
def test_without_words_cuts_words_and_what_led_up_to_them(text: str, words: set[str], left: str) -> None:
    assert without_words(text, words) == left
