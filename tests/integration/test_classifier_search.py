"""Classifiers in use: `train-classifier`, `eval-classifier` and `search --classifier --where-label` as a user runs
them, and label filters in the engine (applied before top-k, in single and batched searches)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clip_search.engine import Query, SearchEngine

REPO = Path(__file__).resolve().parents[2]


def clip_search(*args: str) -> subprocess.CompletedProcess:
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", str(REPO)), "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false", "CLIP_SEARCH_CACHE": os.environ["CLIP_SEARCH_CACHE"]}
    return subprocess.run([sys.executable, "-m", "clip_search.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def cli_trained(folder_store: Path, folder_store_labels: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """A classifier trained by the command line from a labels file of the tiny store's photos."""
    labels = folder_store_labels
    out = tmp_path_factory.mktemp("cli-classifier") / "colours"
    done = clip_search("train-classifier", str(folder_store), "--task", "colour:colour", "--task", "shape:shape", "--labels", str(labels), "--out", str(out), "--epochs", "20", "--batch-size", "8", "--no-progress")
    return out, labels, done


def test_train_classifier_says_what_trains_and_what_it_measured(cli_trained: tuple[Path, Path, subprocess.CompletedProcess]) -> None:
    out, _, done = cli_trained
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("training ") and "parameters: trunk, head colour, head shape" in lines[0]
    assert any(line.startswith("colour") and "multiclass" in line for line in lines) and any(line.startswith("shape") and "binary" in line for line in lines)
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()


def test_eval_classifier_prints_the_test_figures_as_json(cli_trained: tuple[Path, Path, subprocess.CompletedProcess], folder_store: Path) -> None:
    out, labels, _ = cli_trained
    done = clip_search("eval-classifier", str(out), str(folder_store), "--labels", str(labels), "--json")
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["rows"] == "test split" and set(figures["tasks"]) == {"colour", "shape"}
    recorded = json.loads((out / "metrics.json").read_text())
    assert figures["tasks"]["colour"]["classifier"]["accuracy"] == pytest.approx(recorded["tasks"]["colour"]["classifier"]["accuracy"])
    assert figures["tasks"]["shape"]["classifier"]["roc_auc"] is not None


def test_search_labels_every_hit_and_filters_by_label_before_top_k(cli_trained: tuple[Path, Path, subprocess.CompletedProcess], folder_store: Path) -> None:
    out = cli_trained[0]
    everything = json.loads(clip_search("search", str(folder_store), "a red circle", "--classifier", str(out), "--top-k", "16", "--json").stdout)
    assert len(everything) == 16 and all(set(h["predictions"]) == {"colour", "shape"} for h in everything)
    first = everything[0]["predictions"]["colour"]
    assert len(first["labels"]) == 1 and len(first["probabilities"]) == 3  # the three most probable of four
    assert sum(everything[0]["predictions"]["shape"]["probabilities"].values()) == pytest.approx(1, abs=1e-3)
    label = first["labels"][0]
    wanted = [h["id"] for h in everything if h["predictions"]["colour"]["labels"] == [label]]
    done = clip_search("search", str(folder_store), "a red circle", "--classifier", str(out), "--where-label", f"colour={label}", "--top-k", "2", "--json")
    assert done.returncode == 0, done.stderr
    assert [h["id"] for h in json.loads(done.stdout)] == wanted[:2]
    text = clip_search("search", str(folder_store), "a red circle", "--classifier", str(out), "--top-k", "1")
    assert text.returncode == 0 and "{colour: " in text.stdout and "; shape: " in text.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--where-label", "colour=mauve"), "task 'colour' has no label 'mauve'; its labels are: blue, green, red, yellow"),
        (("--where-label", "size=large"), "no classifier has the task 'size'"),
        (("--where-label", "colour"), "write TASK=LABEL"),
    ],
)
def test_a_bad_label_filter_is_one_line(cli_trained: tuple[Path, Path, subprocess.CompletedProcess], folder_store: Path, args: tuple[str, ...], message: str) -> None:
    done = clip_search("search", str(folder_store), "a red circle", "--classifier", str(cli_trained[0]), *args)
    errors = [line for line in done.stderr.splitlines() if not line.startswith("INFO ")]
    assert done.returncode == 1 and len(errors) == 1 and message in errors[0]


def test_push_to_hub_offline_fails_in_one_line_naming_the_repo_and_keeps_the_folder(folder_store: Path, cli_trained: tuple[Path, Path, subprocess.CompletedProcess], tmp_path: Path) -> None:
    labels = cli_trained[1]
    out = tmp_path / "pushed"
    done = clip_search("train-classifier", str(folder_store), "--task", "colour:colour", "--labels", str(labels), "--out", str(out), "--epochs", "2", "--no-progress", "--push-to-hub", "someone/colours")
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if not line.startswith("INFO ")]
    assert len(errors) == 1 and errors[0].startswith("clip-search train-classifier: error: cannot push to the hub repo someone/colours")
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()


def test_the_engine_filters_by_label_in_single_and_batched_searches(cli_trained: tuple[Path, Path, subprocess.CompletedProcess], folder_store: Path) -> None:
    engine = SearchEngine.load(folder_store, classifiers=[cli_trained[0]])
    assert set(engine.label_tasks) == {"colour", "shape"}
    full = engine.search("a blue square", top_k=16)
    shape = full.hits[0].predictions[1]
    assert shape.task == "shape"
    kept = [h.row for h in full.hits if h.predictions[1].labels == shape.labels]
    one = engine.search("a blue square", top_k=3, where_labels=[f"shape={shape.labels[0]}"])
    assert [h.row for h in one.hits] == kept[:3]
    batched = engine.search_many([Query(text="a blue square", top_k=3, where_labels=(f"shape={shape.labels[0]}",)), Query(text="a blue square", top_k=3)])
    assert [h.row for h in batched[0].hits] == kept[:3] and [h.row for h in batched[1].hits] == [h.row for h in full.hits[:3]]
