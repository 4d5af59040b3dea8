"""The attribute classifier: heads per attribute, prediction, the accuracy rule, save/reload, a smoke run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from infinite_id.world.models.attributes import (
    ATTRIBUTE_VALUES,
    AttributeClassifier,
    AttributeClassifierConfig,
    attribute_accuracy,
)
from infinite_id.world.scene.dataset import sample_example
from infinite_id.world.trainers.train_attributes import (
    AttributeTrainingConfig,
    train_attribute_classifier,
    training_batch,
)
from infinite_id.world.trainers.train_utils import CHECKPOINT_NAME

TINY = AttributeClassifierConfig(channels=(8, 16))


def test_classifier_heads_and_predictions(tmp_path):
    torch.manual_seed(0)
    model = AttributeClassifier(TINY).eval()
    images = [sample_example(i, np.random.default_rng(i)).image for i in range(3)]
    predictions = model.predict(images)
    assert len(predictions) == 3
    for prediction in predictions:
        assert set(prediction) == set(ATTRIBUTE_VALUES)
        assert all(prediction[k] in ATTRIBUTE_VALUES[k] for k in prediction)
    model.save_pretrained(tmp_path)
    assert AttributeClassifier.from_pretrained(tmp_path).predict(images) == predictions


def test_attribute_accuracy_counts_only_named_attributes():
    predicted = {
        "gender": "man",
        "style": "cartoon",
        "background": "beach",
        "clothing": "suit",
        "clothing_colour": "red",
        "accessory": "none",
    }
    assert attribute_accuracy(predicted, {"gender": "man", "style": "sketch"}) == pytest.approx(0.5)
    assert attribute_accuracy(predicted, {"background": "beach"}) == 1.0
    assert attribute_accuracy(predicted, {}) is None


def test_training_batch_labels_match_the_renders():
    config = AttributeTrainingConfig(batch_size=4)
    pixels, labels = training_batch(config, 3)
    assert pixels.shape == (4, 3, 64, 64) and pixels.min() >= -1.0 and pixels.max() <= 1.0
    again, labels_again = training_batch(config, 3)
    torch.testing.assert_close(pixels, again)
    for name, values in ATTRIBUTE_VALUES.items():
        assert labels[name].shape == (4,) and int(labels[name].max()) < len(values)
        assert labels[name].tolist() == labels_again[name].tolist()


def test_smoke_training(tmp_path):
    config = AttributeTrainingConfig(steps=2, batch_size=8, eval_images=12, classifier=TINY)
    metrics = train_attribute_classifier(tmp_path, config, progress=False)
    assert set(f"accuracy_{k}" for k in ATTRIBUTE_VALUES) <= set(metrics)
    assert 0.0 <= metrics["caption_attribute_accuracy"] <= 1.0
    assert json.loads((tmp_path / "metrics.json").read_text())["metrics"] == metrics
    assert AttributeClassifier.from_pretrained(tmp_path).config == TINY
    assert not (tmp_path / CHECKPOINT_NAME).exists()
