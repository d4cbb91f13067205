"""Training a classifier's networks: the stratified split, class-balanced losses, the optimiser's groups, and the
epoch loop with early stopping on the validation loss (shared by heads-only training and fine-tuning)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from clip_search import config
from clip_search.classifier.model import VisionClassifier, task_loss
from clip_search.classifier.tasks import Targets
from clip_search.errors import ClipSearchError
from clip_search.layer_decay import layer_decay_groups

log = logging.getLogger(__name__)

HEADS, FINETUNE = "heads", "finetune"


@dataclass(frozen=True)
class TrainSettings:
    """How a classifier is trained; the defaults live in clip_search.config and are overridden with `replace`."""

    depth: str = HEADS
    freeze: str = "backbone"
    hidden: int = config.CLASSIFIER_HIDDEN
    dropout: float = config.CLASSIFIER_DROPOUT
    lr: float = config.CLASSIFIER_LR
    backbone_lr: float = config.CLASSIFIER_BACKBONE_LR
    layer_lr_decay: float | None = None
    zero_shot_init: bool = True  # single-label heads start as zero-shot classification with the label names
    blend_folds: int = config.CLASSIFIER_BLEND_FOLDS  # folds that choose each zero-shot head's blend (below 2: validation)
    weight_decay: float = config.CLASSIFIER_WEIGHT_DECAY
    batch_size: int = config.CLASSIFIER_BATCH_SIZE
    max_epochs: int = config.CLASSIFIER_MAX_EPOCHS
    patience: int = config.CLASSIFIER_PATIENCE
    val_fraction: float = config.CLASSIFIER_VAL_FRACTION
    test_fraction: float = config.CLASSIFIER_TEST_FRACTION
    seed: int = config.CLASSIFIER_SEED

    def check(self) -> None:
        """Refuse settings that cannot train, naming the parameter."""
        if self.depth not in (HEADS, FINETUNE):
            raise ClipSearchError(f"depth must be {HEADS} or {FINETUNE}, not {self.depth!r}")
        for name in ("lr", "backbone_lr"):
            if not getattr(self, name) > 0:
                raise ClipSearchError(f"{name} must be positive, not {getattr(self, name)}")
        if self.layer_lr_decay is not None and not 0 < self.layer_lr_decay <= 1:
            raise ClipSearchError(f"layer_lr_decay must be in (0, 1], not {self.layer_lr_decay}")
        if self.batch_size < 1 or self.max_epochs < 1 or self.patience < 1 or self.hidden < 0 or self.blend_folds < 0:
            raise ClipSearchError("batch_size, max_epochs and patience must be at least 1, hidden and blend_folds at least 0")
        if not (0 < self.val_fraction < 1 and 0 < self.test_fraction < 1 and self.val_fraction + self.test_fraction < 1):
            raise ClipSearchError(f"val_fraction ({self.val_fraction}) and test_fraction ({self.test_fraction}) must be fractions summing to less than 1")


@dataclass(frozen=True)
class Split:
    """Row numbers of the training, validation and test parts."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


@dataclass
class FitReport:
    """Per-epoch mean losses by task (training and validation), the epoch kept, and whether training stopped early."""

    train_loss: list[dict[str, float]] = field(default_factory=list)
    val_loss: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    zero_shot_blend: dict[str, float] = field(default_factory=dict)  # per task: the trained share kept (1: all trained)
    blend_chosen_on: str = ""  # which rows chose those shares


def stratified_split(targets: Sequence[Targets], settings: TrainSettings) -> Split:
    """Train/validation/test rows among those labelled for some task, stratified with a fixed seed.

    Stratified on the joint label of every single-label task when each combination has enough rows, else on the
    first task's label, else not at all (a multi-label task stratifies on its first label).
    """
    from sklearn.model_selection import train_test_split

    labelled = np.flatnonzero(np.any([t.labelled for t in targets], axis=0))
    if len(labelled) < 10:
        raise ClipSearchError(f"only {len(labelled)} labelled rows: a classifier needs at least 10 to train, validate and test")
    held = settings.val_fraction + settings.test_fraction
    for key in strata(targets, labelled):
        if key is not None and (np.unique(key, return_counts=True)[1].min() < 3):
            continue
        try:
            train, rest = train_test_split(labelled, test_size=held, random_state=settings.seed, stratify=key)
            rest_key = None if key is None else key[np.searchsorted(labelled, rest)]
            val, test = train_test_split(rest, test_size=settings.test_fraction / held, random_state=settings.seed, stratify=rest_key)
        except ValueError:
            continue
        return Split(np.sort(train), np.sort(val), np.sort(test))
    raise ClipSearchError("cannot split the labelled rows into training, validation and test parts")


def strata(targets: Sequence[Targets], rows: np.ndarray) -> tuple[np.ndarray | None, ...]:
    """The keys to stratify `rows` on, best first: every single-label task's label joined, the first task's, none."""
    keys = [np.array([_stratum(t, row) for row in rows]) for t in targets]
    return np.array(["/".join(parts) for parts in zip(*keys)]), keys[0], None


def _stratum(targets: Targets, row: int) -> str:
    if not targets.labelled[row]:
        return "?"
    if targets.task.multilabel:
        on = np.flatnonzero(targets.values[row])
        return str(on[0]) if len(on) else "-"
    return str(int(targets.values[row]))


