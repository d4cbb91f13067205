"""Zero-shot classification of stored image embeddings against labels the user types (no image re-encoding).

Labels are honest in two ways. Open set: besides the softmax over the typed labels, each label is checked against
its own scores over the store (does this image stand out for the label?), so an image that fits none of them gets
NONE_OF_THESE, and a single label is a yes/no with a probability instead of a certain 100%. Any language: through
a multilingual student, labels are put in prompt templates of their own language (`label_prompts`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from clip_search.config import (
    DEFAULT_TEMPLATES,
    LABEL_FIT_CERTAINTY,
    LABEL_FIT_SLOPE,
    LABEL_FIT_Z,
    LABEL_GERMAN_ADJECTIVE_TEMPLATES,
    LABEL_LANGUAGE_CONFIDENCE,
    LABEL_TEMPLATES,
)
from clip_search.errors import QueryError
from clip_search.vectors import l2_normalise

TextEncodeFn = Callable[[Sequence[str]], np.ndarray]


def parse_labels(text: str) -> list[str]:
    """Labels from user text separated by commas, semicolons or new lines; blanks and repeats dropped."""
    labels: list[str] = []
    for part in re.split(r"[,;\n，、；]", text or ""):
        label = " ".join(part.split())
        if label and label not in labels:
            labels.append(label)
    return labels


def embed_labels(labels: Sequence[str], encode_texts: TextEncodeFn, templates: Sequence[str] = DEFAULT_TEMPLATES) -> np.ndarray:
    """One unit vector per label: the mean of its prompt-template embeddings (CLIP's prompt ensembling)."""
    if not templates:
        raise QueryError("no prompt templates given")
    return embed_prompts([[template.format(label) for template in templates] for label in labels], encode_texts)


def embed_prompts(prompts: Sequence[Sequence[str]], encode_texts: TextEncodeFn) -> np.ndarray:
    """One unit vector per label from its own prompts (any number each): the mean of their unit embeddings."""
    if not prompts:
        raise QueryError("no labels given: type labels separated by commas, e.g. 'cat, dog, car'")
    flat = [p for group in prompts for p in group]
    vectors = l2_normalise(encode_texts(flat))
    bounds = np.cumsum([0, *(len(group) for group in prompts)])
    return l2_normalise(np.stack([vectors[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:])]))


def label_prompts(labels: Sequence[str], language: str | None) -> list[tuple[str, ...]]:
    """Each label in the prompt templates of `language` (LABEL_TEMPLATES), or alone when it has none.

    German is the one language whose dictionary form of an adjective ("rot") is never what a caption says
    ("ein roter Stern"); nouns are capitalised there, so a lower-case German label is inflected as an adjective."""
    out = []
    for label in labels:
        if language == "de" and label[:1].islower():
            out.append(tuple(t.format(_german_attributive(label)) for t in LABEL_GERMAN_ADJECTIVE_TEMPLATES))
        else:
            out.append(tuple(t.format(label) for t in LABEL_TEMPLATES.get(language or "", ("{}",))))
    return out


def labels_language(labels: Sequence[str]) -> str | None:
    """The language of a label set among those with templates (LABEL_TEMPLATES), or None when unsure."""
    from clip_search.language import detect_language

    return detect_language(labels, tuple(LABEL_TEMPLATES), LABEL_LANGUAGE_CONFIDENCE)


def _german_attributive(adjective: str) -> str:
    """The feminine singular form after "eine": rot -> rote, weiß -> weiße; orange, lila, rosa stay as they are."""
    return adjective if adjective.endswith(("e", "a")) else adjective + "e"


def zero_shot_probabilities(image_embeddings: np.ndarray, label_embeddings: np.ndarray, logit_scale: float) -> np.ndarray:
    """N×L probabilities: softmax over labels of the logit-scaled cosine similarities."""
    logits = logit_scale * (np.asarray(image_embeddings, np.float32) @ label_embeddings.T)
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class OpenSetLabels:
    """N×L probabilities of the typed labels and the N probabilities of none of them; each row sums to one."""

    probabilities: np.ndarray
    none: np.ndarray


def fit_probabilities(image_embeddings: np.ndarray, label_embeddings: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """N×L probabilities that each label fits each image: how far the image stands out from the label's scores over
    `reference` (a sample of the store's rows), as sigmoid(LABEL_FIT_SLOPE * (z - LABEL_FIT_Z)), kept within
    LABEL_FIT_CERTAINTY of 0 and 1."""
    over_reference = np.asarray(reference, np.float32) @ label_embeddings.T
    mean, std = over_reference.mean(axis=0), np.maximum(over_reference.std(axis=0), 1e-6)
    z = (np.asarray(image_embeddings, np.float32) @ label_embeddings.T - mean) / std
    return np.clip(1.0 / (1.0 + np.exp(-LABEL_FIT_SLOPE * (z - LABEL_FIT_Z))), 1.0 - LABEL_FIT_CERTAINTY, LABEL_FIT_CERTAINTY)


def open_set_probabilities(image_embeddings: np.ndarray, label_embeddings: np.ndarray, logit_scale: float, reference: np.ndarray) -> OpenSetLabels:
    """The softmax over labels, scaled by the probability that the best label fits at all; the rest is "none".

    With one label this is a yes/no: P(yes) that it fits, P(none) that it does not."""
    closed = zero_shot_probabilities(image_embeddings, label_embeddings, logit_scale)
    fits = fit_probabilities(image_embeddings, label_embeddings, reference)
    best_fits = fits[np.arange(len(closed)), closed.argmax(axis=1)] if len(closed) else np.zeros(0)
    return OpenSetLabels(closed * best_fits[:, None], 1.0 - best_fits)
