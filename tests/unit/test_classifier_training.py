"""Training a classifier's networks (clip_search.classifier.model/freezing/training): every task type on generated
data, joint multi-task training, what each freeze mode leaves untouched (bit for bit), the layer-wise rates."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from clip_search.classifier.blending import blend_with_zero_shot, cross_validated_shares, head_start
from clip_search.classifier.freezing import FreezePlan, apply_freeze
from clip_search.classifier.model import MultiTaskHeads, VisionClassifier
from clip_search.classifier.tasks import Targets, TaskSpec, detect_task, encode_targets
from clip_search.classifier.training import TrainSettings, fit, optimiser_groups, predict_logits, stratified_split
from clip_search.errors import ClipSearchError

SETTINGS = TrainSettings(hidden=32, max_epochs=60, patience=60, batch_size=32, zero_shot_init=False)


def clustered(n: int = 240, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, dict[str, list]]:
    """Unit vectors whose direction encodes three label columns: a binary, a 4-class and a multi-label one."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(9, dim))
    binary = rng.integers(0, 2, n)
    multi = rng.integers(0, 4, n)
    tags = rng.random((n, 3)) < 0.4
    x = basis[binary] + basis[2 + multi] + tags @ basis[6:9] + 0.3 * rng.normal(size=(n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    columns = {
        "binary": [("no", "yes")[b] for b in binary],
        "multi": [f"class{m}" for m in multi],
        "tags": ["|".join(t for t, on in zip(("x", "y", "z"), row) if on) or None for row in tags],
    }
    return x.astype(np.float32), columns


def prepared(columns: dict[str, list], names: list[str]):
    tasks = [detect_task(TaskSpec(n, n), columns[n]) for n in names]
    return tasks, [encode_targets(t, columns[t.name]) for t in tasks]


@pytest.mark.parametrize("name", ["binary", "multi", "tags"])
def test_each_task_type_learns_alone(name: str) -> None:
    x, columns = clustered()
    tasks, targets = prepared(columns, [name])
    split = stratified_split(targets, SETTINGS)
    model = MultiTaskHeads(x.shape[1], tasks, SETTINGS.hidden, SETTINGS.dropout)
    fit(model, torch.from_numpy(x), targets, split, SETTINGS)
    logits = predict_logits(model, torch.from_numpy(x), split.test, 64)[name]
    t = targets[0]
    keep = t.labelled[split.test]
    if tasks[0].multilabel:
        correct = ((logits[torch.as_tensor(keep)] > 0).numpy() == t.values[split.test][keep]).mean()
    else:
        correct = (logits.argmax(1).numpy() == t.values[split.test]).mean()
    assert correct >= 0.85


def test_joint_training_lowers_every_tasks_loss_and_splits_are_disjoint_and_seeded() -> None:
    x, columns = clustered()
    tasks, targets = prepared(columns, ["binary", "multi", "tags"])
    split = stratified_split(targets, SETTINGS)
    assert not (set(split.train) & set(split.val) or set(split.train) & set(split.test) or set(split.val) & set(split.test))
    again = stratified_split(targets, SETTINGS)
    assert all(np.array_equal(a, b) for a, b in zip((split.train, split.val, split.test), (again.train, again.val, again.test)))
    model = MultiTaskHeads(x.shape[1], tasks, SETTINGS.hidden, SETTINGS.dropout)
    report = fit(model, torch.from_numpy(x), targets, split, replace(SETTINGS, max_epochs=30))
    first, best = report.val_loss[0], report.val_loss[report.best_epoch]
    assert set(first) == {"binary", "multi", "tags"}
    for name in first:
        assert best[name] < 0.9 * first[name], name
        assert report.train_loss[-1][name] < report.train_loss[0][name], name


def test_early_stopping_keeps_the_best_validation_epoch() -> None:
    x, columns = clustered(n=120)
    tasks, targets = prepared(columns, ["multi"])
    split = stratified_split(targets, SETTINGS)
    model = MultiTaskHeads(x.shape[1], tasks, 64, 0.0)
    report = fit(model, torch.from_numpy(x), targets, split, replace(SETTINGS, hidden=64, lr=0.05, max_epochs=300, patience=5))
    assert report.stopped_early and len(report.train_loss) == report.best_epoch + 1 + 5


def vision_classifier(tiny_clip: Path) -> VisionClassifier:
    from transformers import CLIPModel

    clip = CLIPModel.from_pretrained(str(tiny_clip))
    tasks = [detect_task(TaskSpec("colour", "c"), ["red", "blue"]), detect_task(TaskSpec("shape", "s"), ["circle", "square", "star"])]
    return VisionClassifier(clip.vision_model, clip.visual_projection, MultiTaskHeads(clip.config.projection_dim, tasks, 8, 0.0))


def train_briefly(model: VisionClassifier, settings: TrainSettings) -> None:
    """A few epochs on random pixels with random labels: enough for every trainable parameter to move."""
    rng = np.random.default_rng(0)
    n = 40
    pixels = torch.from_numpy(rng.normal(size=(n, 3, 32, 32)).astype(np.float32))
    columns = {"colour": list(rng.choice(["red", "blue"], n)), "shape": list(rng.choice(["circle", "square", "star"], n))}
    tasks = [detect_task(TaskSpec(k, k), v) for k, v in columns.items()]
    targets = [encode_targets(t, columns[t.name]) for t in tasks]
    fit(model, pixels, targets, stratified_split(targets, settings), replace(settings, max_epochs=3, patience=3, batch_size=16))


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    ("freeze", "unchanged", "changed"),
    [
        ("backbone", ("vision_model.", "visual_projection."), ("classifier.trunk.", "classifier.heads.colour.", "classifier.heads.shape.")),
        ("all-but-last-1", ("vision_model.embeddings.", "vision_model.pre_layrnorm.", "vision_model.encoder.layers.0."), ("vision_model.encoder.layers.1.", "vision_model.post_layernorm.", "visual_projection.", "classifier.")),
        ("head:shape", ("vision_model.", "visual_projection.", "classifier.trunk.", "classifier.heads.colour.", "classifier.direct.colour."), ("classifier.heads.shape.", "classifier.direct.shape.")),
        ("none", (), ("vision_model.embeddings.", "vision_model.encoder.layers.0.", "visual_projection.", "classifier.")),
    ],
)
def test_freezing_leaves_frozen_parameters_bit_identical(tiny_clip: Path, freeze: str, unchanged: tuple[str, ...], changed: tuple[str, ...]) -> None:
    model = vision_classifier(tiny_clip)
    summary = apply_freeze(model, FreezePlan.parse(freeze))
    before = snapshot(model)
    train_briefly(model, replace(SETTINGS, freeze=freeze, depth="finetune", backbone_lr=1e-2, lr=1e-2))
    after = snapshot(model)
    for name in before:
        if name.startswith(unchanged):
            assert torch.equal(before[name], after[name]), f"{name} changed under --freeze {freeze}"
    for prefix in changed:
        moved = [n for n in before if n.startswith(prefix) and not torch.equal(before[n], after[n])]
        assert moved, f"nothing under {prefix} trained under --freeze {freeze}"
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert summary.trainable_params == trainable and summary.total_params == sum(p.numel() for p in model.parameters())


def test_freeze_modes_are_checked(tiny_clip: Path) -> None:
    model = vision_classifier(tiny_clip)
    with pytest.raises(ClipSearchError, match="no task 'size'"):
        apply_freeze(model, FreezePlan.parse("head:size"))
    with pytest.raises(ClipSearchError, match="only 2 layers"):
        apply_freeze(model, FreezePlan.parse("all-but-last-3"))
    with pytest.raises(ClipSearchError, match="use depth finetune"):
        apply_freeze(model.classifier, FreezePlan.parse("all-but-last-1"))
    with pytest.raises(ClipSearchError, match="cannot read"):
        FreezePlan.parse("everything")


def test_layer_wise_decay_gives_each_group_the_formulas_rate(tiny_clip: Path) -> None:
    model = vision_classifier(tiny_clip)
    apply_freeze(model, FreezePlan.parse("none"))
    lr, base, decay, layers = 3e-3, 1e-3, 0.5, 2
    settings = replace(SETTINGS, lr=lr, backbone_lr=base, layer_lr_decay=decay)
    optimizer = torch.optim.AdamW(optimiser_groups(model, settings))
    expected = {
        "heads": lr,
        "projection": base,
        "body": base * decay,  # final norms, with the top block
        "layer.1": base * decay ** (layers - 1),
        "layer.0": base * decay ** (layers - 0),
        "embeddings": base * decay ** (layers + 1),
    }
    rates = {}
    for group in optimizer.param_groups:
        rates.setdefault(group["name"], set()).add(group["lr"])
    assert rates == {name: {rate} for name, rate in expected.items()}
    grouped = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters()) and len(set(grouped)) == len(grouped)
    layer0 = next(g for g in optimizer.param_groups if g["name"] == "layer.0")
    assert any(p is model.vision_model.encoder.layers[0].mlp.fc1.weight for p in layer0["params"])
    no_decay = [g for g in optimizer.param_groups if g["weight_decay"] == 0.0]
    assert all(p.ndim == 1 for g in no_decay for p in g["params"])
    undecayed = optimiser_groups(model, replace(settings, layer_lr_decay=None))
    assert {g["lr"] for g in undecayed if g["name"] != "heads"} == {base}


