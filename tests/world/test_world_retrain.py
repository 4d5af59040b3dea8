"""The retrain-everything command: stages in order, skipping finished ones, a summary of metrics."""

from __future__ import annotations

import dataclasses
import json

import pytest

from infinite_id.world import stages as stages_module
from infinite_id.world.stages import STAGE_TABLE, resolve
from infinite_id.world.trainers.latent_cache import LatentCacheConfig
from infinite_id.world.trainers.retrain import quick_config, retrain


def test_the_stage_table_names_real_trainers_and_configs_and_runs_every_stage_after_its_inputs():
    seen: list[str] = []
    for name, stage in STAGE_TABLE.items():
        assert stage.name == name and callable(stage.load_trainer())
        assert dataclasses.is_dataclass(stage.training_config())
        assert all(needed in seen for needed in stage.inputs), name
        seen.append(name)
    assert resolve("models.weights:STAGE_FILES") == {n: s.files for n, s in STAGE_TABLE.items() if s.files}


def test_quick_configs_keep_the_recipe_but_shrink_it():
    for stage in STAGE_TABLE.values():
        config = stage.training_config()
        quick = quick_config(config)
        if isinstance(config, LatentCacheConfig):  # not a training stage: a few photos instead of steps
            assert quick.size <= 8 and quick.seed == config.seed
            continue
        assert quick.steps == 2 and quick.batch_size <= 8 and quick.seed == config.seed
    assert (
        STAGE_TABLE["face_encoder"].training_config().seed != STAGE_TABLE["face_encoder_eval"].training_config().seed
    )


def test_retrain_runs_skips_and_summarises(tmp_path, monkeypatch):
    summary = retrain(tmp_path, only=["face_encoder", "attributes"], quick=True, progress=False)
    assert set(summary) == {"face_encoder", "attributes"}
    assert (tmp_path / "face_encoder" / "model.safetensors").is_file()
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["face_encoder"]["rank1"] == summary["face_encoder"]["rank1"]

    stage = dataclasses.replace(STAGE_TABLE["face_encoder"], trainer="no_such_module:must_not_run")
    monkeypatch.setitem(stages_module.STAGE_TABLE, "face_encoder", stage)
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
