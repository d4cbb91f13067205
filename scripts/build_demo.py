"""Rebuild the demo world: train the demo CLIP, distil the multilingual student, build the demo store, evaluate.

Usage: python scripts/build_demo.py [--skip-train] [--skip-distill]   (about 30 minutes on two CPU cores)
The student is distilled from the CLIP's first stage, then follows its second (out-of-world) stage for one epoch;
with --skip-train only that second distillation runs, continuing the student in models/demo-mclip.
Each step is the library function users run (train-demo, distill, precompute, eval); this script only chains them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from clip_search import config  # noqa: E402
from clip_search.cli import _quiet_libraries  # noqa: E402
from clip_search.demo.build import make_student_base, realign_pairs, write_demo_examples, write_parallel, write_store_images  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-train", action="store_true", help="keep models/demo-clip as it is")
    parser.add_argument("--skip-distill", action="store_true", help="keep models/demo-mclip as it is")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _quiet_libraries()
    os.chdir(config.REPO_ROOT)  # model paths written into cards and manifests stay repository-relative
    clip_dir, student_dir = config.DEMO_CLIP.relative_to(config.REPO_ROOT), config.DEMO_STUDENT.relative_to(config.REPO_ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        first_clip = Path(tmp) / "first-stage-clip"
        if not args.skip_train:
            from clip_search.demo.train import train_demo_clip

            report = train_demo_clip(clip_dir, first_stage_out=first_clip)
            (clip_dir / "training.json").write_text(json.dumps(report.as_dict(), indent=2) + "\n")
        if not args.skip_distill:
            from clip_search.distill import distill

            if not args.skip_train:  # the student learns the world from the first-stage CLIP, from scratch
                base = make_student_base(Path(tmp) / "base")
                parallel = write_parallel(Path(tmp) / "parallel.tsv")
                shutil.rmtree(config.DEMO_STUDENT, ignore_errors=True)
                distill(str(first_clip), str(base), str(parallel), str(student_dir), **DEMO_DISTILL)
            # then follows the final CLIP, out-of-world phrases and the empty text included
            report = distill(str(clip_dir), str(student_dir), realign_pairs(tmp), str(student_dir), **DEMO_REALIGN)
            print(report.table())
    from clip_search.precompute import precompute

    images = write_store_images(config.DEMO_STORE / "images")
    precompute(str(images), config.DEMO_STORE, model=str(clip_dir), text_model=str(student_dir), batch_size=64, num_workers=0, overwrite=True, backend="torch")  # what eval measures
    write_demo_examples(config.DEMO_STORE)
    from clip_search.demo.evaluate import evaluate

    print(evaluate(clip_dir, student_dir).table())
    return 0


# The demo student's distillation settings (a fresh small BERT learns fast with a high learning rate), and those
# of its second distillation, which follows the CLIP's second stage (one epoch at a lower rate).
DEMO_DISTILL = dict(epochs=3, batch_size=64, lr=5e-4, seed=0, progress=False)
DEMO_REALIGN = dict(epochs=1, batch_size=64, lr=2e-4, seed=0, progress=False)

if __name__ == "__main__":
    sys.exit(main())
