"""Text encoders run from an ONNX export with onnxruntime + tokenizers + numpy: the query path without torch.

An export is a folder `<cache>/exports/<key>/` holding:

- `model.onnx`: input_ids, attention_mask (int64, batch × sequence, both axes dynamic) -> embedding (batch × dim,
  float32, not normalised): CLIP's projected text embedding, or a sentence-transformers student's output;
- `tokenizer.json`: the original's `tokenizers` pipeline (normaliser, BOS/EOS or CLS/SEP, lower-casing), padding
  and truncation off; the runtime truncates to `export.json`'s max_length and pads batches itself;
- `export.json`: `ExportInfo` (this module is its only reader and writer; `clip_search.onnx_export` writes it).

The key names the weights, not the name: a local folder is keyed by its files' (path, size, mtime_ns), a hub id by
the commit the Hugging Face cache resolves it to (read offline). Importing this module never imports torch,
transformers or sentence_transformers; `clip_search.onnx_export` makes the exports.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clip_search.config import DEFAULT_TEXT_BATCH_SIZE, ORT_SPIN_THREADS, default_cache_dir
from clip_search.errors import ModelLoadError, one_line
from clip_search.vectors import l2_normalise

log = logging.getLogger(__name__)

KINDS = ("clip-text", "student")
EXPORT_FORMAT = 1  # bump when the layout or the graph's contract changes: old exports then get new keys
EXPORTS_DIR = "exports"
ONNX_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
INFO_FILE = "export.json"
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "embedding"

# A local model folder's key covers these files (weights, configs, tokenizer files), searched this deep.
_KEY_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".json", ".txt", ".model")
_KEY_MAX_DEPTH = 2
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class ExportInfo:
    """What `export.json` records: what was exported, and how to tokenise for it exactly as the original does."""

    kind: str
    model_ref: str
    revision: str | None
    source: dict[str, Any]  # what the key was computed from (model folder or hub commit)
    dim: int
    max_length: int
    pad_id: int
    truncation_side: str = "right"
    opset: int = 17
    min_cosine: float | None = None  # the lowest cosine to torch measured when the export was verified
    versions: dict[str, str] = field(default_factory=dict)  # the libraries that made the export
    format: int = EXPORT_FORMAT

    def write(self, folder: Path) -> Path:
        """Write `export.json` into `folder`."""
        path = Path(folder) / INFO_FILE
        path.write_text(json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, folder: Path) -> ExportInfo:
        """Read and check `export.json` in `folder`; a missing, unreadable or foreign file raises ModelLoadError."""
        path = Path(folder) / INFO_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            info = cls(**data)
        except FileNotFoundError:
            raise ModelLoadError(f"ONNX export {folder} is incomplete: {path} is missing; delete {folder} to export again") from None
        except (OSError, ValueError, TypeError) as exc:
            raise ModelLoadError(f"ONNX export file {path} is unreadable ({one_line(exc)}); delete {folder} to export again") from None
        if info.format != EXPORT_FORMAT or info.kind not in KINDS or info.dim <= 0 or info.max_length <= 0:
            raise ModelLoadError(
                f"ONNX export file {path} is not a format-{EXPORT_FORMAT} text export "
                f"(format {info.format}, kind {info.kind!r}); delete {folder} to export again"
            )
        return info


class OnnxTextEncoder:
    """A text encoder (CLIP's text tower or a multilingual student) run by onnxruntime: N×D float32, L2-normalised."""

    def __init__(self, session: Any, tokenizer: Any, info: ExportInfo, model_id: str, export_dir: Path) -> None:
        self.session = session
        self.tokenizer = tokenizer
        self.info = info
        self.model_id = model_id
        self.export_dir = export_dir

    @classmethod
    def load(cls, export_dir: Path, model_id: str, *, threads: int | None = None) -> OnnxTextEncoder:
        """Open an export folder made by `clip_search.onnx_export.export_text_encoder`.

        `threads` is onnxruntime's intra-op thread count (default: the CPU cores this process may use).
        A missing or damaged file raises ModelLoadError naming it.
        """
        import onnxruntime as ort
        from tokenizers import Tokenizer

        export_dir = Path(export_dir)
        info = ExportInfo.read(export_dir)
        onnx_path, tok_path = export_dir / ONNX_FILE, export_dir / TOKENIZER_FILE
        for path in (onnx_path, tok_path):
            if not path.is_file():
                raise ModelLoadError(f"ONNX export {export_dir} is incomplete: {path} is missing; delete {export_dir} to export again")
        try:
            tokenizer = Tokenizer.from_file(str(tok_path))
        except Exception as exc:  # tokenizers raises plain Exception subclasses for bad JSON
            raise ModelLoadError(f"ONNX export file {tok_path} is unreadable ({one_line(exc)}); delete {export_dir} to export again") from None
        tokenizer.no_padding()
        tokenizer.enable_truncation(info.max_length, strategy="longest_first", direction=info.truncation_side)

        options = session_options(threads)
        try:
            session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's errors (InvalidProtobuf, Fail, NoSuchFile) derive from Exception only
            raise ModelLoadError(f"ONNX export file {onnx_path} cannot be loaded ({one_line(exc)}); delete {export_dir} to export again") from None
        names = {i.name for i in session.get_inputs()}
        if names != set(INPUT_NAMES):
            raise ModelLoadError(f"ONNX export file {onnx_path} takes inputs {sorted(names)}, expected {list(INPUT_NAMES)}; delete {export_dir} to export again")
        return cls(session, tokenizer, info, str(model_id), export_dir)

    @property
    def dim(self) -> int:
        """Dimension of the embeddings it produces."""
        return self.info.dim

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, truncated as the original tokenizer truncates, unpadded."""
        return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

    def truncates(self, texts: Sequence[str]) -> list[bool]:
        """Per text: whether it is longer than the encoder reads (max_length tokens), so only its start is embedded."""
        return [bool(e.overflowing) for e in self.tokenizer.encode_batch(list(texts))]

    def encode_texts(self, texts: Sequence[str], batch_size: int = DEFAULT_TEXT_BATCH_SIZE) -> np.ndarray:
        """Text embeddings: N×D, L2-normalised, float32. A lone text runs unpadded; a batch pads to its longest."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        ids = self.token_ids(texts)
        # Batch texts of similar length together so that little padding is computed; rows go back in input order.
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = np.empty((len(ids), self.dim), np.float32)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            input_ids, mask = self._pad([ids[i] for i in rows])
            (emb,) = self.session.run([OUTPUT_NAME], {"input_ids": input_ids, "attention_mask": mask})
            out[rows] = emb
        return l2_normalise(out)

    def _pad(self, batch: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        # Right padding with the tokenizer's pad id: CLIP pools at the first EOS, the student mean-pools under the mask.
        width = max(len(x) for x in batch)
        input_ids = np.full((len(batch), width), self.info.pad_id, np.int64)
        mask = np.zeros((len(batch), width), np.int64)
        for row, x in enumerate(batch):
            input_ids[row, : len(x)] = x
            mask[row, : len(x)] = 1
        return input_ids, mask


def export_key(model_ref: str, kind: str, *, revision: str | None = None) -> tuple[str, dict[str, Any]] | None:
    """The cache key of an export, and what it was computed from; None for a hub id not in the local HF cache."""
    if kind not in KINDS:
        raise ValueError(f"unknown export kind {kind!r}: choose one of {', '.join(KINDS)}")
    folder = Path(model_ref).expanduser()
    if folder.is_dir():
        source: dict[str, Any] = {"folder": str(folder.resolve()), "files": _folder_files(folder)}
        name = folder.resolve().name
    else:
        commit = _hub_commit(model_ref, revision)
        if commit is None:
            return None
        source = {"repo": model_ref, "commit": commit}
        name = model_ref.rsplit("/", 1)[-1]
    blob = json.dumps({"format": EXPORT_FORMAT, "kind": kind, "source": source}, sort_keys=True).encode()
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:40] or "model"
    return f"{kind}-{slug}-{hashlib.sha256(blob).hexdigest()[:16]}", source


def publish_export(tmp: Path, final: Path) -> bool:
    """Rename a finished export folder into place; False when another process finished the same export first
    (its export is kept and `tmp` is left for the caller to remove)."""
    if final.exists() and not (final / INFO_FILE).is_file():
        shutil.rmtree(final)  # a folder left half-deleted by hand: never a finished export
    try:
        os.rename(tmp, final)
    except OSError:
        if not (final / INFO_FILE).is_file():
            raise
        log.info("another process finished exporting %s first; using its export", final)
        return False
    return True


def exports_root(cache_dir: Path | None = None) -> Path:
    """The folder holding one subfolder per export."""
    return Path(cache_dir if cache_dir is not None else default_cache_dir()) / EXPORTS_DIR


def cached_export(model_ref: str, kind: str, *, revision: str | None = None, cache_dir: Path | None = None) -> Path | None:
    """The folder of a finished export for this model (kind "clip-text" or "student"), or None when there is none yet.

    Cheap (a few stat calls, no torch): the key is computed from the model folder's files (path, size, mtime_ns),
    or from the commit the local Hugging Face cache resolves a hub id to; the network is never contacted.
    """
    keyed = export_key(model_ref, kind, revision=revision)
    if keyed is None:
        return None
    folder = exports_root(cache_dir) / keyed[0]
    return folder if (folder / INFO_FILE).is_file() else None


def _folder_files(folder: Path) -> list[list[Any]]:
    found: list[list[Any]] = []

    def walk(path: Path, depth: int) -> None:
        with os.scandir(path) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if entry.name.startswith("."):
                    continue
                if entry.is_dir() and depth < _KEY_MAX_DEPTH:
                    walk(Path(entry.path), depth + 1)
                elif entry.is_file() and entry.name.endswith(_KEY_SUFFIXES):
                    st = entry.stat()
                    found.append([os.path.relpath(entry.path, folder), st.st_size, st.st_mtime_ns])

    try:
        walk(folder, 0)
    except OSError as exc:
        raise ModelLoadError(f"cannot read model folder {folder}: {one_line(exc)}") from None
    return found


def _hub_commit(repo_id: str, revision: str | None) -> str | None:
    # The hub cache layout (models--org--name/refs/<branch or tag> holds the commit; snapshots/<commit>/ the files),
    # read directly: importing huggingface_hub's lookup helpers costs ~0.4 s, its constants a few ms.
    from huggingface_hub import constants

    repo = Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))
    rev = revision or "main"
    if _COMMIT.match(rev):
        commit = rev
    else:
        try:
            commit = (repo / "refs" / rev).read_text(encoding="utf-8").strip()
        except OSError:
            return None
    return commit if (repo / "snapshots" / commit).is_dir() else None


def session_options(threads: int | None = None) -> Any:
    """ONNX Runtime options of every clip-search session: `threads` intra-op threads (default: the usable cores),
    one inter-op thread, errors only, and no spinning (config.ORT_SPIN_THREADS)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or _cpu_count()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if ORT_SPIN_THREADS else "0")
    return options


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


