"""WiSE-FT per head: each head that started as zero-shot keeps a blend of its trained and its starting weights, the
trained share chosen by k-fold cross-validation over the training and validation rows (or, when that is too slow,
on the validation rows alone)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from clip_search import config
from clip_search.classifier.model import MultiTaskHeads
from clip_search.classifier.tasks import Targets
from clip_search.classifier.training import Split, TrainSettings, fit, predict_logits, strata

log = logging.getLogger(__name__)

HeadWeights = dict[str, dict[str, torch.Tensor]]


def head_start(heads: MultiTaskHeads, tasks: Sequence[str]) -> HeadWeights:
    """A copy of these tasks' head and direct weights, to blend back to after training."""
    return {name: {k: v.detach().clone() for k, v in _head_weights(heads, name).items()} for name in tasks}


@torch.no_grad()
def blend_correct(model: nn.Module, heads: MultiTaskHeads, start: HeadWeights, inputs: torch.Tensor, targets: Sequence[Targets], rows: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """For each single-label task in `start`: how many of its labelled `rows` each trained share of
    CLASSIFIER_ZERO_SHOT_BLENDS classifies right. Logits are linear in a head's weights, so a share s is the head
    s × trained + (1 − s) × start (WiSE-FT's weight-space ensemble); the heads are left as trained."""
    counts: dict[str, np.ndarray] = {}
    for target in targets:
        name = target.task.name
        if name not in start or target.task.multilabel:
            continue
        labelled = rows[target.labelled[rows]]
        trained = head_start(heads, [name])
        correct = []
        for share in config.CLASSIFIER_ZERO_SHOT_BLENDS:
            _set_blend(heads, name, start[name], trained[name], share)
            predicted = predict_logits(model, inputs, labelled, batch_size)[name].argmax(dim=1).numpy() if len(labelled) else np.zeros(0)
            correct.append(int(np.sum(predicted == target.values[labelled])))
        _set_blend(heads, name, start[name], trained[name], 1.0)
        counts[name] = np.array(correct)
    return counts


def best_shares(correct: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Per task, the share that classifies the most rows right (ties: the more trained)."""
    shares = np.array(config.CLASSIFIER_ZERO_SHOT_BLENDS)
    return {name: float(shares[np.flatnonzero(counts == counts.max())].max()) for name, counts in correct.items()}


def cross_validated_shares(make_heads: Callable[[], MultiTaskHeads], embeddings: torch.Tensor, targets: Sequence[Targets], split: Split, settings: TrainSettings) -> dict[str, float] | None:
    """The trained share per zero-shot head, chosen on `settings.blend_folds` folds of the training and validation
    rows together (stratified as the split is): heads from `make_heads` are trained on each fold's other rows (early
    stopping on the fold) and counted on the fold. Every labelled row outside the test split votes once, so the
    choice rests on four times as many rows as the validation part alone and varies far less. None when there are
    fewer such rows than folds."""
    from sklearn.model_selection import KFold, StratifiedKFold

    pool = np.sort(np.concatenate([split.train, split.val]))
    if len(pool) < settings.blend_folds:
        return None
    folds = None
    for key in strata(targets, pool):
        if key is None:
            folds = list(KFold(settings.blend_folds, shuffle=True, random_state=settings.seed).split(pool))
        elif np.unique(key, return_counts=True)[1].min() >= settings.blend_folds:
            folds = list(StratifiedKFold(settings.blend_folds, shuffle=True, random_state=settings.seed).split(pool, key))
        if folds is not None:
            break
    total: dict[str, np.ndarray] = {}
    for number, (fit_rows, held_rows) in enumerate(folds):
        heads = make_heads()
        start = head_start(heads, [t.task.name for t in targets if not t.task.multilabel])
        fit(heads, embeddings, targets, Split(pool[fit_rows], pool[held_rows], split.test), settings)
        for name, counts in blend_correct(heads, heads, start, embeddings, targets, pool[held_rows], settings.batch_size).items():
            total[name] = total.get(name, 0) + counts
        log.info("blend fold %d of %d trained", number + 1, settings.blend_folds)
    return best_shares(total)


@torch.no_grad()
def blend_with_zero_shot(
    model: nn.Module, heads: MultiTaskHeads, start: HeadWeights, inputs: torch.Tensor, targets: Sequence[Targets], split: Split, settings: TrainSettings,
    shares: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Set each head in `start` to its blend of trained and starting weights: `shares` when given (from
    `cross_validated_shares`), else the share that classifies the validation rows best. Returns the shares kept."""
    chosen = dict(shares) if shares is not None else best_shares(blend_correct(model, heads, start, inputs, targets, split.val, settings.batch_size))
    for name, share in chosen.items():
        _set_blend(heads, name, start[name], head_start(heads, [name])[name], share)
        log.info("task %s: kept %.0f%% of the trained head", name, 100 * share)
    return chosen


def _set_blend(heads: MultiTaskHeads, name: str, start: dict[str, torch.Tensor], trained: dict[str, torch.Tensor], share: float) -> None:
    with torch.no_grad():
        for key, weight in _head_weights(heads, name).items():
            weight.copy_(share * trained[key].to(weight.device) + (1 - share) * start[key].to(weight.device))


def _head_weights(heads: MultiTaskHeads, name: str) -> dict[str, torch.Tensor]:
    weights = {"head.weight": heads.heads[name].weight, "head.bias": heads.heads[name].bias}
    if name in heads.direct:
        weights["direct.weight"] = heads.direct[name].weight
    return weights
