"""The retrain-everything command: stages in order, skipping finished ones, a summary of metrics."""

from __future__ import annotations

import json

import pytest

from infinite_id.world import retrain as retrain_module
from infinite_id.world.trainers.latent_cache import LatentCacheConfig
from infinite_id.world.trainers.retrain import STAGES, quick_config, retrain


def test_quick_configs_keep_the_recipe_but_shrink_it():
    for _, config in STAGES.values():
        quick = quick_config(config)
        if isinstance(config, LatentCacheConfig):  # not a training stage: a few photos instead of steps
            assert quick.size <= 8 and quick.seed == config.seed
            continue
        assert quick.steps == 2 and quick.batch_size <= 8 and quick.seed == config.seed
    assert STAGES["face_encoder"][1].seed != STAGES["face_encoder_eval"][1].seed


def test_retrain_runs_skips_and_summarises(tmp_path, monkeypatch):
    summary = retrain(tmp_path, only=["face_encoder", "attributes"], quick=True, progress=False)
    assert set(summary) == {"face_encoder", "attributes"}
    assert (tmp_path / "face_encoder" / "model.safetensors").is_file()
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["face_encoder"]["rank1"] == summary["face_encoder"]["rank1"]

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished stage was retrained")

    monkeypatch.setitem(retrain_module.STAGES, "face_encoder", (must_not_run, STAGES["face_encoder"][1]))
    again = retrain(tmp_path, only=["face_encoder"], quick=True, progress=False)
    assert again["face_encoder"]["rank1"] == summary["face_encoder"]["rank1"]
    assert "attributes" in again  # earlier stages stay in the summary


def test_unknown_stage_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown stages"):
        retrain(tmp_path, only=["unet9000"])


def test_retraining_from_scratch_gives_the_same_weights(tmp_path, world_quick_weights):
    """Fixed seeds, batches that are a function of the step: a second run reproduces the first bit for bit."""
    stages = ["face_encoder", "attributes", "landmarks", "clip"]
    retrain(tmp_path, only=stages, quick=True, progress=False)
    for stage in stages:
        first = (world_quick_weights / stage / "model.safetensors").read_bytes()
        assert (tmp_path / stage / "model.safetensors").read_bytes() == first, stage