def loss_weights(targets: Targets, rows: np.ndarray) -> torch.Tensor:
    """Class weights against imbalance, from the training rows: scikit-learn's "balanced" n / (k × count) per class;
    for a multi-label task, BCE's positive weight negatives / positives per label (1 where a label has no example)."""
    from sklearn.utils.class_weight import compute_class_weight

    rows = rows[targets.labelled[rows]]
    k = len(targets.task.labels)
    if targets.task.multilabel:
        positives = targets.values[rows].sum(axis=0)
        weight = np.where(positives > 0, (len(rows) - positives) / np.maximum(positives, 1), 1.0)
        return torch.tensor(np.maximum(weight, 1e-3), dtype=torch.float32)
    present = np.unique(targets.values[rows])
    weight = np.ones(k)
    weight[present] = compute_class_weight("balanced", classes=present, y=targets.values[rows])
    return torch.tensor(weight, dtype=torch.float32)


def optimiser_groups(model: nn.Module, settings: TrainSettings) -> list[dict]:
    """AdamW groups of the trainable parameters: the trunk and heads at `lr`; a fine-tuned tower and its projection
    at `backbone_lr`, decayed layer by layer when `layer_lr_decay` is set (block N of L at
    backbone_lr × decay^(L − N), the patch embeddings at backbone_lr × decay^(L + 1); see `layer_decay_groups`)."""
    groups: list[dict] = []
    heads = model
    if isinstance(model, VisionClassifier):
        groups = layer_decay_groups(model.vision_model, [model.visual_projection], settings.backbone_lr, settings.layer_lr_decay, settings.weight_decay)
        for group in groups:
            group["name"] = "projection" if group["name"] == "head" else group["name"]
        heads = model.classifier
    trainable = [p for p in heads.parameters() if p.requires_grad]
    groups.append({"name": "heads", "lr": settings.lr, "params": [p for p in trainable if p.ndim > 1], "weight_decay": settings.weight_decay})
    groups.append({"name": "heads", "lr": settings.lr, "params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


def fit(model: nn.Module, inputs: torch.Tensor, targets: Sequence[Targets], split: Split, settings: TrainSettings, *, progress: bool = False) -> FitReport:
    """Train `model` on the split's training rows, keep the epoch with the lowest validation loss, stop after
    `patience` epochs without improvement; the model ends holding the kept epoch's weights."""
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    device = next(model.parameters()).device
    weights = [loss_weights(t, split.train).to(device) for t in targets]
    optimizer = torch.optim.AdamW(optimiser_groups(model, settings))
    report = FitReport()
    best, best_state, waited = float("inf"), None, 0
    train_rows = torch.as_tensor(split.train)
    for epoch in tqdm(range(settings.max_epochs), desc="train-classifier", unit="epoch", disable=not progress):
        model.train()
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for batch in train_rows[torch.randperm(len(train_rows), generator=generator)].split(settings.batch_size):
            rows = batch.numpy()
            logits = model(inputs[batch].to(device))
            losses = batch_losses(logits, targets, weights, rows)
            if not losses:
                continue
            optimizer.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            optimizer.step()
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + value.item()
                counts[name] = counts.get(name, 0) + 1
        report.train_loss.append({n: sums[n] / counts[n] for n in sums})
        report.val_loss.append(evaluate_loss(model, inputs, targets, weights, split.val, settings.batch_size))
        total = sum(report.val_loss[-1].values())
        if total < best - 1e-6:
            best, best_state, waited, report.best_epoch = total, copy.deepcopy(model.state_dict()), 0, epoch
        else:
            waited += 1
            if waited >= settings.patience:
                report.stopped_early = True
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    log.info("trained %d epochs, kept epoch %d (validation loss %.4f)", len(report.train_loss), report.best_epoch + 1, best)
    return report


def batch_losses(logits: dict[str, torch.Tensor], targets: Sequence[Targets], weights: Sequence[torch.Tensor], rows: np.ndarray) -> dict[str, torch.Tensor]:
    """Each task's loss over the rows of the batch labelled for it (a task with none in the batch is left out)."""
    losses = {}
    for t, w in zip(targets, weights):
        keep = t.labelled[rows]
        if keep.any():
            logit = logits[t.task.name]
            target = torch.as_tensor(t.values[rows[keep]]).to(logit.device)
            losses[t.task.name] = task_loss(t.task, logit[torch.as_tensor(keep).to(logit.device)], target, w)
    return losses


@torch.no_grad()
def evaluate_loss(model: nn.Module, inputs: torch.Tensor, targets: Sequence[Targets], weights: Sequence[torch.Tensor], rows: np.ndarray, batch_size: int) -> dict[str, float]:
    """Mean loss per task over `rows` (weighted as in training), the model in eval mode."""
    model.eval()
    logits = predict_logits(model, inputs, rows, batch_size)
    cpu_weights = [w.cpu() for w in weights]
    return {name: float(value) for name, value in batch_losses(logits, targets, cpu_weights, rows).items()} if len(rows) else {}


@torch.no_grad()
def predict_logits(model: nn.Module, inputs: torch.Tensor, rows: np.ndarray, batch_size: int) -> dict[str, torch.Tensor]:
    """The model's logits by task for `rows` of `inputs`, in batches, on the CPU."""
    model.eval()
    device = next(model.parameters()).device
    parts: dict[str, list[torch.Tensor]] = {}
    for batch in torch.as_tensor(rows, dtype=torch.long).split(batch_size):
        for name, value in model(inputs[batch].to(device)).items():
            parts.setdefault(name, []).append(value.cpu())
    return {name: torch.cat(values) for name, values in parts.items()}
