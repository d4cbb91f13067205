"""Hybrid search on held-out demo scenes: queries that need a catalogue fact and a visual attribute at once.

Each gallery image gets a catalogue note as its caption (`collection_note`: the collection it belongs to, which its
pixels do not show, and its shape, never its colour). The gallery goes through the real pipeline: rendered PNG
files and their notes (metadata.jsonl) are embedded by `precompute` with the demo models, and the notes indexed by
`build_text_index` with a real sentence-transformers model. Then
- fact queries, such as "a red star from the harbour collection", match only scenes of that colour (seen only in the
  pixels) and that collection (said only in the notes): image search alone and caption search alone each get one
  part right, hybrid search must get both;
- visual queries (those of `clip-search eval`, "a large red star") must not get worse under hybrid than under image
  search alone.
Every mode ranks with the code `SearchEngine.search` runs (the index's search, `TextSearch.visual_text` and
`TextSearch.search`), the query vectors encoded in one batch per encoder. Besides the default hybrid ranking, the
report gives hybrid with the other fusions, and hybrid whose image half sees the whole query ("hybrid-whole").
Fusion and weights are chosen on the scenes of CALIBRATION_SEED (`calibration=True`), reported on EVAL_SEED's.
"""

from __future__ import annotations

import itertools
import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clip_search.config import CAPTION_MODE, HYBRID_FUSION, HYBRID_MODE, HYBRID_WEIGHTS, IMAGE_MODE, KEYWORD_MODE, TORCH_BACKEND
from clip_search.demo.captions import COLLECTION_QUERIES, collection_note, label_values, query_text
from clip_search.demo.evaluate import eval_queries
from clip_search.demo.scenes import COLLECTIONS, EVAL_SEED, Query, Scene, collection_of, generate_scenes, render, truth_matrix
from clip_search.engine import SearchEngine
from clip_search.precompute import precompute
from clip_search.text_index import build_text_index

K = 10
FACT_QUERY_KINDS: tuple[tuple[str, ...], ...] = (("shape", "color"), ("color",))  # each with a collection
CALIBRATION_SEED = EVAL_SEED + 17  # fusion and weights are chosen on these scenes, reported on EVAL_SEED's
DEFAULT_HYBRID_SCENES = 3000
# ranking -> (mode, fusion, whether the image half sees the query's visual_text); "hybrid" is the library's default
RANKING_RULES: dict[str, tuple[str, str, bool]] = {
    IMAGE_MODE: (IMAGE_MODE, HYBRID_FUSION, False), CAPTION_MODE: (CAPTION_MODE, HYBRID_FUSION, False), KEYWORD_MODE: (KEYWORD_MODE, HYBRID_FUSION, False),
    HYBRID_MODE: (HYBRID_MODE, HYBRID_FUSION, True), "hybrid-zsum": (HYBRID_MODE, "zsum", True), "hybrid-rrf": (HYBRID_MODE, "rrf", True),
    "hybrid-whole": (HYBRID_MODE, HYBRID_FUSION, False),
}
RANKINGS = tuple(RANKING_RULES)


@dataclass
class HybridReport:
    """P@10 per ranking (RANKINGS) on fact and on visual queries."""

    fact: dict[str, dict[str, float]]  # phrasing -> ranking -> P@10
    visual: dict[str, float]
    fact_queries: int
    visual_queries: int
    gallery: int
    weights: dict[str, float]
    seed: int = EVAL_SEED

    def as_json(self) -> dict:
        """The figures as one JSON object."""
        return {"fact": self.fact, "visual": self.visual, "fact_queries": self.fact_queries, "visual_queries": self.visual_queries, "gallery": self.gallery, "weights": self.weights, "seed": self.seed}

    def table(self) -> str:
        """A plain-text table: one row per kind of query, one column per ranking."""
        scenes = "held-out" if self.seed == EVAL_SEED else "calibration"
        lines = [f"P@{K} on {self.gallery} {scenes} scenes (weights {self.weights}, fusion {HYBRID_FUSION})", "", "queries            " + "".join(f"{r:>13}" for r in RANKINGS)]
        rows = [(f"fact, {phrasing}", figures, self.fact_queries) for phrasing, figures in self.fact.items()] + [("visual only", self.visual, self.visual_queries)]
        for name, figures, count in rows:
            lines.append(f"{name} ({count})".ljust(19) + "".join(f"{figures[r]:>13.3f}" for r in RANKINGS))
        return "\n".join(lines)


def fact_queries(gallery: Sequence[Scene], min_matches: int = K) -> list[tuple[Query, str]]:
    """Every (visual query, collection) of FACT_QUERY_KINDS with at least `min_matches` matching scenes."""
    visual = [Query(**dict(zip(kinds, values))) for kinds in FACT_QUERY_KINDS for values in itertools.product(*(label_values(k) for k in kinds))]
    pairs = [(q, c) for q in visual for c in COLLECTIONS]
    relevant = fact_truth(pairs, gallery)
    return [pair for pair, n in zip(pairs, relevant.sum(axis=1)) if n >= min_matches]


