"""How many of the suggester's suggestions the demo store can answer: a suggester is trained on the demo store's
captions, then the share of its completions of 24 typed prefixes (3 each) and of its "try also" follow-ups of 5
queries (3 each) whose best result is a strong match (`suggest.strong_share`, the check the app filters them by).

Usage: python bench/suggest_share.py [--steps N (default: SuggesterConfig's)] [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace

from clip_search import config
from clip_search.demo.scenes import COLORS
from clip_search.engine import SearchEngine
from clip_search.suggest import Suggester, SuggesterConfig, strong_share, train_suggester

PREFIXES = [f"a {c}" for c in COLORS] + [f"two {c}" for c in COLORS] + ["one", "two", "three", "two small", "three large", "one large", "a small", "a large"]
QUERIES = ["a red star", "two blue circles", "three small green hearts", "a large yellow square", "one purple triangle"]
PER_TEXT = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=SuggesterConfig.steps, help="suggester training steps")
    parser.add_argument("--out", default=None, help="where the suggester goes (default: a temporary folder)")
    args = parser.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="suggest-share-")
    report = train_suggester(config.DEMO_STORE, out, replace(SuggesterConfig(), steps=args.steps))
    print(f"trained: loss {report.first_loss:.2f} -> {report.last_loss:.2f}, held-out perplexity {report.perplexity:.3f} (bigram {report.bigram_perplexity:.3f})")
    suggester, engine = Suggester(out), SearchEngine.load(config.DEMO_STORE)
    completions = [c for p in PREFIXES for c in suggester.complete(p, PER_TEXT)]
    follow_ups = [f for q in QUERIES for f in suggester.try_also(q, PER_TEXT)]
    shares = {"completions": strong_share(engine, completions), "try also": strong_share(engine, follow_ups)}
    for name, texts in (("completions", completions), ("try also", follow_ups)):
        print(f"{name}: {len(texts)}, strong {round(shares[name] * len(texts))} ({shares[name]:.3f})")
    both = completions + follow_ups
    print(f"together: {len(both)}, strong share {strong_share(engine, both):.3f} (bar >= 0.9)")


if __name__ == "__main__":
    main()
