"""Retrieval quality on held-out demo scenes: precision@k per language and zero-shot accuracy.

The gallery goes through the real pipeline: rendered scenes are written as PNG files, embedded by
`precompute` into a store, and searched from that store. A bug in training, decoding, encoding, normalisation,
storage, search or distillation therefore shows up here as a lower number.
"""

from __future__ import annotations

import itertools
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clip_search.classify import embed_labels, zero_shot_probabilities
from clip_search.config import TORCH_BACKEND
from clip_search.demo.captions import LANGUAGES, label_prompts, label_values, query_text
from clip_search.demo.scenes import EVAL_SEED, Query, Scene, generate_scenes, render, truth_matrix
from clip_search.engine import SearchEngine
from clip_search.precompute import precompute
from clip_search.search import top_k

log = logging.getLogger(__name__)

# What eval queries ask for: every combination of these attribute kinds' values.
QUERY_KINDS: tuple[tuple[str, ...], ...] = (("shape", "color"), ("shape", "color", "size"), ("color", "count"))
K_VALUES = (1, 5, 10)
CLIP_ENGLISH = "en"
STUDENT_ENGLISH = "en-student"
DEFAULT_EVAL_SCENES = 2000


@dataclass
class EvalReport:
    """precision_at[k][lang] and zero_shot_accuracy[kind], plus what was measured."""

    precision_at: dict[str, dict[str, float]]
    zero_shot_accuracy: dict[str, float]
    queries: int
    gallery: int
    details: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_json(self) -> dict:
        """The JSON form `clip-search eval --json` prints."""
        return {"precision_at": self.precision_at, "zero_shot_accuracy": self.zero_shot_accuracy}

    def table(self) -> str:
        """A plain-text table: one row per language, one column per k; then zero-shot accuracy."""
        langs = list(self.precision_at[str(K_VALUES[0])])
        lines = [f"text→image precision@k on {self.gallery} held-out scenes, {self.queries} queries per language", ""]
        lines.append("language     " + "".join(f"  P@{k:<4}" for k in K_VALUES))
        for lang in langs:
            lines.append(f"{lang:<12} " + "".join(f"  {self.precision_at[str(k)][lang]:.3f} " for k in K_VALUES))
        lines.append("")
        lines.append("zero-shot accuracy: " + ", ".join(f"{kind} {acc:.3f}" for kind, acc in self.zero_shot_accuracy.items()))
        return "\n".join(lines)


def eval_queries(scenes: Sequence[Scene], min_matches: int = max(K_VALUES)) -> list[Query]:
    """Every query of QUERY_KINDS with at least `min_matches` matching scenes in the gallery."""
    candidates = [Query(**dict(zip(kinds, values))) for kinds in QUERY_KINDS for values in itertools.product(*(label_values(k) for k in kinds))]
    matches = truth_matrix(candidates, scenes).sum(axis=1)
    return [q for q, n in zip(candidates, matches) if n >= min_matches]


def precision_at(matrix: np.ndarray, query_vectors: np.ndarray, relevant: np.ndarray, ks: Sequence[int] = K_VALUES) -> dict[int, float]:
    """Mean share of the top k that are relevant, for each k; `relevant` is queries×gallery booleans."""
    kmax = max(ks)
    hits = np.stack([relevant[i, top_k(matrix, q, kmax)[0]] for i, q in enumerate(query_vectors)])
    return {k: float(hits[:, :k].mean()) for k in ks}


def _write_gallery(scenes: Sequence[Scene], folder: Path, size: int) -> None:
    for i, scene in enumerate(scenes):
        render(scene, size).save(folder / f"scene-{i:05d}.png")


def evaluate(
    model: str | Path,
    text_model: str | Path | None,
    *,
    scenes: int = DEFAULT_EVAL_SCENES,
    seed: int = EVAL_SEED,
    languages: Sequence[str] = LANGUAGES,
    image_size: int = 64,
    device: str | None = None,
    backend: str = TORCH_BACKEND,
) -> EvalReport:
    """Measure the demo models on `scenes` held-out scenes (seed disjoint from training); images are encoded by
    torch fp32 unless `backend` says otherwise (bench/backends.py compares each backend's figures to it)."""
    gallery = generate_scenes(scenes, seed)
    with tempfile.TemporaryDirectory(prefix="clip-search-eval-") as tmp:
        images, store_dir = Path(tmp) / "images", Path(tmp) / "store"
        images.mkdir()
        _write_gallery(gallery, images, image_size)
        precompute(str(images), store_dir, model=str(model), text_model=str(text_model) if text_model else None, batch_size=128, num_workers=0, device=device, progress=False, backend=backend)
        engine = SearchEngine.load(store_dir, device=device)
        matrix = engine.store.vectors(range(len(engine.store)))
        # Rows are in sorted file order, which is scene order (zero-padded names).
        queries = eval_queries(gallery)
        relevant = truth_matrix(queries, gallery)
        encoders = {CLIP_ENGLISH: ("en", engine.clip)}
        if engine.multilingual:
            encoders[STUDENT_ENGLISH] = ("en", engine.text_encoder)
            encoders.update({lang: (lang, engine.text_encoder) for lang in languages if lang != "en"})
        precision: dict[str, dict[str, float]] = {str(k): {} for k in K_VALUES}
        for name, (lang, encoder) in encoders.items():
            vectors = encoder.encode_texts([query_text(q, lang) for q in queries])
            for k, value in precision_at(matrix, vectors, relevant).items():
                precision[str(k)][name] = round(value, 4)
        accuracy = {}
        for kind in ("shape", "color"):
            labels = embed_labels(label_prompts(kind, "en"), engine.clip.encode_texts, templates=("{}",))
            predicted = zero_shot_probabilities(matrix, labels, engine.logit_scale).argmax(axis=1)
            truth = np.array([label_values(kind).index(getattr(s, kind)) for s in gallery])
            accuracy[kind] = round(float((predicted == truth).mean()), 4)
    return EvalReport(precision, accuracy, len(queries), len(gallery))