def fact_truth(queries: Sequence[tuple[Query, str]], gallery: Sequence[Scene]) -> np.ndarray:
    """queries × gallery booleans: the scene meets the visual query and is in the collection."""
    collections = np.array([collection_of(s) for s in gallery])
    visual = truth_matrix([q for q, _ in queries], gallery)
    return visual & (collections[None, :] == np.array([c for _, c in queries])[:, None])


def fact_text(query: Query, collection: str, phrasing: str = "sentence") -> str:
    """A fact query as a person types it: "a red star from the harbour collection" (sentence), "a red star, harbour"
    (short)."""
    return COLLECTION_QUERIES[phrasing].format(query=query_text(query, "en"), collection=collection)


def write_gallery(scenes: Sequence[Scene], folder: Path, size: int = 64) -> None:
    """The scenes as PNG files, each with its catalogue note as `caption` (and its collection) in metadata.jsonl."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "metadata.jsonl", "w", encoding="utf-8") as f:
        for i, scene in enumerate(scenes):
            name = f"scene-{i:05d}.png"
            render(scene, size).save(folder / name)
            f.write(json.dumps({"file_name": name, "caption": collection_note(scene, i), "collection": collection_of(scene)}) + "\n")


def rank_all(engine: SearchEngine, texts: Sequence[str], weights: Mapping[str, float], k: int = K) -> dict[str, np.ndarray]:
    """Each ranking's top-k rows (queries × k, -1 padded) for `texts`."""
    searcher = engine.text_search
    whole = engine.text_encoder.encode_texts(list(texts))
    visual_texts = [searcher.visual_text(t) for t in texts]
    seen = [t for t in dict.fromkeys(visual_texts) if t]
    visual_vectors = dict(zip(seen, engine.text_encoder.encode_texts(seen))) if seen else {}
    caption_queries = engine.caption_encoder.encode_texts(list(texts))
    out = {IMAGE_MODE: engine.index.search(whole, k)[0]}
    for ranking, (mode, fusion, split) in RANKING_RULES.items():
        if ranking == IMAGE_MODE:
            continue
        rows = np.full((len(texts), k), -1, np.int64)
        for i, text in enumerate(texts):
            image_query = visual_vectors.get(visual_texts[i]) if split else whole[i]
            found, _ = searcher.search(mode, text, image_query, caption_queries[i], k, None, weights, fusion)
            rows[i, : len(found)] = found
        out[ranking] = rows
    return out


def precision(rows: np.ndarray, relevant: np.ndarray) -> float:
    """Mean share of each query's top rows that are relevant (a missing row counts as wrong)."""
    hits = np.take_along_axis(relevant, np.maximum(rows, 0), axis=1) & (rows >= 0)
    return round(float(hits.mean()), 4)


def evaluate_hybrid(
    model: str | Path,
    text_model: str | Path | None,
    caption_model: str | Path,
    *,
    scenes: int = DEFAULT_HYBRID_SCENES,
    calibration: bool = False,
    weights: Mapping[str, float] | None = None,
    device: str | None = None,
    work_dir: Path | None = None,
) -> HybridReport:
    """P@10 of every ranking on `scenes` held-out scenes (or the calibration scenes), for fact queries and for visual
    ones. The gallery and its store are built in `work_dir` (kept, and reused by a later run with the same scenes,
    models and caption model), else in a temporary folder."""
    weights = dict(HYBRID_WEIGHTS if weights is None else weights)
    seed = CALIBRATION_SEED if calibration else EVAL_SEED
    gallery = generate_scenes(scenes, seed)
    with tempfile.TemporaryDirectory(prefix="clip-search-hybrid-") as tmp:
        root = Path(tmp) if work_dir is None else Path(work_dir) / f"seed{seed}-{scenes}"
        store_dir = root / "store"
        built = {"model": str(model), "text_model": str(text_model), "caption_model": str(caption_model)}
        if not (root / "built.json").is_file() or json.loads((root / "built.json").read_text()) != built:
            shutil.rmtree(root, ignore_errors=True)
            write_gallery(gallery, root / "images")
            precompute(str(root / "images"), store_dir, model=str(model), text_model=str(text_model) if text_model else None, batch_size=128, num_workers=0, device=device, progress=False, backend=TORCH_BACKEND)
            build_text_index(store_dir, caption_model=str(caption_model), device=device)
            (root / "built.json").write_text(json.dumps(built))
        engine = SearchEngine.load(store_dir, device=device)
        facts = fact_queries(gallery)
        fact_rows = {phrasing: rank_all(engine, [fact_text(q, c, phrasing) for q, c in facts], weights) for phrasing in COLLECTION_QUERIES}
        fact_relevant = fact_truth(facts, gallery)
        visual = eval_queries(gallery)
        visual_rows = rank_all(engine, [query_text(q, "en") for q in visual], weights)
        visual_relevant = truth_matrix(visual, gallery)
    return HybridReport(
        fact={phrasing: {r: precision(rows, fact_relevant) for r, rows in by_ranking.items()} for phrasing, by_ranking in fact_rows.items()},
        visual={r: precision(rows, visual_relevant) for r, rows in visual_rows.items()},
        fact_queries=len(facts), visual_queries=len(visual), gallery=len(gallery), weights=weights, seed=seed,
    )
