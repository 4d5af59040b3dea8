"""The mini face encoder's training: margin loss, a smoke run, resume after an interruption, face crops."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from infinite_id.world.models.face_model import (
    FaceEncoderConfig,
    MiniFaceEncoder,
    align_world_face,
    world_face_template,
)
from infinite_id.world.scene.dataset import sample_example
from infinite_id.world.trainers import train_face, train_utils
from infinite_id.world.trainers.train_face import ArcMarginHead, FaceTrainingConfig, train_face_encoder
from infinite_id.world.trainers.train_utils import CHECKPOINT_NAME

TINY = FaceEncoderConfig(input_size=24, channels=(8, 16), embedding_dim=32)


def _tiny_config(**overrides) -> FaceTrainingConfig:
    values = dict(num_identities=6, steps=4, batch_size=8, eval_identities=4, eval_photos=2, checkpoint_every=2)
    values.update(overrides)
    return FaceTrainingConfig(encoder=TINY, **values)


def test_margin_makes_the_loss_harder():
    torch.manual_seed(0)
    embeddings, labels = torch.randn(16, 8), torch.randint(0, 5, (16,))
    plain = ArcMarginHead(8, 5, margin=0.0, scale=10.0)
    strict = ArcMarginHead(8, 5, margin=0.4, scale=10.0)
    strict.weight.data.copy_(plain.weight.data)
    assert strict(embeddings, labels) > plain(embeddings, labels)
    embeddings.requires_grad_(True)
    strict(embeddings, labels).backward()
    assert torch.isfinite(embeddings.grad).all() and embeddings.grad.abs().sum() > 0


def test_aligned_crop_puts_landmarks_on_the_template():
    example = sample_example(4, np.random.default_rng(0), style_weights={"photo": 1.0})
    crop = align_world_face(example.image, example.layout.landmarks, 40)
    assert crop.size == (40, 40)
    template = world_face_template(40)
    assert template[0, 0] < template[1, 0] and template[2, 1] < template[3, 1]
    # The crop is centred on the face: its middle has the colour of the face's skin in the photo.
    skin = np.asarray(example.image, dtype=np.float32)[example.layout.face_mask].mean(axis=0) / 255
    cheeks = np.asarray(crop, dtype=np.float32)[20:26, 10:30].reshape(-1, 3).mean(axis=0) / 255
    assert np.abs(cheeks - skin).max() < 0.12


def test_smoke_training_writes_a_loadable_encoder(tmp_path):
    torch.manual_seed(0)
    metrics = train_face_encoder(tmp_path / "face", _tiny_config(), progress=False)
    assert 0.0 <= metrics["rank1"] <= 1.0
    assert -1.0 <= metrics["different_cosine"] <= 1.0
    saved = json.loads((tmp_path / "face" / train_utils.METRICS_NAME).read_text())
    assert saved["metrics"] == metrics and saved["training"]["steps"] == 4
    model = MiniFaceEncoder.from_pretrained(tmp_path / "face")
    assert model.config == TINY
    assert not (tmp_path / "face" / CHECKPOINT_NAME).exists()


def test_interrupted_training_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    real_batch = train_face.training_batch
    seen = []

    def interrupted(config, step):
        if step == 3:
            raise KeyboardInterrupt
        seen.append(step)
        return real_batch(config, step)

    monkeypatch.setattr(train_face, "training_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_face_encoder(tmp_path, _tiny_config(), progress=False)
    assert (tmp_path / CHECKPOINT_NAME).exists()
    monkeypatch.setattr(train_face, "training_batch", lambda c, s: (seen.append(s), real_batch(c, s))[1])
    train_face_encoder(tmp_path, _tiny_config(), progress=False)
    assert seen == [0, 1, 2, 2, 3]  # steps 0-1 were checkpointed; step 2 was lost and is redone
    assert (tmp_path / "model.safetensors").exists()


def test_a_lost_checkpoint_resumes_from_the_committed_snapshot(tmp_path, monkeypatch):
    """The git-ignored checkpoint may not survive to the next session; ``retrain --snapshot`` copies it to
    ``partial-checkpoint.safetensors`` (committed), and a run without the checkpoint resumes from that."""
    from infinite_id.world.trainers.retrain import snapshot_unfinished
    from infinite_id.world.trainers.train_utils import snapshot_name

    real_batch = train_face.training_batch
    seen = []

    def interrupted(config, step):
        if step == 3:
            raise KeyboardInterrupt
        return real_batch(config, step)

    stage = tmp_path / "face_encoder"
    monkeypatch.setattr(train_face, "training_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_face_encoder(stage, _tiny_config(), progress=False)
    assert snapshot_unfinished(tmp_path) == {"face_encoder": 2}
    (stage / CHECKPOINT_NAME).unlink()  # the working state is lost; the snapshot was committed
    monkeypatch.setattr(train_face, "training_batch", lambda c, s: (seen.append(s), real_batch(c, s))[1])
    train_face_encoder(stage, _tiny_config(), progress=False)
    assert seen == [2, 3]
    assert not (stage / snapshot_name(CHECKPOINT_NAME)).exists() and not (stage / CHECKPOINT_NAME).exists()
    assert snapshot_unfinished(tmp_path) == {}  # a finished stage has nothing to snapshot