def test_a_head_that_training_made_worse_falls_back_to_zero_shot() -> None:
    x, columns = clustered()
    tasks, targets = prepared(columns, ["multi"])
    settings = replace(SETTINGS, zero_shot_init=True)
    split = stratified_split(targets, settings)
    label_vectors = np.stack([x[targets[0].values == k].mean(axis=0) for k in range(4)])  # what zero-shot knows
    label_vectors /= np.linalg.norm(label_vectors, axis=1, keepdims=True)
    model = MultiTaskHeads(x.shape[1], tasks, settings.hidden, settings.dropout)
    model.init_zero_shot("multi", torch.from_numpy(label_vectors), 20.0)
    start = head_start(model, ["multi"])
    zero_shot = predict_logits(model, torch.from_numpy(x), split.test, 64)["multi"].argmax(1)
    with torch.no_grad():  # as if training had wrecked the head: its weights shuffled between the labels
        model.direct["multi"].weight.copy_(model.direct["multi"].weight[[1, 2, 3, 0]])
    blends = blend_with_zero_shot(model, model, start, torch.from_numpy(x), targets, split, settings)
    assert blends["multi"] <= 0.25  # a little of the wrecked head changes no prediction, so ties may keep it
    assert (predict_logits(model, torch.from_numpy(x), split.test, 64)["multi"].argmax(1) == zero_shot).float().mean() >= 0.95


