"""Zero-shot classification of stored image embeddings against labels the user types (no image re-encoding)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

from clip_search.vectors import l2_normalise
from clip_search.config import DEFAULT_TEMPLATES
from clip_search.errors import QueryError

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
    if not labels:
        raise QueryError("no labels given: type labels separated by commas, e.g. 'cat, dog, car'")
    if not templates:
        raise QueryError("no prompt templates given")
    prompts = [template.format(label) for label in labels for template in templates]
    vectors = encode_texts(prompts).reshape(len(labels), len(templates), -1)
    return l2_normalise(l2_normalise(vectors).mean(axis=1))


def zero_shot_probabilities(image_embeddings: np.ndarray, label_embeddings: np.ndarray, logit_scale: float) -> np.ndarray:
    """N×L probabilities: softmax over labels of the logit-scaled cosine similarities."""
    logits = logit_scale * (np.asarray(image_embeddings, np.float32) @ label_embeddings.T)
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)
