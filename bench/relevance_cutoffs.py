"""The relevance signal's cutoffs, chosen on the calibration scenes. For each strong cutoff: the strong band's
precision and recall at telling matching results in each query's top 50, per language, and the smaller of the two
over every language. For each margin of the store's floor: that smaller figure again, the share of out-of-world
queries with no strong match, and how far above the empty text's best score the queries' best hits reach.
`clip-search eval` then reports the chosen ones (config.RELEVANCE_STRONG, RELEVANCE_FLOOR_MARGIN) on held-out scenes.

Usage: python bench/relevance_cutoffs.py [--cutoffs 0.75,0.77,...] [--margins 1.0,1.05,...] [--scenes 2000] [--seed N]
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from clip_search import config
from clip_search.demo.captions import LANGUAGES, query_text
from clip_search.demo.evaluate import DEFAULT_EVAL_SCENES, OUT_OF_WORLD_QUERIES, eval_queries, gallery_engine, out_of_world_share, relevance_precision_recall
from clip_search.demo.scenes import CALIBRATION_SEED, generate_scenes, truth_matrix
from clip_search.relevance import null_floor
from clip_search.search import top_k

DEFAULT_CUTOFFS = ",".join(f"{c:.2f}" for c in np.arange(0.75, 0.915, 0.01))
DEFAULT_MARGINS = "1.0,1.05,1.1,1.15,1.2,1.25,1.3"


def _worst(figures) -> float:
    """The smaller of precision and recall, over every language's figures."""
    return min(min(f["precision"], f["recall"]) for f in figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cutoffs", default=DEFAULT_CUTOFFS, help="strong cutoffs to try, comma-separated")
    parser.add_argument("--margins", default=DEFAULT_MARGINS, help="floor margins to try, comma-separated")
    parser.add_argument("--scenes", type=int, default=DEFAULT_EVAL_SCENES)
    parser.add_argument("--seed", type=int, default=CALIBRATION_SEED)
    args = parser.parse_args()
    cutoffs = [float(c) for c in args.cutoffs.split(",")]
    gallery = generate_scenes(args.scenes, args.seed)
    with tempfile.TemporaryDirectory(prefix="relevance-cutoffs-") as tmp:
        engine = gallery_engine(gallery, Path(tmp), config.DEMO_CLIP, config.DEMO_STUDENT)
        matrix = engine.store.vectors(range(len(engine.store)))
        queries = eval_queries(gallery)
        relevant = truth_matrix(queries, gallery)
        vectors = {lang: engine.text_encoder.encode_texts([query_text(q, lang) for q in queries]) for lang in LANGUAGES}
        which = "calibration scenes" if args.seed == CALIBRATION_SEED else "scenes"
        print(f"strong cutoff on {len(gallery)} {which} (seed {args.seed}), {len(queries)} queries per language; floor {engine.relevance_scale.floor:.3f}")
        print("| cutoff | " + " | ".join(f"{lang} P / R" for lang in LANGUAGES) + " | min over all |")
        print("| --- " * (len(LANGUAGES) + 2) + "|")
        for cutoff in cutoffs:
            scale = replace(engine.relevance_scale, strong=cutoff)
            figures = {lang: relevance_precision_recall(scale, matrix, vectors[lang], relevant) for lang in LANGUAGES}
            cells = " | ".join(f"{f['precision']:.3f} / {f['recall']:.3f}" for f in figures.values())
            worst = _worst(figures.values())
            print(f"| {cutoff:.2f} | {cells} | {worst:.3f} |")
        base = engine.relevance_scale
        null = engine.text_encoder.encode_texts([config.RELEVANCE_NULL_TEXT])[0]
        bare = null_floor(base.sample, null, margin=1.0)  # the empty text's best score over the sample
        best_in = min(float(top_k(matrix, q, 1)[1][0]) for lang in LANGUAGES for q in vectors[lang])
        outside = {lang: engine.text_encoder.encode_texts(list(OUT_OF_WORLD_QUERIES[lang])) for lang in LANGUAGES}
        best_out = max(float(top_k(matrix, q, 1)[1][0]) for lang in LANGUAGES for q in outside[lang])
        print(f"\nthe empty text's best score {bare:.3f}; in-world queries' best hits at least {best_in / bare:.2f} x it, out-of-world ones at most {best_out / bare:.2f} x")
        print("| floor margin | min P / R over all | out-of-world with no strong match, lowest language |")
        print("| --- | --- | --- |")
        for margin in (float(m) for m in args.margins.split(",")):
            scale = replace(base, floor=null_floor(base.sample, null, margin))
            worst = _worst([relevance_precision_recall(scale, matrix, vectors[lang], relevant) for lang in LANGUAGES])
            none_strong = min(out_of_world_share(scale, matrix, outside[lang]) for lang in LANGUAGES)
            print(f"| {margin:.2f} | {worst:.3f} | {none_strong:.3f} |")


if __name__ == "__main__":
    main()
