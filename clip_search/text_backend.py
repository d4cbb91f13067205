"""Choosing how query text is encoded: an ONNX export run by onnxruntime (no torch import: a CLI search or an app
answers in a fraction of the time torch and transformers take to import), or the torch model itself.

The export is made once per model (with torch) and cached (`config.default_cache_dir()`); later loads find it
without importing torch.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

from clip_search.errors import ClipSearchError, ModelLoadError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onnx", "torch")
CLIP_TEXT, STUDENT = "clip-text", "student"  # what is encoded: CLIP's own text tower, or a multilingual student


def load_text_encoder(model_ref: str, kind: str, *, backend: str = "auto", revision: str | None = None, device: str | None = None) -> Any:
    """A text encoder for `model_ref` (`kind` CLIP_TEXT or STUDENT) on `backend`.

    "auto" is ONNX on the CPU when onnxruntime is installed (exporting once if needed), and falls back to torch,
    with a warning, when the export cannot be made; "onnx" and "torch" insist.
    """
    if backend not in BACKENDS:
        raise ClipSearchError(f"text backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    on_cpu = device in (None, "", "auto", "cpu")
    if backend == "onnx" or (backend == "auto" and on_cpu and importlib.util.find_spec("onnxruntime") is not None):
        try:
            return _onnx(model_ref, kind, revision)
        except ModelLoadError as exc:
            if backend == "onnx":
                raise
            log.warning("using torch for query text: no ONNX export of %s (%s)", model_ref, exc)
    return _torch(model_ref, kind, revision, device)


def _onnx(model_ref: str, kind: str, revision: str | None) -> Any:
    from clip_search.onnx_text import OnnxTextEncoder, cached_export

    folder = cached_export(model_ref, kind, revision=revision)
    if folder is None:
        from clip_search.onnx_export import export_text_encoder

        log.info("exporting the text encoder of %s to ONNX, once (later starts skip torch)", model_ref)
        folder = export_text_encoder(model_ref, kind, revision=revision)
    return OnnxTextEncoder.load(folder, model_ref)


def _torch(model_ref: str, kind: str, revision: str | None, device: str | None) -> Any:
    if kind == STUDENT:
        from clip_search.text_student import StudentTextEncoder

        return StudentTextEncoder.load(model_ref, device=device)
    from clip_search.clip_model import ClipEncoder

    return ClipEncoder.load(model_ref, revision=revision, device=device)
