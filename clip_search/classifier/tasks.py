"""Classification tasks: what a `--task NAME:COLUMN[:KIND]` names, the task type read from its values, and the
label targets of every row (from the store's metadata or a labels file joined on `id`).

A task is binary (two labels, one per row), multi-class (more than two, one per row) or multi-label (any number
per row: a column holding lists, or text such as `a|b|c`). A row without a value is unlabelled for that task:
it is left out of that task's loss and metrics, and still trains the others.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clip_search.errors import ClipSearchError

BINARY, MULTICLASS, MULTILABEL = "binary", "multiclass", "multilabel"
KINDS: tuple[str, ...] = (BINARY, MULTICLASS, MULTILABEL)
MULTILABEL_SEPARATOR = "|"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class TaskSpec:
    """One task as asked for: its name, the column holding its labels, and its kind when given (else detected)."""

    name: str
    column: str
    kind: str | None = None

    @classmethod
    def parse(cls, text: str) -> TaskSpec:
        """A TaskSpec from "NAME:COLUMN" or "NAME:COLUMN:KIND" (a lone "NAME" reads column NAME)."""
        parts = [p.strip() for p in (text or "").split(":")]
        if not 1 <= len(parts) <= 3 or not all(parts):
            raise ClipSearchError(f"task: cannot read {text!r}: write NAME:COLUMN or NAME:COLUMN:KIND, KIND one of {', '.join(KINDS)}")
        name, column, kind = parts[0], parts[1] if len(parts) > 1 else parts[0], parts[2] if len(parts) > 2 else None
        if not _NAME.match(name):
            raise ClipSearchError(f"task: the name {name!r} must be letters, digits, '_', '-' or '.'")
        if kind is not None and kind not in KINDS:
            raise ClipSearchError(f"task {name}: unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
        return cls(name, column, kind)


@dataclass(frozen=True)
class Task:
    """A task with its labels fixed: the names the head's outputs stand for, in output order."""

    name: str
    column: str
    kind: str
    labels: tuple[str, ...]

    @property
    def multilabel(self) -> bool:
        """Whether a row may hold several labels (sigmoid outputs) rather than exactly one (softmax)."""
        return self.kind == MULTILABEL

    def to_json(self) -> dict[str, Any]:
        """The task as the classifier's config.json records it."""
        return {"name": self.name, "column": self.column, "kind": self.kind, "labels": list(self.labels)}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Task:
        """A task from its config.json record."""
        return cls(str(obj["name"]), str(obj["column"]), str(obj["kind"]), tuple(str(label) for label in obj["labels"]))


@dataclass(frozen=True)
class Targets:
    """The labels of every row for one task: class indices (-1: unlabelled) or a multi-hot matrix with a row mask."""

    task: Task
    values: np.ndarray  # single-label: (N,) int64, -1 where unlabelled; multi-label: (N, L) float32 0/1
    labelled: np.ndarray  # (N,) bool

    def counts(self) -> np.ndarray:
        """Labelled rows per label (for a multi-label task: rows holding it)."""
        if self.task.multilabel:
            return self.values[self.labelled].sum(axis=0).astype(np.int64)
        return np.bincount(self.values[self.labelled], minlength=len(self.task.labels))


