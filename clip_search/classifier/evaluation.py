"""Evaluating a classifier on a store: per-task figures on the test split (or every labelled row of another
store), the zero-shot baseline on the same rows, and the plots; `evaluate_classifier` is `eval-classifier`."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clip_search.classifier.metrics import TaskMetrics, task_metrics
from clip_search.classifier.plots import confusion_plot, reliability_plot
from clip_search.classifier.repo import SPLIT, Classifier
from clip_search.classifier.tasks import Targets, Task, TaskSpec, encode_targets, label_columns, read_labels_file


@dataclass
class TaskEvaluation:
    """One task's figures: the classifier's, and zero-shot classification's on the same rows (single-label tasks)."""

    task: Task
    model: TaskMetrics
    zero_shot: TaskMetrics | None


@dataclass
class Evaluation:
    """Every task's figures on one set of rows of one store."""

    store: str
    rows: str  # "test split" or "every labelled row"
    tasks: list[TaskEvaluation]

    def to_json(self) -> dict[str, Any]:
        """The figures as JSON (metrics.json, `eval-classifier --json`)."""
        return {
            "store": self.store,
            "rows": self.rows,
            "tasks": {e.task.name: {"kind": e.task.kind, "labels": list(e.task.labels), "classifier": e.model.to_json(), "zero_shot": e.zero_shot.to_json() if e.zero_shot else None} for e in self.tasks},
        }

    def table(self) -> str:
        """A plain-text table: per task, the classifier against zero-shot."""
        lines = [f"{self.store}, {self.rows}:", f"{'task':<14}{'kind':<12}{'rows':>6}{'accuracy':>10}{'macro-F1':>10}{'ROC-AUC':>9}{'ECE':>7}{'zero-shot acc':>15}{'zero-shot F1':>14}"]
        for e in self.tasks:
            m, z = e.model, e.zero_shot
            auc = f"{m.roc_auc:.3f}" if m.roc_auc is not None else "-"
            zs = (f"{z.accuracy:>15.3f}{z.macro_f1:>14.3f}") if z else f"{'-':>15}{'-':>14}"
            lines.append(f"{e.task.name:<14}{e.task.kind:<12}{m.rows:>6}{m.accuracy:>10.3f}{m.macro_f1:>10.3f}{auc:>9}{m.ece:>7.3f}{zs}")
        return "\n".join(lines)


def evaluate_probabilities(store: str, rows_label: str, targets: Sequence[Targets], rows: np.ndarray, probabilities: Mapping[str, np.ndarray], zero_shot: Mapping[str, np.ndarray]) -> Evaluation:
    """Figures of per-task probabilities for `rows` (aligned with them) against the targets, rows labelled per task."""
    out = []
    for t in targets:
        keep = t.labelled[rows]
        truth = t.values[rows[keep]]
        model = task_metrics(t.task, truth, probabilities[t.task.name][keep])
        baseline = task_metrics(t.task, truth, zero_shot[t.task.name][keep]) if t.task.name in zero_shot else None
        out.append(TaskEvaluation(t.task, model, baseline))
    return Evaluation(store, rows_label, out)


def zero_shot_labels(store_path: str | Path, tasks: Sequence[Task]) -> tuple[dict[str, np.ndarray], float]:
    """Each single-label task's label-name embeddings (the store's own text encoder, CLIP's prompt templates) and
    the store's logit scale: zero-shot classification as the labels box of a search does it."""
    from clip_search.classify import embed_labels
    from clip_search.engine import SearchEngine

    engine = SearchEngine.load(store_path)
    vectors = {t.name: embed_labels(list(t.labels), engine.text_encoder.encode_texts) for t in tasks if not t.multilabel}
    return vectors, engine.logit_scale


def zero_shot_probabilities(embeddings: np.ndarray, labels: Mapping[str, np.ndarray], logit_scale: float) -> dict[str, np.ndarray]:
    """Zero-shot probabilities by task for image embeddings, from `zero_shot_labels`."""
    from clip_search.classify import zero_shot_probabilities as softmax_over_labels

    return {name: softmax_over_labels(embeddings, vectors, logit_scale) for name, vectors in labels.items()}


def write_plots(folder: Path, evaluation: Evaluation) -> list[Path]:
    """confusion-TASK.png and reliability-TASK.png for every task, in `folder`."""
    paths = []
    for e in evaluation.tasks:
        paths.append(confusion_plot(e.model, e.task.labels, folder / f"confusion-{e.task.name}.png"))
        paths.append(reliability_plot(e.model, folder / f"reliability-{e.task.name}.png"))
    return paths


def evaluate_classifier(classifier_dir: str | Path, store_path: str | Path, *, labels_file: str | Path | None = None, zero_shot: bool = True) -> Evaluation:
    """A classifier's figures on a store: on its recorded test split when the store holds those rows, else on every
    row labelled for its tasks (in the store's metadata, or `labels_file` joined on id)."""
    from clip_search.store import EmbeddingStore

    classifier = Classifier.from_pretrained(classifier_dir)
    store = EmbeddingStore.open(store_path)
    classifier.check_store(store)
    ids = [str(i) for i in store.metadata.column("id").to_pylist()]
    specs = [TaskSpec(t.name, t.column, t.kind) for t in classifier.tasks]
    wanted = {t.column for t in classifier.tasks}
    metadata = {c: store.metadata.column(c).to_pylist() if c in wanted else [] for c in store.columns}  # only label columns read
    columns = label_columns(specs, ids, metadata, read_labels_file(labels_file) if labels_file else None)
    targets = [encode_targets(t, columns[t.name]) for t in classifier.tasks]
    labelled = np.flatnonzero(np.any([t.labelled for t in targets], axis=0))
    rows, label = labelled, "every labelled row"
    split_file = classifier.root / SPLIT
    if split_file.is_file():
        test_ids = json.loads(split_file.read_text(encoding="utf-8")).get("test", [])
        position = {i: n for n, i in enumerate(ids)}
        if test_ids and all(i in position for i in test_ids):
            rows, label = np.array(sorted(position[i] for i in test_ids), dtype=np.int64), "test split"
    probabilities = classifier.predict_rows(store, rows)
    baseline = zero_shot_probabilities(store.vectors(rows), *zero_shot_labels(store_path, classifier.tasks)) if zero_shot else {}
    return evaluate_probabilities(str(store_path), label, targets, rows, probabilities, baseline)
