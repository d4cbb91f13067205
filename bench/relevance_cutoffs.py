"""The relevance signal's strong cutoff, chosen on the calibration scenes: for each cutoff, the strong band's precision
and recall at telling matching results in each query's top 50, per language, and the smaller of the two over every
language. `clip-search eval` then reports the chosen cutoff (config.RELEVANCE_STRONG) on other, held-out scenes.

Usage: python bench/relevance_cutoffs.py [--cutoffs 0.75,0.77,...] [--scenes 2000] [--seed CALIBRATION_SEED]
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from clip_search import config
from clip_search.demo.captions import LANGUAGES, query_text
from clip_search.demo.evaluate import DEFAULT_EVAL_SCENES, eval_queries, gallery_engine, relevance_precision_recall
from clip_search.demo.scenes import CALIBRATION_SEED, generate_scenes, truth_matrix

DEFAULT_CUTOFFS = ",".join(f"{c:.2f}" for c in np.arange(0.75, 0.915, 0.01))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cutoffs", default=DEFAULT_CUTOFFS, help="strong cutoffs to try, comma-separated")
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
        print(f"strong cutoff on {len(gallery)} calibration scenes (seed {args.seed}), {len(queries)} queries per language; floor {engine.relevance_scale.floor:.3f}")
        print("| cutoff | " + " | ".join(f"{lang} P / R" for lang in LANGUAGES) + " | min over all |")
        print("| --- " * (len(LANGUAGES) + 2) + "|")
        for cutoff in cutoffs:
            scale = replace(engine.relevance_scale, strong=cutoff)
            figures = {lang: relevance_precision_recall(scale, matrix, vectors[lang], relevant) for lang in LANGUAGES}
            cells = " | ".join(f"{f['precision']:.3f} / {f['recall']:.3f}" for f in figures.values())
            worst = min(min(f["precision"], f["recall"]) for f in figures.values())
            print(f"| {cutoff:.2f} | {cells} | {worst:.3f} |")


if __name__ == "__main__":
    main()
