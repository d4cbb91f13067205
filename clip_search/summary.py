"""What a result set says: its most representative captions, an abstractive summary when a model is given, and how
its hits spread over labels.

Extractive (the default, offline): captions picked by maximal marginal relevance under a sentence encoder, each
close to the centroid of all the results' captions (central) and far from those already picked (diverse).
Abstractive: a sequence-to-sequence model (`AutoModelForSeq2SeqLM`, e.g. a BART or T5 summariser) generates from the
captions joined; transformers 5 has no "summarization" pipeline any more, so this is the tokenizer + `generate`
that pipeline ran.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clip_search.errors import ModelLoadError, one_line
from clip_search.vectors import l2_normalise

SUMMARY_CAPTIONS = 3
SUMMARY_DIVERSITY = 0.5  # weight of "far from the captions picked" against "close to the centroid"


@dataclass
class ResultSummary:
    """Representative captions (best first), the abstractive summary if one was made, and the label spread."""

    captions: list[str]
    abstract: str | None = None
    spread: dict[str, float] = field(default_factory=dict)


def representative(captions: Sequence[str], vectors: np.ndarray, count: int = SUMMARY_CAPTIONS, diversity: float = SUMMARY_DIVERSITY) -> list[str]:
    """Up to `count` distinct captions, central and diverse (maximal marginal relevance over their unit vectors)."""
    unique: dict[str, int] = {}
    for i, text in enumerate(captions):
        if text and text.strip() and text not in unique:
            unique[text] = i
    if not unique:
        return []
    rows = list(unique.values())
    matrix = l2_normalise(np.asarray(vectors, np.float32)[rows])
    centrality = matrix @ l2_normalise(matrix.mean(axis=0, keepdims=True))[0]
    picked: list[int] = []
    while len(picked) < min(count, len(rows)):
        redundancy = (matrix @ matrix[picked].T).max(axis=1) if picked else np.zeros(len(rows))
        score = (1 - diversity) * centrality - diversity * redundancy
        score[picked] = -np.inf
        picked.append(int(np.argmax(score)))
    return [captions[rows[i]] for i in picked]


def label_spread(labels: Sequence[str | None]) -> dict[str, float]:
    """The share of results per label (each result's top label, or its value of a classifier column), largest first."""
    present = [label for label in labels if label is not None]
    counts: dict[str, int] = {}
    for label in present:
        counts[label] = counts.get(label, 0) + 1
    return {label: round(n / len(present), 4) for label, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))}


class Summarizer:
    """A sequence-to-sequence summarisation model (hub id or folder), loaded once."""

    def __init__(self, model: str | Path, max_input_tokens: int = 512, max_new_tokens: int = 60, min_new_tokens: int = 5) -> None:
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(model))
            self.model = AutoModelForSeq2SeqLM.from_pretrained(str(model)).eval()
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"cannot load summarisation model {str(model)!r}: {one_line(exc)}") from None
        positions = getattr(self.model.config, "max_position_embeddings", None)  # the model reads no more than this
        self.max_input_tokens = min(max_input_tokens, positions) if positions else max_input_tokens
        self.max_new_tokens = max_new_tokens
        self.min_new_tokens = min(min_new_tokens, max_new_tokens)

    def __call__(self, captions: Sequence[str]) -> str:
        """One summary of the captions (joined as sentences), greedy so that it is reproducible."""
        import torch

        text = " ".join(c.strip().rstrip(".") + "." for c in dict.fromkeys(captions) if c and c.strip())
        inputs = self.tokenizer(text, return_tensors="pt", truncation=True, max_length=self.max_input_tokens)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, min_new_tokens=self.min_new_tokens, do_sample=False, num_beams=1)
        return " ".join(self.tokenizer.decode(out[0], skip_special_tokens=True).split())


def summarize(
    captions: Sequence[str | None],
    encode: Callable[[Sequence[str]], np.ndarray],
    labels: Sequence[str | None] = (),
    *,
    count: int = SUMMARY_CAPTIONS,
    summarizer: Summarizer | None = None,
) -> ResultSummary:
    """The summary of a result set from its hits' captions (in rank order), a sentence encoder and their labels."""
    texts = [c for c in captions if c and c.strip()]
    vectors = encode(texts) if texts else np.zeros((0, 1), np.float32)
    picked = representative(texts, vectors, count) if texts else []
    abstract = summarizer(texts) if summarizer is not None and texts else None
    return ResultSummary(picked, abstract, label_spread(labels))


def summarize_result(engine: Any, result: Any, *, count: int = SUMMARY_CAPTIONS, summarizer: Summarizer | None = None, label_column: str | None = None) -> ResultSummary:
    """`summarize` for a `SearchResult` of `engine`: captions encoded by the store's caption model when it has a text
    index (else its query text encoder); labels from `label_column` of the hits' metadata, else their top zero-shot label."""
    encoder = engine.caption_encoder if engine.store.manifest.text_index is not None else engine.text_encoder
    if label_column is not None:
        labels = [None if h.metadata.get(label_column) is None else str(h.metadata[label_column]) for h in result.hits]
    else:
        labels = [h.labels[0][0] if h.labels else None for h in result.hits]
    return summarize([h.caption for h in result.hits], encoder.encode_texts, labels, count=count, summarizer=summarizer)
