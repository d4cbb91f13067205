"""A multilingual text student in the sentence-transformers layout (transformer + pooling + dense to CLIP's dimension)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clip_search.vectors import l2_normalise
from clip_search.config import DEFAULT_TEXT_BATCH_SIZE
from clip_search.device import resolve_device
from clip_search.errors import ModelLoadError, one_line
from clip_search.hub import check_hub_model

log = logging.getLogger(__name__)


@dataclass
class StudentTextEncoder:
    """A sentence-transformers model whose embeddings live in a CLIP model's joint space."""

    model: object  # sentence_transformers.SentenceTransformer (imported lazily: it is slow to import)
    model_id: str
    device: torch.device

    @classmethod
    def load(cls, model_id: str, *, device: str | None = None) -> StudentTextEncoder:
        """Load a student by hub id or local path."""
        from sentence_transformers import SentenceTransformer

        dev = resolve_device(device)
        cached_only = check_hub_model(model_id, what="multilingual text model")
        try:
            model = SentenceTransformer(model_id, device=str(dev), local_files_only=cached_only)
        except (OSError, ValueError, KeyError) as exc:
            where = "local folder" if Path(model_id).exists() else "model id"
            raise ModelLoadError(f"cannot load multilingual text {where} {model_id!r}: {one_line(exc)}") from None
        model.eval()
        return cls(model, str(model_id), dev)

    @property
    def dim(self) -> int:
        """Dimension of the embeddings it produces."""
        get = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(get())

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str], batch_size: int = DEFAULT_TEXT_BATCH_SIZE) -> np.ndarray:
        """Text embeddings: N×D, L2-normalised, float32."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        out = self.model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
        return l2_normalise(out)


def assemble_student(encoder_id: str, out_dim: int, *, device: str | None = None, max_seq_length: int = 128):
    """A new student: a Hugging Face encoder + mean pooling + a linear map to the teacher's dimension.

    Returns a `sentence_transformers.SentenceTransformer`; `.save(dir)` writes the layout that
    `StudentTextEncoder.load` and sentence-transformers both read.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Pooling, Transformer

    try:
        body = Transformer(encoder_id, max_seq_length=max_seq_length)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot load student encoder {encoder_id!r}: {one_line(exc)}") from None
    width = body.get_embedding_dimension() if hasattr(body, "get_embedding_dimension") else body.get_word_embedding_dimension()
    pooling = Pooling(width, pooling_mode="mean")
    dense = Dense(width, out_dim, bias=True, activation_function=torch.nn.Identity())
    return SentenceTransformer(modules=[body, pooling, dense], device=str(resolve_device(device)))
