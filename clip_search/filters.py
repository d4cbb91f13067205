"""Row filters, parsed once and applied as a row mask before top-k, so exact and approximate search return only rows
that pass: metadata conditions ("column == value", "date >= 2020-01-01", "caption ~ beach") and label conditions
("TASK=LABEL": rows a trained classifier assigns that label).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from clip_search.errors import QueryError

OPERATORS = ("==", "!=", "<=", ">=", "<", ">", "~")  # ~ : contains, ignoring case
_CONDITION = re.compile(r"^\s*(?P<column>[^=!<>~]+?)\s*(?P<op>==|!=|<=|>=|<|>|~|=)\s*(?P<value>.*?)\s*$", re.S)
_COMPARE = {"==": pc.equal, "!=": pc.not_equal, "<=": pc.less_equal, ">=": pc.greater_equal, "<": pc.less, ">": pc.greater}


@dataclass(frozen=True)
class Condition:
    """One parsed filter: a metadata column, an operator, and the value as typed."""

    column: str
    op: str
    value: str

    def __str__(self) -> str:
        return f"{self.column} {self.op} {self.value}"


def parse_condition(text: str) -> Condition:
    """A Condition from "column OP value" (OP one of == != < <= > >= ~; a lone = means ==)."""
    match = _CONDITION.match(text or "")
    if not match or not match["value"]:
        raise QueryError(f"where: cannot read {text!r}: write COLUMN OP VALUE with OP one of {' '.join(OPERATORS)}, e.g. \"photographer == Ann\"")
    op = "==" if match["op"] == "=" else match["op"]
    return Condition(match["column"], op, _unquote(match["value"]))


def parse_conditions(conditions: Sequence[str | Condition]) -> tuple[Condition, ...]:
    """Conditions given as text or already parsed, all parsed."""
    return tuple(c if isinstance(c, Condition) else parse_condition(c) for c in conditions)


def row_mask(table: pa.Table, conditions: Sequence[Condition]) -> np.ndarray:
    """A bool per row: true where every condition holds (a missing value never matches)."""
    mask = np.ones(table.num_rows, dtype=bool)
    for condition in conditions:
        if condition.column not in table.column_names:
            columns = ", ".join(c for c in table.column_names if not c.startswith("_"))
            raise QueryError(f"where: the store has no column {condition.column!r}; its columns are: {columns}")
        column = table.column(condition.column)
        result = _evaluate(column, condition)
        mask &= np.asarray(pc.fill_null(result, False).to_numpy(zero_copy_only=False), dtype=bool)
    return mask


@dataclass(frozen=True)
class LabelCondition:
    """One label filter: rows to which the classifier holding `task` assigns `label`."""

    task: str
    label: str

    def __str__(self) -> str:
        return f"{self.task}={self.label}"


def parse_label_condition(text: str) -> LabelCondition:
    """A LabelCondition from "TASK=LABEL"."""
    task, sep, label = (text or "").partition("=")
    if not sep or not task.strip() or not label.strip():
        raise QueryError(f"where-label: cannot read {text!r}: write TASK=LABEL, e.g. \"shape=star\"")
    return LabelCondition(task.strip(), _unquote(label.strip()))


def parse_label_conditions(conditions: Sequence[str | LabelCondition]) -> tuple[LabelCondition, ...]:
    """Label conditions given as text or already parsed, all parsed."""
    return tuple(c if isinstance(c, LabelCondition) else parse_label_condition(c) for c in conditions)


def label_mask(assigned: Mapping[str, tuple[Sequence[str], np.ndarray]], conditions: Sequence[LabelCondition], rows: int) -> np.ndarray:
    """A bool per row: true where every condition's label is assigned. `assigned` maps a task to its label names and
    a rows × labels bool matrix of the labels a classifier assigns each row."""
    mask = np.ones(rows, dtype=bool)
    for condition in conditions:
        if condition.task not in assigned:
            known = ", ".join(assigned) or "none: load a classifier"
            raise QueryError(f"where-label: no classifier has the task {condition.task!r}; the tasks are: {known}")
        labels, matrix = assigned[condition.task]
        if condition.label not in labels:
            raise QueryError(f"where-label: task {condition.task!r} has no label {condition.label!r}; its labels are: {', '.join(labels)}")
        mask &= matrix[:, list(labels).index(condition.label)]
    return mask


def _evaluate(column: pa.ChunkedArray, condition: Condition) -> pa.ChunkedArray:
    if condition.op == "~":
        return pc.match_substring(pc.cast(column, pa.string()), condition.value, ignore_case=True)
    value = _typed(condition, column.type)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return _COMPARE[condition.op](column, pa.scalar(value, column.type))
    return _COMPARE[condition.op](column, value)


def _typed(condition: Condition, kind: pa.DataType) -> pa.Scalar | str:
    """The condition's value as a scalar of the column's type, or a one-line QueryError saying why it is not one."""
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return condition.value
    target = pa.bool_() if pa.types.is_boolean(kind) else kind
    try:
        if pa.types.is_boolean(kind):
            lowered = condition.value.lower()
            if lowered not in ("true", "false"):
                raise ValueError(lowered)
            return pa.scalar(lowered == "true")
        return pa.scalar(condition.value).cast(target)
    except (ValueError, pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise QueryError(f"where: {condition}: {condition.column!r} holds {kind}, and {condition.value!r} is not one") from None


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value
