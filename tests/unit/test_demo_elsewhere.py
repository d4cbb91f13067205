"""clip_search.demo.elsewhere: out-of-world sentences, parallel in every demo language, and held apart from eval's."""

from __future__ import annotations

import random
import re

from clip_search.demo.captions import LANGUAGES, caption, full_caption
from clip_search.demo.elsewhere import ENGLISH_FRAMES, elsewhere_phrases, elsewhere_sentences, parallel_elsewhere
from clip_search.demo.evaluate import OUT_OF_WORLD_QUERIES
from clip_search.demo.scenes import generate_scenes


def _words(text: str, lang: str) -> set[str]:
    """Words of a sentence; for Chinese, which has no spaces, every two characters in a row."""
    text = text.lower()
    if lang == "zh":
        return {text[i : i + 2] for i in range(len(text) - 1)}
    return set(re.findall(r"\w+", text))


def test_phrases_are_parallel_in_every_language_and_distinct() -> None:
    phrases = {lang: elsewhere_phrases(lang) for lang in LANGUAGES}
    assert len({len(p) for p in phrases.values()}) == 1 and len(phrases["en"]) > 500
    assert all(len(set(p)) == len(p) for p in phrases.values())
    assert "an elephant in a garden" in phrases["en"] and "大象在花园里" in phrases["zh"]
    assert len(elsewhere_sentences()) == len(ENGLISH_FRAMES) * len(phrases["en"])


def test_no_word_of_evals_out_of_world_queries_is_trained_on_unless_shape_captions_use_it() -> None:
    # eval's out-of-world figure must measure unknown things: the words training adds share nothing with its queries
    rng, scenes = random.Random(0), generate_scenes(3000, seed=1)
    for lang in LANGUAGES:
        world = set().union(*(_words(caption(s, lang, rng), lang) | _words(full_caption(s, lang), lang) for s in scenes))
        trained = set().union(*(_words(t, lang) for t in elsewhere_phrases(lang) + (elsewhere_sentences() if lang == "en" else [])))
        held_out = set().union(*(_words(q, lang) for q in OUT_OF_WORLD_QUERIES[lang]))
        assert (trained & held_out) <= world, (lang, sorted((trained & held_out) - world))


def test_parallel_pairs_give_english_and_its_translation_of_the_same_phrase() -> None:
    pairs = parallel_elsewhere(LANGUAGES, random.Random(0), share=0.5)
    index = {lang: dict(zip(elsewhere_phrases("en"), elsewhere_phrases(lang))) for lang in LANGUAGES}
    assert {lang for _, lang, _ in pairs} == set(LANGUAGES)
    assert all(index[lang][english] == translation for english, lang, translation in pairs)
    assert len(pairs) == len(LANGUAGES) * round(0.5 * len(elsewhere_phrases("en")))
