"""Retrieval quality on held-out demo scenes: precision@k, zero-shot accuracy and the relevance signal, per language.

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
from clip_search.demo.captions import LANGUAGES, label_names, label_prompts, label_values, query_text
from clip_search.demo.scenes import EVAL_SEED, Query, Scene, generate_scenes, render, truth_matrix
from clip_search.engine import SearchEngine
from clip_search.precompute import precompute
from clip_search.relevance import STRONG, RelevanceScale
from clip_search.search import top_k

log = logging.getLogger(__name__)

# What eval queries ask for: every combination of these attribute kinds' values.
QUERY_KINDS: tuple[tuple[str, ...], ...] = (("shape", "color"), ("shape", "color", "size"), ("color", "count"))
K_VALUES = (1, 5, 10)
CLIP_ENGLISH = "en"
STUDENT_ENGLISH = "en-student"
DEFAULT_EVAL_SCENES = 2000
RELEVANCE_DEPTH = 50  # the relevance signal is judged on each query's top 50
OUT_OF_WORLD_TOP_K = 12  # an out-of-world query must have no strong match among the results a page shows
PROBE_FOLDS = 5  # the zero-shot ceiling: a linear probe cross-validated over the gallery in this many folds

# Queries about things no demo scene contains (animals, vehicles, places), per language: each must come back with
# no strong match. Written for this check, not used to choose the relevance method's cutoffs.
OUT_OF_WORLD_QUERIES: dict[str, tuple[str, ...]] = {
    "en": ("a dog on a beach", "a giraffe eating leaves", "a cat sleeping on a sofa", "two horses in a field",
           "a red car in the city", "a bicycle leaning on a wall", "an airplane in the sky", "a train at a station",
           "snowy mountains", "a busy street at night", "the Eiffel tower", "a lighthouse by the sea"),
    "de": ("ein Hund am Strand", "eine Giraffe frisst Blätter", "eine Katze schläft auf dem Sofa", "zwei Pferde auf einer Wiese",
           "ein rotes Auto in der Stadt", "ein Fahrrad an einer Wand", "ein Flugzeug am Himmel", "ein Zug im Bahnhof",
           "verschneite Berge", "eine belebte Straße bei Nacht", "der Eiffelturm", "ein Leuchtturm am Meer"),
    "fr": ("un chien sur la plage", "une girafe qui mange des feuilles", "un chat qui dort sur un canapé", "deux chevaux dans un pré",
           "une voiture rouge en ville", "un vélo contre un mur", "un avion dans le ciel", "un train en gare",
           "des montagnes enneigées", "une rue animée la nuit", "la tour Eiffel", "un phare au bord de la mer"),
    "es": ("un perro en la playa", "una jirafa comiendo hojas", "un gato durmiendo en un sofá", "dos caballos en un prado",
           "un coche rojo en la ciudad", "una bicicleta apoyada en una pared", "un avión en el cielo", "un tren en la estación",
           "montañas nevadas", "una calle concurrida de noche", "la torre Eiffel", "un faro junto al mar"),
    "ru": ("собака на пляже", "жираф ест листья", "кошка спит на диване", "две лошади в поле",
           "красная машина в городе", "велосипед у стены", "самолёт в небе", "поезд на вокзале",
           "заснеженные горы", "оживлённая улица ночью", "Эйфелева башня", "маяк у моря"),
    "zh": ("海滩上的狗", "正在吃树叶的长颈鹿", "睡在沙发上的猫", "田野里的两匹马",
           "城市里的一辆红色汽车", "靠在墙上的自行车", "天空中的飞机", "车站里的火车",
           "雪山", "夜晚繁忙的街道", "埃菲尔铁塔", "海边的灯塔"),
}


@dataclass
class EvalReport:
    """precision_at[k][lang] and zero_shot_accuracy[kind] (English CLIP, caption-phrased labels); per language:
    zero_shot_by_language[lang][kind] with dictionary-form labels, relevance[lang] (precision and recall of the
    strong band at telling matching results in the top 50, and the ceiling a perfect cut of the rankings reaches),
    out_of_world[lang] (share of out-of-world queries with no strong match) and zero_shot_ceiling[kind] (a linear
    probe trained on the true labels: what any label set can reach on these embeddings)."""

    precision_at: dict[str, dict[str, float]]
    zero_shot_accuracy: dict[str, float]
    queries: int
    gallery: int
    details: dict[str, dict[str, float]] = field(default_factory=dict)
    zero_shot_by_language: dict[str, dict[str, float]] = field(default_factory=dict)
    relevance: dict[str, dict[str, float]] = field(default_factory=dict)
    out_of_world: dict[str, float] = field(default_factory=dict)
    zero_shot_ceiling: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> dict:
        """The JSON form `clip-search eval --json` prints."""
        return {
            "precision_at": self.precision_at, "zero_shot_accuracy": self.zero_shot_accuracy,
            "zero_shot_by_language": self.zero_shot_by_language, "relevance": self.relevance, "out_of_world": self.out_of_world,
            "zero_shot_ceiling": self.zero_shot_ceiling,
        }

    def table(self) -> str:
        """A plain-text table: one row per language, one column per k; then zero-shot accuracy."""
        langs = list(self.precision_at[str(K_VALUES[0])])
        lines = [f"text→image precision@k on {self.gallery} held-out scenes, {self.queries} queries per language", ""]
        lines.append("language     " + "".join(f"  P@{k:<4}" for k in K_VALUES))
        for lang in langs:
            lines.append(f"{lang:<12} " + "".join(f"  {self.precision_at[str(k)][lang]:.3f} " for k in K_VALUES))
        lines.append("")
        lines.append("zero-shot accuracy: " + ", ".join(f"{kind} {acc:.3f}" for kind, acc in self.zero_shot_accuracy.items()))
        if self.zero_shot_ceiling:
            lines.append("a linear probe trained on the true labels: " + ", ".join(f"{kind} {acc:.3f}" for kind, acc in self.zero_shot_ceiling.items()))
        if self.relevance:
            lines += ["", "language      zero-shot shape  colour   relevance precision  recall   ceiling   out-of-world no strong match"]
            for lang, figures in self.relevance.items():
                shots = self.zero_shot_by_language.get(lang, {})
                lines.append(
                    f"{lang:<12}  {_figure(shots.get('shape'))}            {_figure(shots.get('color'))}    "
                    f"{figures['precision']:.3f}                {figures['recall']:.3f}    {figures['ceiling']:.3f}     {_figure(self.out_of_world.get(lang))}"
                )
        return "\n".join(lines)


def _figure(value: float | None) -> str:
    return "  -  " if value is None else f"{value:.3f}"


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


def relevance_precision_recall(scale: RelevanceScale, matrix: np.ndarray, query_vectors: np.ndarray, relevant: np.ndarray, depth: int = RELEVANCE_DEPTH) -> dict[str, float]:
    """Precision and recall of the strong band at telling matching results from the others in each query's top
    `depth`, pooled over queries (`relevant` is queries×gallery booleans); and the ceiling: the precision (equal to
    the recall) of cutting each query's ranking at its true number of matches, what a perfect cut would reach."""
    rows = [top_k(matrix, q, depth) for q in query_vectors]
    assessments = scale.assess_many(query_vectors, [scores for _, scores in rows])
    strong = np.concatenate([np.array(a.bands) == STRONG for a in assessments])
    matching = np.concatenate([relevant[i, found] for i, (found, _) in enumerate(rows)])
    cut = np.concatenate([np.arange(len(found)) < relevant[i, found].sum() for i, (found, _) in enumerate(rows)])
    true_positives = float((strong & matching).sum())
    return {
        "precision": round(true_positives / max(float(strong.sum()), 1.0), 4),
        "recall": round(true_positives / max(float(matching.sum()), 1.0), 4),
        "ceiling": round(float((cut & matching).sum()) / max(float(matching.sum()), 1.0), 4),
    }


