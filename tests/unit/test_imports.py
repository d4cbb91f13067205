"""The ground floor stays light: the store, index, filters and search modules import no torch, transformers or faiss."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "sentence_transformers", "faiss", "gradio", "datasets")


@pytest.mark.parametrize("module", ["clip_search.search", "clip_search.store", "clip_search.index", "clip_search.filters", "clip_search.vectors", "clip_search.classify", "clip_search.relevance", "clip_search.language"])
def test_module_imports_nothing_heavy(module: str) -> None:
    code = f"import sys, {module}; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout.strip()
    assert loaded == "", f"import {module} loaded {loaded}"
