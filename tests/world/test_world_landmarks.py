"""The mini face detector: output shapes and units, negatives, save/reload, a smoke run."""

from __future__ import annotations

import json

import numpy as np
import torch

from infinite_id.world.models.landmarks import LandmarkDetector, LandmarkDetectorConfig
from infinite_id.world.scene.dataset import sample_example
from infinite_id.world.trainers.train_landmarks import (
    LandmarkTrainingConfig,
    face_free_scene,
    train_landmark_detector,
    training_batch,
)

TINY = LandmarkDetectorConfig(channels=(8, 16), grid=2)


def test_detect_reports_pixels_and_a_probability(tmp_path):
    torch.manual_seed(0)
    model = LandmarkDetector(TINY)
    images = [sample_example(1, np.random.default_rng(0)).image, face_free_scene(np.random.default_rng(1))]
    found = model.detect(images)
    assert [f.landmarks.shape for f in found] == [(5, 2), (5, 2)]
    assert all(0.0 <= f.face_probability <= 1.0 for f in found)
    # An untrained head outputs about the image centre, in pixels.
    assert np.abs(found[0].landmarks.mean(axis=0) - 31.5).max() < 16
    big = model.detect([images[0].resize((128, 128))])[0]
    assert np.abs(big.landmarks.mean(axis=0) - 63.5).max() < 32
    model.save_pretrained(tmp_path)
    again = LandmarkDetector.from_pretrained(tmp_path).detect(images)
    np.testing.assert_allclose(again[0].landmarks, found[0].landmarks, atol=1e-5)


def test_batches_hold_faces_and_negatives_with_targets():
    config = LandmarkTrainingConfig(batch_size=20, negative_fraction=0.5)
    pixels, targets, is_face = training_batch(config, 0)
    assert pixels.shape == (20, 3, 64, 64) and targets.shape == (20, 5, 2)
    assert 0 < is_face.sum() < 20
    faces = targets[is_face.bool()]
    assert (faces > 0.1).all() and (faces < 0.9).all()
    assert (targets[~is_face.bool()] == 0).all()
    # Target fractions map back to the renderer's landmarks.
    torch.testing.assert_close(training_batch(config, 0)[1], targets)


def test_smoke_training(tmp_path):
    config = LandmarkTrainingConfig(steps=2, batch_size=8, eval_images=8, detector=TINY)
    metrics = train_landmark_detector(tmp_path, config, progress=False)
    assert metrics["mean_error_px"] > 0 and 0 <= metrics["face_recall"] <= 1
    assert json.loads((tmp_path / "metrics.json").read_text())["metrics"] == metrics
    assert LandmarkDetector.from_pretrained(tmp_path).config == TINY


def test_negatives_include_plain_pictures():
    from infinite_id.world.trainers.train_landmarks import face_free_image, plain_image

    flat_or_smooth = [np.asarray(plain_image(np.random.default_rng(i)), dtype=np.float32) for i in range(12)]
    for pixels in flat_or_smooth:  # nothing sharp in them: neighbouring pixels differ little
        assert pixels.shape == (64, 64, 3) and np.abs(np.diff(pixels, axis=1)).max() < 40
    always_plain = np.asarray(face_free_image(np.random.default_rng(0), plain_fraction=1.0))
    assert always_plain.shape == (64, 64, 3)
