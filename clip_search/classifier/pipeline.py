"""`train_classifier`: a store and label columns in, a trained, evaluated classifier folder out (what the
`train-classifier` command runs)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clip_search.classifier.blending import blend_with_zero_shot, cross_validated_shares, head_start
from clip_search.classifier.card import CARD, model_card, validate_card
from clip_search.classifier.evaluation import Evaluation, evaluate_probabilities, write_plots, zero_shot_labels, zero_shot_probabilities
from clip_search.classifier.freezing import FreezePlan, TrainableSummary, apply_freeze
from clip_search.classifier.model import MultiTaskHeads, VisionClassifier
from clip_search.classifier.repo import CONFIG, METRICS, SPLIT, WEIGHTS, ClassifierConfig, read_images
from clip_search.classifier.tasks import Targets, TaskSpec, detect_task, encode_targets, label_columns, read_labels_file
from clip_search.classifier.training import FINETUNE, FitReport, Split, TrainSettings, fit, predict_logits, stratified_split
from clip_search.errors import ClipSearchError
from clip_search.store import EmbeddingStore, ModelRef, portable_ref

log = logging.getLogger(__name__)


@dataclass
class TrainReport:
    """What training did and measured: the saved config, settings, data, the loss history and the test figures."""

    out: Path
    config: ClassifierConfig
    settings: TrainSettings
    model_name: str
    store_name: str
    store_rows: int
    source: str
    dataset: str | None
    label_source: str
    split_sizes: dict[str, dict[str, int]]
    trainable: TrainableSummary
    fit: FitReport
    evaluation: Evaluation
    seconds: float

    def settings_json(self) -> dict[str, Any]:
        """The settings as the card and metrics.json list them."""
        return {k: v for k, v in asdict(self.settings).items()}


def train_classifier(
    store_path: str | Path,
    tasks: Sequence[TaskSpec | str],
    out: str | Path,
    *,
    settings: TrainSettings = TrainSettings(),
    labels_file: str | Path | None = None,
    device: str | None = None,
    progress: bool = False,
    on_plan: Callable[[TrainableSummary], None] | None = None,
) -> TrainReport:
    """Train one classifier with a head per task on a store's labelled rows, evaluate it on the test split against
    zero-shot, and write it to `out` as a Hugging Face model-repo folder (weights, config, card, metrics, plots).

    `tasks` are TaskSpecs or "NAME:COLUMN[:KIND]" texts; the columns are the store's metadata columns, or the columns
    of `labels_file` (CSV or JSONL with an `id` column) when given. `on_plan` is told which parts will train before
    training starts.
    """
    started = time.perf_counter()
    settings.check()
    plan = FreezePlan.parse(settings.freeze)
    specs = [s if isinstance(s, TaskSpec) else TaskSpec.parse(s) for s in tasks]
    if not specs:
        raise ClipSearchError("no task given: name at least one as NAME:COLUMN")
    if len({s.name for s in specs}) != len(specs):
        raise ClipSearchError("two tasks share a name: give each task its own NAME")
    out = Path(out)
    _check_out(out)
    store = EmbeddingStore.open(store_path)
    ids = [str(i) for i in store.metadata.column("id").to_pylist()]
    wanted = {s.column for s in specs}
    metadata = {c: store.metadata.column(c).to_pylist() if c in wanted else [] for c in store.columns}  # only label columns read
    columns = label_columns(specs, ids, metadata, read_labels_file(labels_file) if labels_file else None)
    found = [detect_task(s, columns[s.name]) for s in specs]
    all_targets = [encode_targets(t, columns[t.name]) for t in found]
    labelled = np.flatnonzero(np.any([t.labelled for t in all_targets], axis=0))
    targets = [Targets(t.task, t.values[labelled], t.labelled[labelled]) for t in all_targets]
    split = stratified_split(targets, settings)

    label_vectors, logit_scale = zero_shot_labels(store_path, found)
    initial = label_vectors if settings.zero_shot_init else {}  # the heads that start as zero-shot

    def make_heads() -> MultiTaskHeads:
        torch.manual_seed(settings.seed)
        made = MultiTaskHeads(store.dim, found, settings.hidden, settings.dropout)
        for name, vectors in initial.items():
            made.init_zero_shot(name, torch.from_numpy(vectors), logit_scale)
        return made

    heads = make_heads()
    start = head_start(heads, list(initial))
    clip = None
    if settings.depth == FINETUNE:
        from clip_search.clip_model import ClipEncoder

        clip = ClipEncoder.load(store.model_path(), revision=store.manifest.model.revision, device=device, dtype="float32")
        model: torch.nn.Module = VisionClassifier(clip.model.vision_model, clip.model.visual_projection, heads).to(clip.device)
        inputs = _pixels(store, labelled, clip)
    else:
        model = heads
        inputs = torch.from_numpy(store.vectors(labelled))
    summary = apply_freeze(model, plan)
    log.info("%s", summary.describe())
    if on_plan is not None:
        on_plan(summary)
    fitted = fit(model, inputs, targets, split, settings, progress=progress)
    shares = None
    if start and settings.blend_folds > 1 and not (settings.depth == FINETUNE and plan.changes_backbone):
        def fold_heads() -> MultiTaskHeads:  # trained as the heads above are: all of them, or the one head:NAME names
            made = make_heads()
            apply_freeze(made, plan if plan.head else FreezePlan("none"))
            return made

        shares = cross_validated_shares(fold_heads, torch.from_numpy(store.vectors(labelled)), targets, split, settings)  # the tower is the store's
    fitted.zero_shot_blend = blend_with_zero_shot(model, heads, start, inputs, targets, split, settings, shares)
    fitted.blend_chosen_on = f"{settings.blend_folds} folds of the training and validation rows" if shares is not None else "the validation rows"

    test_logits = predict_logits(model, inputs, split.test, settings.batch_size)
    probabilities = {t.name: (torch.sigmoid(test_logits[t.name]) if t.multilabel else torch.softmax(test_logits[t.name], dim=1)).numpy() for t in found}
    test_rows = labelled[split.test]
    baseline = zero_shot_probabilities(store.vectors(test_rows), label_vectors, logit_scale)
    evaluation = evaluate_probabilities(str(store_path), "test split", targets, split.test, probabilities, baseline)

    out.mkdir(parents=True, exist_ok=True)
    changed = settings.depth == FINETUNE and plan.changes_backbone
    config = ClassifierConfig(
        ModelRef(portable_ref(store.model_path(), out), store.manifest.model.revision, store.manifest.model.commit),
        store.dim, tuple(found), settings.hidden, settings.depth, str(plan), changed,
        {**clip.model.config.vision_config.to_dict(), "projection_dim": clip.model.config.projection_dim} if changed and clip else {},
    )
    sizes = {part: {t.task.name: int(t.labelled[rows].sum()) for t in targets} for part, rows in (("train", split.train), ("val", split.val), ("test", split.test))}
    source = store.manifest.source
    report = TrainReport(
        out, config, settings, out.resolve().name, store.root.resolve().name, len(labelled),
        f"{source.type}, {len(store)} images", source.name if source.type == "hf_dataset" else None,
        f"the labels file {Path(labels_file).name}" if labels_file else "the store's metadata columns " + ", ".join(f"`{s.column}`" for s in specs),
        sizes, summary, fitted, evaluation, time.perf_counter() - started,
    )
    _save(out, model, report, split, [ids[i] for i in labelled], clip)
    return report


def _check_out(out: Path) -> None:
    """Refuse to write into a non-empty folder that is not a classifier folder already (never clobber other files)."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / CONFIG).is_file())):
        raise ClipSearchError(f"{out} exists and is not a classifier folder: name a new or empty folder")


