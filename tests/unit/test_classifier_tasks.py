"""Task detection and label targets (clip_search.classifier.tasks): every task type, overrides, labels files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clip_search.classifier.tasks import BINARY, MULTICLASS, MULTILABEL, TaskSpec, detect_task, encode_targets, label_columns, read_labels_file
from clip_search.errors import ClipSearchError


@pytest.mark.parametrize(
    ("values", "kind", "labels"),
    [
        (["keep", "discard", None, "keep"], BINARY, ("discard", "keep")),
        (["3", "1", "2", "10", ""], MULTICLASS, ("1", "2", "3", "10")),
        ([["cat", "dog"], [], ["bird"], None], MULTILABEL, ("bird", "cat", "dog")),
        (["cat|dog", "bird", "dog"], MULTILABEL, ("bird", "cat", "dog")),
    ],
)
def test_the_kind_is_read_from_the_values(values: list, kind: str, labels: tuple[str, ...]) -> None:
    task = detect_task(TaskSpec("t", "c"), values)
    assert (task.kind, task.labels) == (kind, labels)


def test_a_kind_given_overrides_detection_and_is_checked() -> None:
    assert detect_task(TaskSpec.parse("t:c:multiclass"), ["a", "b"]).kind == MULTICLASS
    assert detect_task(TaskSpec.parse("t:c:multilabel"), ["a", "b"]).kind == MULTILABEL
    with pytest.raises(ClipSearchError, match="binary task needs exactly 2"):
        detect_task(TaskSpec.parse("t:c:binary"), ["a", "b", "c"])
    with pytest.raises(ClipSearchError, match="several labels"):
        detect_task(TaskSpec.parse("t:c:multiclass"), ["a|b", "c"])
    with pytest.raises(ClipSearchError, match="only the label"):
        detect_task(TaskSpec("t", "c"), ["a", "a", None])


@pytest.mark.parametrize("text", ["", "a:b:c:d", "bad name:c", "t:c:sometimes", "t::binary"])
def test_a_malformed_task_is_one_line(text: str) -> None:
    with pytest.raises(ClipSearchError, match="task"):
        TaskSpec.parse(text)


def test_targets_mark_unlabelled_rows_and_encode_each_kind() -> None:
    single = detect_task(TaskSpec("t", "c"), ["b", None, "a"])
    t = encode_targets(single, ["b", None, "a"])
    assert t.values.tolist() == [1, -1, 0] and t.labelled.tolist() == [True, False, True]
    assert t.counts().tolist() == [1, 1]
    multi = detect_task(TaskSpec("m", "c"), [["x", "y"], None, ["y"]])
    m = encode_targets(multi, [["x", "y"], None, ["y"]])
    assert m.values.tolist() == [[1, 1], [0, 0], [0, 1]] and m.labelled.tolist() == [True, False, True]
    with pytest.raises(ClipSearchError, match="row 1 has label 'z'"):
        encode_targets(single, ["a", "z"])


def test_labels_files_in_csv_and_jsonl_join_on_id(tmp_path: Path) -> None:
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("id,label\nb,keep\na,discard\n", encoding="utf-8")
    jsonl = tmp_path / "labels.jsonl"
    jsonl.write_text(json.dumps({"id": "a", "tags": ["x", "y"]}) + "\n" + json.dumps({"id": "c", "tags": []}) + "\n", encoding="utf-8")
    columns = label_columns([TaskSpec("label", "label")], ["a", "b", "c"], {}, read_labels_file(csv_file))
    assert columns == {"label": ["discard", "keep", None]}
    columns = label_columns([TaskSpec("tags", "tags")], ["a", "b", "c"], {}, read_labels_file(jsonl))
    assert columns == {"tags": [["x", "y"], None, []]}
    with pytest.raises(ClipSearchError, match="id 'zz', which the store does not hold"):
        label_columns([TaskSpec("label", "label")], ["a"], {}, {"zz": {"id": "zz", "label": "x"}})
    with pytest.raises(ClipSearchError, match="no column 'shape'"):
        label_columns([TaskSpec("s", "shape")], ["a"], {"colour": ["red"]})


def test_loading_a_classifier_imports_no_torch() -> None:
    import subprocess
    import sys

    code = "import sys, clip_search.classifier; print(' '.join(m for m in ('torch', 'transformers', 'sklearn', 'matplotlib') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout.strip()
    assert loaded == ""
