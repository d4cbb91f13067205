"""The demo world's three-task classifier (shape, colour, count) trained heads-only on several split seeds: per seed
and on average, each task's test accuracy and macro-F1 against zero-shot on the same rows, and the blend each head
kept. One seed's 120 test images move a figure by 0.008 an image, so bars are judged on several seeds.

Usage: python bench/classifier_seeds.py [--seeds 0,1,2,3,4] [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace

import numpy as np

from clip_search import config
from clip_search.classifier.pipeline import train_classifier
from clip_search.classifier.training import TrainSettings

TASKS = ["shape:shape", "color:color", "count:count"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--out", default=None, help="where the classifiers go (default: a temporary folder)")
    args = parser.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="classifier-seeds-")
    figures: dict[str, list[tuple[float, float, float, float]]] = {}
    print("| seed | " + " | ".join(f"{t.split(':')[0]}: trained / zero-shot (macro-F1)" for t in TASKS) + " | shares kept | wall |")
    print("| --- " * (len(TASKS) + 3) + "|")
    for seed in (int(s) for s in args.seeds.split(",")):
        started = time.perf_counter()
        report = train_classifier(config.DEMO_STORE, TASKS, f"{out}/seed-{seed}", settings=replace(TrainSettings(), seed=seed))
        cells = []
        for e in report.evaluation.tasks:
            figures.setdefault(e.task.name, []).append((e.model.accuracy, e.zero_shot.accuracy, e.model.macro_f1, e.zero_shot.macro_f1))
            cells.append(f"{e.model.accuracy:.3f} ({e.model.macro_f1:.3f}) / {e.zero_shot.accuracy:.3f} ({e.zero_shot.macro_f1:.3f})")
        shares = ", ".join(f"{share:g}" for share in report.fit.zero_shot_blend.values())
        print(f"| {seed} | " + " | ".join(cells) + f" | {shares} | {time.perf_counter() - started:.0f} s |", flush=True)
    means = [f"{np.mean([f[0] for f in rows]):.3f} / {np.mean([f[1] for f in rows]):.3f}" for rows in figures.values()]
    print("| mean | " + " | ".join(means) + " | | |")


if __name__ == "__main__":
    main()
