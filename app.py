"""Hugging Face Spaces entry point: serve clip-search on the store named by CLIP_SEARCH_STORE or the first argument."""

from __future__ import annotations

import logging
import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Model-loading chatter off, through the environment: torch and transformers are imported only if an image
# query or a first ONNX export needs them.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def main(argv: list[str] | None = None) -> int:
    """Serve the app until interrupted; a missing or broken store prints one line and returns 1."""
    args = sys.argv[1:] if argv is None else argv
    store = os.environ.get("CLIP_SEARCH_STORE") or (args[0] if args else None)
    host = "0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1"  # Spaces routes traffic to the container
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own health checks, one line per request

    from clip_search.errors import ClipSearchError
    from clip_search.store import EmbeddingStore

    try:
        if store is not None:
            EmbeddingStore.open(store, verify=False)  # fail fast, before the slow import of gradio
        from clip_search.ui import launch_app

        launch_app(
            store,
            model=os.environ.get("CLIP_SEARCH_MODEL") or None,
            text_model=os.environ.get("CLIP_SEARCH_TEXT_MODEL") or None,
            suggester=os.environ.get("CLIP_SEARCH_SUGGESTER") or None,
            summarizer=os.environ.get("CLIP_SEARCH_SUMMARIZER") or None,
            host=host,
            port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        )
    except ClipSearchError as exc:
        print(f"app.py: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