def row_labels(value: Any) -> list[str] | None:
    """The labels one cell holds: None when empty, a list for lists and `a|b|c` text, else one label."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, (list, tuple, np.ndarray)):
        items = [str(v).strip() for v in value if v is not None and str(v).strip()]
        return items
    text = str(value).strip()
    if not text:
        return None
    if MULTILABEL_SEPARATOR in text:
        return [part.strip() for part in text.split(MULTILABEL_SEPARATOR) if part.strip()]
    return [text]


def detect_task(spec: TaskSpec, values: Sequence[Any]) -> Task:
    """The task's kind (unless the spec gives it) and its sorted label names, read from a column's values."""
    cells = [row_labels(v) for v in values]
    present = [c for c in cells if c is not None]
    if not present:
        raise ClipSearchError(f"task {spec.name}: column {spec.column!r} holds no labels")
    listed = any(isinstance(v, (list, tuple, np.ndarray)) or (isinstance(v, str) and MULTILABEL_SEPARATOR in v) for v in values)
    labels = tuple(sorted({label for cell in present for label in cell}, key=_natural))
    kind = spec.kind or (MULTILABEL if listed else BINARY if len(labels) == 2 else MULTICLASS)
    if kind != MULTILABEL and any(len(c) != 1 for c in present):
        raise ClipSearchError(f"task {spec.name}: column {spec.column!r} has rows with several labels; use kind {MULTILABEL}")
    if kind == BINARY and len(labels) != 2:
        raise ClipSearchError(f"task {spec.name}: a binary task needs exactly 2 labels, column {spec.column!r} has {len(labels)}")
    if len(labels) < (1 if kind == MULTILABEL else 2):
        raise ClipSearchError(f"task {spec.name}: column {spec.column!r} has only the label {labels[0]!r}; a classifier needs at least two")
    return Task(spec.name, spec.column, kind, labels)


def encode_targets(task: Task, values: Sequence[Any]) -> Targets:
    """The rows' labels for `task` as class indices or multi-hot rows; a label the task does not know is an error."""
    index = {label: i for i, label in enumerate(task.labels)}
    n = len(values)
    labelled = np.zeros(n, dtype=bool)
    out = np.zeros((n, len(task.labels)), np.float32) if task.multilabel else np.full(n, -1, np.int64)
    for row, value in enumerate(values):
        cell = row_labels(value)
        if cell is None:
            continue
        unknown = [label for label in cell if label not in index]
        if unknown:
            raise ClipSearchError(f"task {task.name}: row {row} has label {unknown[0]!r}, which is not one of {', '.join(task.labels)}")
        labelled[row] = True
        if task.multilabel:
            out[row, [index[label] for label in cell]] = 1.0
        else:
            out[row] = index[cell[0]]
    return Targets(task, out, labelled)


def read_labels_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """Rows of a labels file (CSV or JSONL with an `id` column and label columns), keyed by id."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ClipSearchError(f"cannot read the labels file {path}: {exc}") from None
    rows: list[dict[str, Any]] = []
    if path.suffix.lower() in (".jsonl", ".json"):
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ClipSearchError(f"{path}: line {number} is not JSON: {exc}") from None
            if not isinstance(obj, dict):
                raise ClipSearchError(f"{path}: line {number} is not a JSON object")
            rows.append(obj)
    else:
        rows = list(csv.DictReader(text.splitlines(), delimiter="\t" if path.suffix.lower() == ".tsv" else ","))
    by_id: dict[str, dict[str, Any]] = {}
    for number, row in enumerate(rows, 1):
        if row.get("id") in (None, ""):
            raise ClipSearchError(f"{path}: row {number} has no 'id'")
        by_id[str(row["id"])] = row
    if not by_id:
        raise ClipSearchError(f"{path} holds no labelled rows")
    return by_id


def label_columns(specs: Sequence[TaskSpec], ids: Sequence[str], metadata: Mapping[str, Sequence[Any]], labels_file: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, list[Any]]:
    """Each task's column, one value per store row: from the labels file (joined on id) when given, else the metadata."""
    columns: dict[str, list[Any]] = {}
    for spec in specs:
        if labels_file is not None:
            sample = next(iter(labels_file.values()))
            if spec.column not in sample:
                raise ClipSearchError(f"task {spec.name}: the labels file has no column {spec.column!r}; it has {', '.join(sample)}")
            known = set(ids)
            stray = next((i for i in labels_file if i not in known), None)
            if stray is not None:
                raise ClipSearchError(f"the labels file names id {stray!r}, which the store does not hold")
            columns[spec.name] = [labels_file.get(i, {}).get(spec.column) for i in ids]
        else:
            if spec.column not in metadata:
                raise ClipSearchError(f"task {spec.name}: the store has no column {spec.column!r}; its columns are {', '.join(metadata)}")
            columns[spec.name] = list(metadata[spec.column])
    return columns


def _natural(label: str) -> tuple[int, float, str]:
    """Sort key: numbers in numeric order before words in text order."""
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)
