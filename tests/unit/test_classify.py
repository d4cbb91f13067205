"""clip_search.classify: open-set labels (none of these, a single label as yes/no) and labels in their own language."""

from __future__ import annotations

import numpy as np
import pytest

from clip_search.classify import fit_probabilities, label_prompts, labels_language, open_set_probabilities, zero_shot_probabilities
from clip_search.config import LABEL_FIT_CERTAINTY, LABEL_TEMPLATES
from clip_search.vectors import l2_normalise


KIND = np.arange(300) % 6


def _world(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """300 images, a sixth near each of six label directions (axes 0 to 5), and the six labels."""
    rng = np.random.default_rng(seed)
    images = rng.normal(scale=0.3, size=(300, 8)).astype(np.float32)
    images[np.arange(300), KIND] += 1.0
    return l2_normalise(images), np.eye(6, 8, dtype=np.float32)


def test_open_set_rows_sum_to_one_and_keep_the_closed_order() -> None:
    images, labels = _world()
    answer = open_set_probabilities(images, labels, 20.0, images)
    np.testing.assert_allclose(answer.probabilities.sum(axis=1) + answer.none, 1.0, rtol=1e-5)
    np.testing.assert_array_equal(answer.probabilities.argmax(axis=1), zero_shot_probabilities(images, labels, 20.0).argmax(axis=1))
    assert (answer.probabilities.argmax(axis=1) == KIND).mean() > 0.95


def test_an_image_no_label_fits_is_none_of_these() -> None:
    images, labels = _world()
    # images of the last kind, asked about the first two labels only
    answer = open_set_probabilities(images[KIND == 5], labels[:2], 20.0, images)
    assert (answer.none > answer.probabilities.max(axis=1)).mean() > 0.9


def test_a_single_label_is_a_yes_or_no_never_certain() -> None:
    images, labels = _world()
    answer = open_set_probabilities(images, labels[:1], 20.0, images)
    yes = answer.probabilities[:, 0]
    assert yes.max() <= LABEL_FIT_CERTAINTY and yes.min() >= 1 - LABEL_FIT_CERTAINTY
    assert yes[KIND == 0].mean() > 0.8 and yes[KIND != 0].mean() < 0.2
    np.testing.assert_allclose(fit_probabilities(images, labels[:1], images)[:, 0], yes, rtol=1e-6)


def test_german_adjectives_are_inflected_and_nouns_kept() -> None:
    prompts = label_prompts(["rot", "weiß", "orange", "Stern"], "de")
    assert prompts[0] == ("eine rote Form",) and prompts[1] == ("eine weiße Form",) and prompts[2] == ("eine orange Form",)
    assert prompts[3] == tuple(t.format("Stern") for t in LABEL_TEMPLATES["de"])
    assert label_prompts(["rouge"], "fr") == [tuple(t.format("rouge") for t in LABEL_TEMPLATES["fr"])]
    assert label_prompts(["rot"], None) == [("rot",)]  # no language detected: the label alone


@pytest.mark.parametrize(
    ("labels", "language"),
    [
        (["rot", "grün", "blau", "gelb", "orange", "violett", "weiß", "schwarz"], "de"),
        (["Kreis", "Quadrat", "Dreieck", "Stern", "Herz"], "de"),
        (["rouge", "vert", "bleu", "jaune", "orange", "violet", "blanc", "noir"], "fr"),
        (["rouge", "vert", "bleu", "jaune"], None),  # 0.61 sure it is French: below LABEL_LANGUAGE_CONFIDENCE
        (["círculo", "cuadrado", "triángulo", "estrella", "corazón"], "es"),
        (["красный", "зелёный", "синий"], "ru"),
        (["红色", "绿色", "蓝色"], "zh"),
        (["red", "green", "blue", "yellow", "orange", "purple", "white", "black"], "en"),
        (["cat"], None),  # one short word: not sure, so no template
    ],
)
def test_the_language_of_a_label_set_is_detected(labels: list[str], language: str | None) -> None:
    assert labels_language(labels) == language
