"""The classifier folder's model card (README.md): YAML metadata with a `model-index` of the test figures, built and
checked with huggingface_hub's own card classes, and the sections a reader looks for."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from clip_search.errors import ClipSearchError, one_line

if TYPE_CHECKING:
    from huggingface_hub import EvalResult, ModelCard

    from clip_search.classifier.pipeline import TrainReport

CARD = "README.md"
SECTIONS = ("## Intended use", "## Training data", "## Training parameters", "## Evaluation results", "## Limitations")


def eval_results(report: TrainReport) -> list[EvalResult]:
    """The model-index entries: accuracy and macro-F1 per task on the test split (and ROC-AUC where defined).

    The task's name is also the dataset config: the model-index groups results by task type and dataset, so
    without it every task's figures would merge under the first task.
    """
    from huggingface_hub import EvalResult

    out = []
    for e in report.evaluation.tasks:
        figures = [("accuracy", "accuracy", e.model.accuracy), ("f1", "macro F1", e.model.macro_f1)]
        figures += [("roc_auc", "ROC-AUC", e.model.roc_auc)] if e.model.roc_auc is not None else []
        for metric_type, metric_name, value in figures:
            out.append(EvalResult(
                task_type="image-classification", task_name=e.task.name, dataset_type="clip-search-store",
                dataset_name=report.store_name, dataset_config=e.task.name, dataset_split="test", metric_type=metric_type,
                metric_name=f"{e.task.name} {metric_name}",
                metric_value=round(float(value), 4),
            ))
    return out


def model_card(report: TrainReport) -> str:
    """The card's text: front matter from `ModelCardData`, then intended use, data, parameters, results, limits."""
    from huggingface_hub import ModelCardData

    clip = report.config.clip
    on_hub = not clip.id.startswith((".", "/", "~")) and clip.id.count("/") == 1
    data = ModelCardData(
        library_name="clip-search",
        pipeline_tag="image-classification",
        tags=["clip-search", "image-classification", "clip", "multi-task" if len(report.config.tasks) > 1 else "single-task", report.config.depth],
        base_model=clip.id if on_hub else None,
        datasets=[report.dataset] if report.dataset else None,
        metrics=["accuracy", "f1", "roc_auc"],
        model_name=report.model_name,
        eval_results=eval_results(report),
    )
    commit = f" (commit {clip.commit})" if clip.commit else ""
    tasks = "\n".join(
        f"| {t.name} | `{t.column}` | {t.kind} | {', '.join(t.labels)} | {report.split_sizes['train'][t.name]} / {report.split_sizes['val'][t.name]} / {report.split_sizes['test'][t.name]} |"
        for t in report.config.tasks
    )
    settings = "\n".join(f"- {k}: {v}" for k, v in report.settings_json().items())
    results = "\n".join(
        f"| {e.task.name} | {e.model.rows} | {e.model.accuracy:.3f} | {e.model.macro_f1:.3f} | "
        + (f"{e.model.roc_auc:.3f}" if e.model.roc_auc is not None else "-")
        + f" | {e.model.ece:.3f} | " + (f"{e.zero_shot.accuracy:.3f} | {e.zero_shot.macro_f1:.3f}" if e.zero_shot else "- | -") + " |"
        for e in report.evaluation.tasks
    )
    plots = "\n".join(f"- `confusion-{t.name}.png`, `reliability-{t.name}.png`" for t in report.config.tasks)
    reads = "re-encodes each image with its fine-tuned vision tower" if report.config.backbone_trained else "reads the embeddings a store already holds (no image is re-encoded)"
    body = f"""
# {report.model_name}

A clip-search classifier: {"one head per task on a shared trunk" if len(report.config.tasks) > 1 else "a head on a trunk"} over
the image embeddings of the CLIP model `{clip.id}`{commit}, trained {"on the stored embeddings" if report.config.depth == "heads" else "end to end through CLIP's vision tower"}
({report.trainable.describe()}).

## Intended use

Labelling the images of a clip-search store made by `{clip.id}` with the tasks below, and filtering searches by
those labels:

```bash
clip-search search STORE "a query" --classifier PATH_TO_THIS_FOLDER --where-label {report.config.tasks[0].name}={report.config.tasks[0].labels[0]}
```

```python
from clip_search.classifier import Classifier
from clip_search.store import EmbeddingStore

classifier = Classifier.from_pretrained("PATH_OR_REPO")
probabilities = classifier.predict_store(EmbeddingStore.open("STORE"))  # task -> rows x labels
```

It {reads}. A store made by another CLIP is refused.

## Training data

{report.store_rows} rows of the store `{report.store_name}` ({report.source}); labels from {report.label_source}.
A stratified split with seed {report.settings.seed} (train / validation / test rows per task below):

| task | column | kind | labels | train / val / test |
|---|---|---|---|---|
{tasks}

## Training parameters

{settings}
- epochs run: {len(report.fit.train_loss)} (kept epoch {report.fit.best_epoch + 1}{", stopped early on the validation loss" if report.fit.stopped_early else ""})
- zero-shot blend (WiSE-FT per head, the trained share kept, chosen on {report.fit.blend_chosen_on}): {", ".join(f"{task} {share:g}" for task, share in report.fit.zero_shot_blend.items()) or "none (no head started as zero-shot)"}
- class imbalance: class-weighted losses (scikit-learn's "balanced" weights from the training rows; for multi-label tasks, a positive weight negatives/positives per label)
- training time: {report.seconds:.1f} s

## Evaluation results

On the test split. Zero-shot: the store's own text encoder with the label names and CLIP's prompt templates,
on the same rows (single-label tasks). ECE: expected calibration error over 10 confidence bins.

| task | rows | accuracy | macro-F1 | ROC-AUC | ECE | zero-shot accuracy | zero-shot macro-F1 |
|---|---|---|---|---|---|---|---|
{results}

Per-class precision, recall and F1 are in `metrics.json`; the plots:

{plots}

## Limitations

- It knows only the labels it was trained on, and only as well as {report.store_rows} labelled images of one
  collection teach them; images unlike that collection may be labelled confidently and wrongly.
- It reads embeddings of `{clip.id}` only.
- Multi-label tasks assign every label whose probability reaches 0.5; that threshold was not tuned.
"""
    return f"---\n{data.to_yaml()}\n---\n{body}"


def validate_card(path: str | Path) -> ModelCard:
    """Load a card with huggingface_hub's ModelCard, strictly: metadata that does not parse (a malformed
    model-index), no model-index, or a missing section is a ClipSearchError naming the file."""
    from huggingface_hub import ModelCard

    path = Path(path)
    try:
        card = ModelCard.load(path, ignore_metadata_errors=False)
    except (OSError, ValueError) as exc:
        raise ClipSearchError(f"the model card {path} is not valid: {one_line(exc)}") from None
    if not card.data.eval_results:
        raise ClipSearchError(f"the model card {path} has no model-index results")
    missing = [s for s in SECTIONS if s not in card.text]
    if missing:
        raise ClipSearchError(f"the model card {path} lacks the section {missing[0]!r}")
    return card