def test_a_head_that_training_improved_stays_trained() -> None:
    x, columns = clustered()
    tasks, targets = prepared(columns, ["multi"])
    settings = replace(SETTINGS, zero_shot_init=True)
    split = stratified_split(targets, settings)
    model = MultiTaskHeads(x.shape[1], tasks, settings.hidden, settings.dropout)
    model.init_zero_shot("multi", torch.from_numpy(np.eye(4, x.shape[1], dtype=np.float32)), 20.0)  # knows nothing
    start = head_start(model, ["multi"])
    fit(model, torch.from_numpy(x), targets, split, settings)
    assert blend_with_zero_shot(model, model, start, torch.from_numpy(x), targets, split, settings)["multi"] >= 0.75


def test_cross_validated_blend_learns_from_training_and_validation_rows_only() -> None:
    x, columns = clustered()
    tasks, targets = prepared(columns, ["multi"])
    settings = replace(SETTINGS, zero_shot_init=True, blend_folds=4)
    split = stratified_split(targets, settings)

    def heads_knowing_nothing() -> MultiTaskHeads:
        torch.manual_seed(0)
        model = MultiTaskHeads(x.shape[1], tasks, settings.hidden, settings.dropout)
        model.init_zero_shot("multi", torch.from_numpy(np.eye(4, x.shape[1], dtype=np.float32)), 20.0)
        return model

    shares = cross_validated_shares(heads_knowing_nothing, torch.from_numpy(x), targets, split, settings)
    assert shares["multi"] >= 0.75
    values = targets[0].values.copy()
    values[split.test] = np.roll(values[split.test], 1)  # test labels scrambled: the choice must not move
    scrambled = [Targets(targets[0].task, values, targets[0].labelled)]
    assert cross_validated_shares(heads_knowing_nothing, torch.from_numpy(x), scrambled, split, settings) == shares


def test_zero_shot_start_without_a_trunk() -> None:
    x, columns = clustered()
    tasks, _ = prepared(columns, ["multi"])
    labels = torch.nn.functional.normalize(torch.randn(4, x.shape[1]), dim=1)
    model = MultiTaskHeads(x.shape[1], tasks, hidden=0)
    model.init_zero_shot("multi", labels, 20.0)
    logits = predict_logits(model, torch.from_numpy(x), np.arange(len(x)), 64)["multi"]
    assert torch.allclose(logits, 20.0 * torch.from_numpy(x) @ labels.T, atol=1e-5)
