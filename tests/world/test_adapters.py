"""The adapter stages of retrain: rendered identities -> cache -> infinite_id.training -> a loadable adapter."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from infinite_id.world.face_backend import mini_encoder_info
from infinite_id.world.stages import STAGE_TABLE
from infinite_id.world.trainers.retrain import quick_config
from infinite_id.world.trainers.train_adapters import AdapterTrainingConfig

ADAPTERS = ["adapter_identity_enhanced", "adapter_joint"]


@pytest.fixture(scope="module")
def quick_run(world_quick_weights):
    """The session's quick retrain (tests/conftest.py) and its summary."""
    return world_quick_weights, json.loads((world_quick_weights / "metrics.json").read_text())


def test_recipe_and_quick_variant():
    for stage, mode in zip(ADAPTERS, ("identity-enhanced", "joint"), strict=True):
        config = STAGE_TABLE[stage].training_config()
        assert config.mode == mode and config.batch_size == 32 and config.steps >= 500
        quick = quick_config(config)
        assert quick.mode == mode and quick.steps == 2 and quick.num_identities == 4
    with pytest.raises(ValueError, match="two photos per identity"):
        AdapterTrainingConfig(photos_per_identity=1)
    with pytest.raises(ValueError, match="mode"):
        AdapterTrainingConfig(mode="lora")


def test_stage_writes_adapter_metrics_and_the_training_set(quick_run):
    out, summary = quick_run
    info = mini_encoder_info(out, "face_encoder")
    for stage in ADAPTERS:
        metrics = json.loads((out / stage / "metrics.json").read_text())["metrics"]
        assert (out / stage / "adapter.safetensors").is_file()
        assert metrics["steps"] == 2 and np.isfinite(metrics["final_loss"]) and metrics["samples_per_second"] > 0
        assert metrics["face_encoder"] == info.to_dict() and summary[stage]["steps"] == 2
        losses = [metrics[f"eval_loss_{k}"] for k in ("right_person", "other_person", "no_identity")]
        assert all(np.isfinite(losses)) and len(set(losses)) == 3  # the identity input reaches the UNet
        assert metrics["identity_gain"] == pytest.approx(losses[1] - losses[0])
        cache = json.loads((out / stage / "cache" / "cache.json").read_text())
        assert cache["face_encoder"] == info.to_dict() and cache["photos"] == 8 and cache["identities"] == 4
    # the precomputed embedding is the mini encoder's on the true-landmark crop of the photo
    from infinite_id.world.models.face_model import MiniFaceEncoder, align_world_face, crops_to_tensor

    data = out / ADAPTERS[0] / "data"
    line = json.loads((data / "train.jsonl").read_text().splitlines()[3])
    labels = {r["image"]: r for r in map(json.loads, (data / "photos" / "manifest.jsonl").read_text().splitlines())}
    record = labels[line["image"].removeprefix("photos/")]
    image = Image.open(data / line["image"]).convert("RGB")
    encoder = MiniFaceEncoder.from_pretrained(out / "face_encoder")
    with torch.no_grad():
        expected = encoder(crops_to_tensor([align_world_face(image, record["labels"]["landmarks"], 40)]))[0].numpy()
    np.testing.assert_allclose(np.load(data / line["embedding"]), expected, atol=1e-5)
    assert line["caption"] == record["caption"] and Image.open(data / line["crop"]).size == (64, 64)
    # the renderer's face box reaches the cache (as fractions of the 64 px photo), for train.face_loss_weight
    assert line["face_box"] == record["labels"]["face_box"]
    entry = json.loads((out / ADAPTERS[0] / "cache" / "entries.jsonl").read_text().splitlines()[3])
    assert entry["face_box"] == pytest.approx([v / 64 for v in record["labels"]["face_box"]], abs=1e-6)


def _identity(out, stage, index):
    data = out / stage / "data"
    line = json.loads((data / "train.jsonl").read_text().splitlines()[index])
    return Image.open(data / line["crop"]).convert("RGB"), np.load(data / line["embedding"])


def test_adapter_loads_in_the_pipeline_and_drives_the_identity_stream(quick_run):
    from infinite_id.pipelines import InfiniteIDStableDiffusionPipeline

    out, _ = quick_run
    pipe = InfiniteIDStableDiffusionPipeline.from_pretrained(out / "base", safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    for stage, mode in zip(ADAPTERS, ("identity-enhanced", "joint"), strict=True):
        metadata = pipe.load_adapter(out / stage / "adapter.safetensors")
        assert metadata.face_encoder == mini_encoder_info(out, "face_encoder")
        assert metadata.training["mode"] == mode

        def sample(identity_index, pipe=pipe, stage=stage):
            crop, embedding = _identity(out, stage, identity_index)
            return pipe(
                "a photo of a man",
                id_images=[crop],
                face_embeds=embedding,
                num_inference_steps=2,
                guidance_scale=1.0,
                generator=torch.Generator().manual_seed(0),
                output_type="np",
            ).images

        first, again, other = sample(0), sample(0), sample(4)  # photos 0 and 4: identities 0 and 2
        assert first.shape == (1, 64, 64, 3)
        np.testing.assert_array_equal(first, again)
        assert np.abs(first - other).max() > 1e-4
