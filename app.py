"""Hugging Face Spaces entry point: serve clip-search on the store named by CLIP_SEARCH_STORE or the first argument."""

from __future__ import annotations

import logging
import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


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
            EmbeddingStore.open(store)  # fail fast, before the slow imports of gradio and torch
        import transformers

        from clip_search.ui import launch_app

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        launch_app(
            store,
            model=os.environ.get("CLIP_SEARCH_MODEL") or None,
            text_model=os.environ.get("CLIP_SEARCH_TEXT_MODEL") or None,
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
