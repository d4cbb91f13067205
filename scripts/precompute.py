"""Build an embedding store: the same as `clip-search precompute …`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clip_search.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["precompute", *sys.argv[1:]]))
