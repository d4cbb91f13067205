"""A classifier trained on a real store (tiny CLIP, generated photos, a labels file): the model-repo folder, its
card, loading it, refusing another CLIP's store, predicting without re-encoding, fine-tuning, and pushing offline."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from clip_search.classifier import Classifier
from clip_search.classifier.card import validate_card
from clip_search.classifier.pipeline import train_classifier
from clip_search.classifier.training import TrainSettings
from clip_search.errors import ClipSearchError, StoreError
from clip_search.store import EmbeddingStore

QUICK = TrainSettings(max_epochs=20, patience=20, batch_size=8, val_fraction=0.25, test_fraction=0.25)


@pytest.fixture(scope="module")
def trained(folder_store: Path, folder_store_labels: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A three-task classifier (multi-class, binary, multi-label) trained heads-only on the tiny store."""
    labels = folder_store_labels
    out = tmp_path_factory.mktemp("classifier") / "clf"
    train_classifier(folder_store, ["colour:colour", "shape:shape", "tags:tags"], out, settings=QUICK, labels_file=labels)
    return out, labels


def test_the_folder_is_a_model_repo_with_a_valid_card(trained: tuple[Path, Path]) -> None:
    out, _ = trained
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "README.md", "metrics.json", "split.json"} <= names
    assert {f"{kind}-{task}.png" for kind in ("confusion", "reliability") for task in ("colour", "shape", "tags")} <= names
    config = json.loads((out / "config.json").read_text())
    assert config["label_names"] == {"colour": ["blue", "green", "red", "yellow"], "shape": ["circle", "square"], "tags": ["round", "warm"]}
    assert [t["kind"] for t in config["tasks"]] == ["multiclass", "binary", "multilabel"]
    assert config["clip_model"]["id"] and config["dim"] == 16
    card = validate_card(out / "README.md")
    assert card.data.library_name == "clip-search"
    metrics = json.loads((out / "metrics.json").read_text())
    results = {(r.task_name, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results[("colour", "accuracy")] == round(metrics["tasks"]["colour"]["classifier"]["accuracy"], 4)
    assert ("shape", "roc_auc") in results and ("tags", "roc_auc") in results
    assert metrics["tasks"]["colour"]["zero_shot"] is not None and metrics["tasks"]["tags"]["zero_shot"] is None


def test_the_card_round_trips_and_a_broken_one_is_refused(trained: tuple[Path, Path], tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    out, _ = trained
    card = validate_card(out / "README.md")
    card.save(tmp_path / "README.md")
    again = validate_card(tmp_path / "README.md")
    assert again.data.eval_results == card.data.eval_results and again.text == card.text
    assert isinstance(again, ModelCard)
    broken = (out / "README.md").read_text().replace("    metrics:\n", "    metricz:\n", 1)
    (tmp_path / "broken.md").write_text(broken)
    with pytest.raises(ClipSearchError, match="not valid"):
        validate_card(tmp_path / "broken.md")


def test_loading_predicts_from_stored_embeddings_as_training_measured(trained: tuple[Path, Path], folder_store: Path) -> None:
    from clip_search.classifier.evaluation import evaluate_classifier

    out, labels = trained
    classifier = Classifier.from_pretrained(out)
    store = EmbeddingStore.open(folder_store)
    probabilities = classifier.predict_store(store)
    assert probabilities["colour"].shape == (16, 4) and np.allclose(probabilities["colour"].sum(1), 1, atol=1e-5)
    assert probabilities["tags"].shape == (16, 2) and ((probabilities["tags"] >= 0) & (probabilities["tags"] <= 1)).all()
    evaluation = evaluate_classifier(out, folder_store, labels_file=labels)
    recorded = json.loads((out / "metrics.json").read_text())
    assert evaluation.rows == "test split"
    for e in evaluation.tasks:
        assert e.model.accuracy == pytest.approx(recorded["tasks"][e.task.name]["classifier"]["accuracy"], abs=1e-6)
    predictions = classifier.predictions(probabilities, 0)
    assert [p.task for p in predictions] == ["colour", "shape", "tags"] and len(predictions[0].labels) == 1


def test_a_store_made_by_another_clip_is_refused_in_one_line(trained: tuple[Path, Path], tmp_path: Path, photo_dir: Path) -> None:
    from clip_search.precompute import precompute
    from clip_search.scratch import new_clip, save_clip, train_clip_tokenizer

    model, processor = new_clip(train_clip_tokenizer(["a red circle", "a blue square"] * 4, vocab_size=300), image_size=32, projection_dim=16, seed=1)
    other = save_clip(model, processor, tmp_path / "other-clip")
    precompute(str(photo_dir), tmp_path / "other-store", model=str(other), text_model=None, batch_size=4, num_workers=0, progress=False)
    classifier = Classifier.from_pretrained(trained[0])
    with pytest.raises(StoreError, match="was trained on embeddings of .* but the store at .* was made by") as caught:
        classifier.predict_store(EmbeddingStore.open(tmp_path / "other-store"))
    assert "\n" not in str(caught.value)


def test_fine_tuning_the_tower_saves_it_and_predicts_by_re_encoding(folder_store: Path, trained: tuple[Path, Path], tmp_path: Path) -> None:
    from clip_search.classifier.evaluation import evaluate_classifier

    _, labels = trained
    out = tmp_path / "ft"
    report = train_classifier(folder_store, ["colour:colour"], out, settings=replace(QUICK, depth="finetune", freeze="all-but-last-1", layer_lr_decay=0.8, max_epochs=3), labels_file=labels)
    assert "vision layer 1" in report.trainable.trainable and "vision layer 0" in report.trainable.frozen
    config = json.loads((out / "config.json").read_text())
    assert config["backbone_trained"] and config["freeze"] == "all-but-last-1"
    classifier = Classifier.from_pretrained(out)
    assert any(k.startswith("vision_model.encoder.layers.1.") for k in classifier.weights)
    again = evaluate_classifier(out, folder_store, labels_file=labels, zero_shot=False)
    assert again.tasks[0].model.accuracy == pytest.approx(report.evaluation.tasks[0].model.accuracy)
    assert np.allclose(again.tasks[0].model.reliability["confidence"], report.evaluation.tasks[0].model.reliability["confidence"], atol=1e-4)


def test_pushing_offline_fails_in_one_line_naming_the_repo_and_keeps_the_folder(trained: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from clip_search.classifier.publish import push_folder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out, _ = trained
    with pytest.raises(ClipSearchError, match="cannot push to the hub repo someone/colours") as caught:
        push_folder(out, "someone/colours", token="hf_not_a_real_token")
    assert "\n" not in str(caught.value) and str(out) in str(caught.value)
    assert (out / "model.safetensors").is_file()


def test_a_frozen_backbone_keeps_the_blend_heads_only_chose(folder_store: Path, trained: tuple[Path, Path], tmp_path: Path) -> None:
    _, labels = trained
    quick = replace(QUICK, max_epochs=3)
    heads = train_classifier(folder_store, ["colour:colour"], tmp_path / "heads", settings=quick, labels_file=labels)
    frozen = train_classifier(folder_store, ["colour:colour"], tmp_path / "frozen", settings=replace(quick, depth="finetune", freeze="backbone"), labels_file=labels)
    assert set(heads.fit.zero_shot_blend) == {"colour"}  # chosen by cross-validation on the stored embeddings
    assert frozen.fit.zero_shot_blend == heads.fit.zero_shot_blend