def _pixels(store: EmbeddingStore, rows: np.ndarray, clip: Any) -> torch.Tensor:
    """The rows' images, decoded and preprocessed once by the CLIP's processor (fine-tuning reads them every epoch)."""
    images = read_images(store, rows, "fine-tuning reads the images")
    return torch.cat([clip.preprocess(images[i : i + 256]) for i in range(0, len(images), 256)]).float()


def _save(out: Path, model: torch.nn.Module, report: TrainReport, split: Split, ids: list[str], clip: Any) -> None:
    """Weights, config, split, metrics, plots and the (validated) card into `out`."""
    from safetensors.torch import save_file

    state = {k.removeprefix("classifier."): v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if not report.config.backbone_trained:
        state = {k: v for k, v in state.items() if k.startswith(("trunk.", "heads.", "direct."))}
    elif clip is not None:
        clip.processor.image_processor.save_pretrained(out)
    save_file(state, str(out / WEIGHTS), metadata={"format": "pt"})
    (out / CONFIG).write_text(json.dumps(report.config.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    parts = {"seed": report.settings.seed, **{name: [ids[i] for i in rows] for name, rows in (("train", split.train), ("val", split.val), ("test", split.test))}}
    (out / SPLIT).write_text(json.dumps(parts, ensure_ascii=False) + "\n", encoding="utf-8")
    metrics = {
        **report.evaluation.to_json(),
        "settings": report.settings_json(),
        "trainable": asdict(report.trainable),
        "history": {"train_loss": report.fit.train_loss, "val_loss": report.fit.val_loss, "best_epoch": report.fit.best_epoch, "stopped_early": report.fit.stopped_early, "zero_shot_blend": report.fit.zero_shot_blend, "blend_chosen_on": report.fit.blend_chosen_on},
        "seconds": round(report.seconds, 2),
    }
    (out / METRICS).write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    write_plots(out, report.evaluation)
    (out / CARD).write_text(model_card(report), encoding="utf-8")
    validate_card(out / CARD)