def out_of_world_share(scale: RelevanceScale, matrix: np.ndarray, query_vectors: np.ndarray, top: int = OUT_OF_WORLD_TOP_K) -> float:
    """Share of queries whose top `top` results hold no strong match."""
    scores = [top_k(matrix, q, top)[1] for q in query_vectors]
    return round(float(np.mean([not a.any_strong for a in scale.assess_many(query_vectors, scores)])), 4)


def dictionary_label_accuracy(engine: SearchEngine, matrix: np.ndarray, gallery: Sequence[Scene], kind: str, lang: str) -> float:
    """Zero-shot accuracy of `kind` with the dictionary words of `lang` as labels ("rot", "Stern"), embedded as
    `SearchEngine.search` embeds typed labels."""
    labels = engine.label_vectors(label_names(kind, lang))
    predicted = zero_shot_probabilities(matrix, labels, engine.logit_scale).argmax(axis=1)
    truth = np.array([label_values(kind).index(getattr(s, kind)) for s in gallery])
    return round(float((predicted == truth).mean()), 4)


def probe_accuracy(matrix: np.ndarray, gallery: Sequence[Scene], kind: str, folds: int = PROBE_FOLDS) -> float:
    """Accuracy on `kind` of a linear classifier trained on the stored vectors with the true labels (cross-validated
    over the gallery): a zero-shot label set is a linear classifier too, so this is about as far as one can get."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    truth = np.array([label_values(kind).index(getattr(s, kind)) for s in gallery])
    return round(float(cross_val_score(LogisticRegression(max_iter=2000), matrix, truth, cv=folds).mean()), 4)


def gallery_engine(gallery: Sequence[Scene], folder: Path, model: str | Path, text_model: str | Path | None, *, image_size: int = 64, device: str | None = None, backend: str = TORCH_BACKEND) -> SearchEngine:
    """The gallery's scenes written as PNG files under `folder`, embedded by `precompute` into a store there, and
    opened: the real pipeline, so a bug anywhere in it shows as a lower figure. Rows are in scene order."""
    images, store_dir = folder / "images", folder / "store"
    images.mkdir()
    for i, scene in enumerate(gallery):
        render(scene, image_size).save(images / f"scene-{i:05d}.png")  # zero-padded: sorted file order is scene order
    precompute(str(images), store_dir, model=str(model), text_model=str(text_model) if text_model else None, batch_size=128, num_workers=0, device=device, progress=False, backend=backend)
    return SearchEngine.load(store_dir, device=device)


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
        engine = gallery_engine(gallery, Path(tmp), model, text_model, image_size=image_size, device=device, backend=backend)
        matrix = engine.store.vectors(range(len(engine.store)))
        queries = eval_queries(gallery)
        relevant = truth_matrix(queries, gallery)
        encoders = {CLIP_ENGLISH: ("en", engine.clip)}
        if engine.multilingual:
            encoders[STUDENT_ENGLISH] = ("en", engine.text_encoder)
            encoders.update({lang: (lang, engine.text_encoder) for lang in languages if lang != "en"})
        precision: dict[str, dict[str, float]] = {str(k): {} for k in K_VALUES}
        relevance: dict[str, dict[str, float]] = {}
        out_of_world: dict[str, float] = {}
        for name, (lang, encoder) in encoders.items():
            vectors = encoder.encode_texts([query_text(q, lang) for q in queries])
            for k, value in precision_at(matrix, vectors, relevant).items():
                precision[str(k)][name] = round(value, 4)
            if encoder is engine.text_encoder:  # the relevance signal of the queries a user's search sends
                relevance[lang] = relevance_precision_recall(engine.relevance_scale, matrix, vectors, relevant)
                out_of_world[lang] = out_of_world_share(engine.relevance_scale, matrix, encoder.encode_texts(list(OUT_OF_WORLD_QUERIES[lang])))
        by_language = {
            lang: {kind: dictionary_label_accuracy(engine, matrix, gallery, kind, lang) for kind in ("shape", "color")}
            for lang in (languages if engine.multilingual else ("en",))
        }
        ceiling = {kind: probe_accuracy(matrix, gallery, kind) for kind in ("shape", "color")}
        accuracy = {}
        for kind in ("shape", "color"):
            labels = embed_labels(label_prompts(kind, "en"), engine.clip.encode_texts, templates=("{}",))
            predicted = zero_shot_probabilities(matrix, labels, engine.logit_scale).argmax(axis=1)
            truth = np.array([label_values(kind).index(getattr(s, kind)) for s in gallery])
            accuracy[kind] = round(float((predicted == truth).mean()), 4)
    return EvalReport(precision, accuracy, len(queries), len(gallery), zero_shot_by_language=by_language, relevance=relevance, out_of_world=out_of_world, zero_shot_ceiling=ceiling)
