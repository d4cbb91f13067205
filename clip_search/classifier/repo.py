"""A trained classifier as a Hugging Face model-repo folder, and `Classifier`, which loads one and predicts.

The folder: `model.safetensors` (trunk and heads; and the vision tower when fine-tuning changed it),
`config.json` (the CLIP it was trained on, its tasks and label names, its shape), `README.md` (the model card),
`metrics.json`, `split.json`, and the evaluation plots. Heads run in numpy, so predicting from a store's
embeddings imports no torch; a classifier whose vision tower was fine-tuned re-encodes images instead, since the
store's embeddings were made by the original tower.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clip_search.classifier.tasks import Task
from clip_search.config import CLASSIFIER_MULTILABEL_THRESHOLD
from clip_search.errors import ModelLoadError, StoreError, one_line
from clip_search.store import ModelRef, resolve_ref, same_model

if TYPE_CHECKING:
    from clip_search.store import EmbeddingStore

log = logging.getLogger(__name__)

CONFIG, WEIGHTS, METRICS, SPLIT = "config.json", "model.safetensors", "metrics.json", "split.json"
FORMAT = "clip-search-classifier"
FORMAT_VERSION = 1
PREDICT_CHUNK_ROWS = 65_536


@dataclass(frozen=True)
class ClassifierConfig:
    """What config.json records: the CLIP whose embeddings it reads, its tasks and labels, and its shape."""

    clip: ModelRef  # a local model is recorded relative to the classifier folder, as a store records it
    dim: int
    tasks: tuple[Task, ...]
    hidden: int
    depth: str
    freeze: str
    backbone_trained: bool = False
    vision_config: dict[str, Any] = field(default_factory=dict)  # only when backbone_trained

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to config.json."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "clip_model": {"id": self.clip.id, "revision": self.clip.revision, "commit": self.clip.commit},
            "dim": self.dim,
            "tasks": [t.to_json() for t in self.tasks],
            "label_names": {t.name: list(t.labels) for t in self.tasks},
            "hidden": self.hidden,
            "depth": self.depth,
            "freeze": self.freeze,
            "backbone_trained": self.backbone_trained,
            "vision_config": self.vision_config or None,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any], path: Path) -> ClassifierConfig:
        """A config from config.json; a file of another kind or version is a ModelLoadError naming it."""
        if raw.get("format") != FORMAT or raw.get("format_version") != FORMAT_VERSION:
            raise ModelLoadError(f"{path} is not a clip-search classifier config (format {raw.get('format')!r}, version {raw.get('format_version')!r})")
        try:
            clip = raw["clip_model"]
            return cls(
                ModelRef(str(clip["id"]), clip.get("revision"), clip.get("commit")),
                int(raw["dim"]), tuple(Task.from_json(t) for t in raw["tasks"]), int(raw["hidden"]), str(raw["depth"]),
                str(raw["freeze"]), bool(raw.get("backbone_trained")), dict(raw.get("vision_config") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"{path}: a field is missing or malformed: {one_line(exc)}") from None


@dataclass(frozen=True)
class Prediction:
    """One task's prediction for one image: the labels assigned and each label's probability, most probable first."""

    task: str
    labels: tuple[str, ...]
    probabilities: tuple[tuple[str, float], ...]


class Classifier:
    """A trained classifier loaded from its folder (or a hub repo): predicts each task's labels for store rows."""

    def __init__(self, config: ClassifierConfig, weights: Mapping[str, np.ndarray], root: Path) -> None:
        self.config = config
        self.weights = {k: np.asarray(v, np.float32) for k, v in weights.items()}
        self.root = root
        self._vision: Any = None

    @classmethod
    def from_pretrained(cls, dir_or_repo: str | Path, *, revision: str | None = None) -> Classifier:
        """Load a classifier folder, or download a hub model repo holding one (`revision`: a branch, tag or commit)."""
        root = Path(dir_or_repo).expanduser()
        if not root.exists():
            root = _download(str(dir_or_repo), revision)
        path = root / CONFIG
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"cannot read the classifier config {path}: {one_line(exc)}") from None
        config = ClassifierConfig.from_json(raw, path)
        try:
            from safetensors.numpy import load_file

            weights = load_file(root / WEIGHTS)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot read the classifier weights {root / WEIGHTS}: {one_line(exc)}") from None
        expected = [f"heads.{t.name}.weight" for t in config.tasks]
        missing = [k for k in expected if k not in weights]
        if missing:
            raise ModelLoadError(f"{root / WEIGHTS} lacks {missing[0]}: it does not match {path}")
        return cls(config, weights, root)

    @property
    def tasks(self) -> tuple[Task, ...]:
        """The tasks it predicts, in head order."""
        return self.config.tasks

    @property
    def name(self) -> str:
        """The folder's name, for messages and the app."""
        return self.root.name

    def model_path(self) -> str:
        """The CLIP it was trained on, as `from_pretrained` opens it (a folder resolved against this one)."""
        return resolve_ref(self.config.clip.id, self.root)

    def check_store(self, store: EmbeddingStore) -> None:
        """Refuse a store whose embeddings another CLIP made (or another commit of it): its predictions would be noise."""
        recorded, theirs = self.config.clip, store.manifest.model
        commits_differ = bool(recorded.commit and theirs.commit and recorded.commit != theirs.commit)
        if not same_model(self.model_path(), store.model_path()) or commits_differ or store.dim != self.config.dim:
            made = f"{store.model_id}" + (f"@{theirs.commit[:12]}" if theirs.commit else "")
            mine = f"{recorded.id}" + (f"@{recorded.commit[:12]}" if recorded.commit else "")
            raise StoreError(f"the classifier {self.root} was trained on embeddings of {mine}, but the store at {store.root} was made by {made}: train one on this store")

    def predict_embeddings(self, embeddings: np.ndarray) -> dict[str, np.ndarray]:
        """Each task's probabilities (rows × labels) for unit CLIP image embeddings, in numpy."""
        x = np.asarray(embeddings, np.float32)
        shared = np.maximum(x @ self.weights["trunk.0.weight"].T + self.weights["trunk.0.bias"], 0.0) if self.config.hidden else x
        out = {}
        for task in self.tasks:
            logits = shared @ self.weights[f"heads.{task.name}.weight"].T + self.weights[f"heads.{task.name}.bias"]
            if f"direct.{task.name}.weight" in self.weights:
                logits = logits + x @ self.weights[f"direct.{task.name}.weight"].T
            out[task.name] = _sigmoid(logits) if task.multilabel else _softmax(logits)
        return out

    def predict_rows(self, store: EmbeddingStore, rows: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
        """Each task's probabilities for store rows: from the stored embeddings, or by re-encoding the images when
        this classifier's vision tower was fine-tuned."""
        self.check_store(store)
        rows = np.asarray(rows, dtype=np.int64)
        if not self.config.backbone_trained:
            parts = [self.predict_embeddings(store.vectors(rows[i : i + PREDICT_CHUNK_ROWS])) for i in range(0, len(rows), PREDICT_CHUNK_ROWS)]
        else:
            parts = [self.predict_embeddings(self._reencode(store, rows[i : i + 256])) for i in range(0, len(rows), 256)]
        return {t.name: np.concatenate([p[t.name] for p in parts]) if parts else np.zeros((0, len(t.labels)), np.float32) for t in self.tasks}

    def predict_store(self, store: EmbeddingStore) -> dict[str, np.ndarray]:
        """Each task's probabilities for every row of the store."""
        return self.predict_rows(store, np.arange(len(store)))

    def predictions(self, probabilities: Mapping[str, np.ndarray], row: int, top: int = 3) -> tuple[Prediction, ...]:
        """One row's predictions for every task: the assigned labels and the `top` most probable with probabilities."""
        out = []
        for task in self.tasks:
            probs = probabilities[task.name][row]
            order = np.argsort(-probs, kind="stable")
            assigned = assigned_labels(task, probs)
            out.append(Prediction(task.name, assigned, tuple((task.labels[i], float(probs[i])) for i in order[:top])))
        return tuple(out)

    def _reencode(self, store: EmbeddingStore, rows: np.ndarray) -> np.ndarray:
        """Embeddings of the rows' images by this classifier's fine-tuned vision tower."""
        import torch

        vision, processor = self._vision_tower()
        images = read_images(store, rows, f"the classifier {self.root} re-encodes images (its vision tower was fine-tuned)")
        with torch.inference_mode():
            pixels = processor(images=images, return_tensors="pt")["pixel_values"]
            out = vision(pixel_values=pixels).image_embeds
        return torch.nn.functional.normalize(out, dim=-1).numpy()

    def _vision_tower(self) -> tuple[Any, Any]:
        if self._vision is None:
            import torch
            from transformers import AutoImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

            model = CLIPVisionModelWithProjection(CLIPVisionConfig(**self.config.vision_config))
            state = {k: torch.from_numpy(v) for k, v in self.weights.items() if k.startswith(("vision_model.", "visual_projection."))}
            model.load_state_dict(state)
            self._vision = (model.eval(), AutoImageProcessor.from_pretrained(self.root))
        return self._vision


def read_images(store: EmbeddingStore, rows: Sequence[int] | np.ndarray, why: str) -> list[Any]:
    """The rows' images, decoded as RGB; one that cannot be read is a StoreError saying `why` it was needed."""
    from clip_search.errors import SkipItem

    images = []
    for meta in store.rows(rows):
        try:
            images.append(store.open_image(meta))
        except SkipItem as exc:
            raise StoreError(f"{why}, and row {meta.get('id')!r}'s image cannot be read: {exc}") from None
    return images


def assigned_matrix(task: Task, probabilities: np.ndarray) -> np.ndarray:
    """Rows × labels, true where the task assigns the label: the most probable one, or every one over the threshold."""
    if task.multilabel:
        return probabilities >= CLASSIFIER_MULTILABEL_THRESHOLD
    out = np.zeros(probabilities.shape, dtype=bool)
    out[np.arange(len(probabilities)), probabilities.argmax(axis=1)] = True
    return out


def assigned_labels(task: Task, probabilities: np.ndarray) -> tuple[str, ...]:
    """The labels a task assigns from one row's probabilities (see `assigned_matrix`)."""
    return tuple(label for label, on in zip(task.labels, assigned_matrix(task, probabilities[None, :])[0]) if on)


def _download(repo_id: str, revision: str | None) -> Path:
    """A hub model repo's files in the local cache; offline or unknown, a ModelLoadError naming the repo."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, revision=revision, repo_type="model"))
    except Exception as exc:  # the hub client raises many kinds (offline, not found, auth, HTTP); each is one line
        raise ModelLoadError(f"no classifier folder at {repo_id}, and it cannot be downloaded as a hub repo: {one_line(exc)}") from None


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * logits))
