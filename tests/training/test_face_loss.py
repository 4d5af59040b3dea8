"""The face-region loss weight (``train.face_loss_weight``): face boxes from train-prepare through the cache, the
shards and the training crop to a per-latent-cell weight, and the errors when the data has no boxes."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from boxed_data import TEST_ENCODER, write_boxed_dataset
from PIL import Image

from infinite_id.training.config import ConfigError
from infinite_id.training.data import IdentityPairDataset, TrainCache, _fit_square, box_in_crop
from infinite_id.training.losses import box_coverage, face_weighted_mse
from infinite_id.training.preprocess import prepare_cache


@pytest.fixture(scope="module")
def processor():
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32)


# ---------------------------------------------------------------- the pure functions


def test_box_coverage_is_the_exact_area_overlap():
    boxes = torch.tensor(
        [[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [0.125, 0.25, 0.375, 0.5], [0.1, 0.1, 0.15, 0.2]]
    )
    cover = box_coverage(boxes, 4, 4)
    assert cover.shape == (4, 1, 4, 4)
    assert torch.equal(cover[0], torch.ones(1, 4, 4)) and torch.equal(cover[1], torch.zeros(1, 4, 4))
    expected = torch.zeros(4, 4)
    expected[1, 0], expected[1, 1] = 0.5, 0.5  # x from 0.125 to 0.375 halves columns 0 and 1 of row 1
    assert torch.allclose(cover[2, 0], expected)
    # A box smaller than one cell still has its area: 0.05 x 0.1 of the image = 0.08 of one cell of 1/16.
    assert cover[3].sum().item() == pytest.approx(0.05 * 0.1 * 16, rel=1e-5)
    assert cover[3, 0, 0, 0].item() == pytest.approx(0.08, rel=1e-5)


def test_face_weighted_mse_reduces_to_the_plain_loss_and_weights_the_face():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    boxes = torch.tensor([[0.25, 0.25, 0.75, 0.75], [0.0, 0.0, 0.0, 0.0]])
    plain = F.mse_loss(pred, target)
    assert torch.equal(face_weighted_mse(pred, target, boxes, 0.0), plain)
    assert torch.equal(face_weighted_mse(pred, target, None, 3.0), plain)
    whole = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 2)
    assert torch.allclose(face_weighted_mse(pred, target, whole, 3.0), plain)  # a uniform weight changes nothing

    # Error only on the face: weight 4 on a quarter of the cells -> (4 * e / 4) / ((4 + 3 * 1) / 4) of its MSE.
    error_on_face = torch.zeros(1, 4, 8, 8)
    error_on_face[..., 2:6, 2:6] = 1.0
    face = torch.tensor([[0.25, 0.25, 0.75, 0.75]])
    weighted = face_weighted_mse(error_on_face, torch.zeros_like(error_on_face), face, 3.0)
    assert weighted.item() == pytest.approx((4 * 16 / 64) / ((4 * 16 + 48) / 64))
    assert weighted > F.mse_loss(error_on_face, torch.zeros_like(error_on_face))


@pytest.mark.parametrize("center_crop", [True, False])
@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("size", [(80, 40), (40, 72), (50, 50)])
def test_box_in_crop_follows_the_resize_crop_and_flip(size, flip, center_crop):
    """The box, carried through the transform's geometry, lands where the drawn rectangle does."""
    w, h = size
    x0, y0, x1, y1 = int(0.3 * w), int(0.2 * h), int(0.6 * w), int(0.7 * h)
    mask = np.zeros((h, w), np.uint8)
    mask[y0:y1, x0:x1] = 255
    rng = random.Random(3)
    crop, top_left = _fit_square(Image.fromarray(mask).convert("RGB"), 32, center_crop, rng)
    if flip:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    ys, xs = np.nonzero(np.asarray(crop)[..., 0] > 127)
    box = box_in_crop([x0 / w, y0 / h, x1 / w, y1 / h], (w, h), 32, top_left, flip) * 32
    drawn = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
    assert torch.allclose(box, drawn, atol=1.01), (box, drawn)


def test_box_in_crop_without_a_box_or_cropped_away_is_empty():
    assert torch.equal(box_in_crop(None, (40, 40), 32, (0, 0), False), torch.zeros(4))
    # A face in the left tenth of a wide photo, centre-cropped away.
    assert torch.equal(box_in_crop([0.0, 0.4, 0.1, 0.6], (100, 25), 32, (0, 48), False), torch.zeros(4))


# ---------------------------------------------------------------- data


def test_manifest_face_boxes_reach_the_cache_the_items_and_the_shards(boxed_cache, processor, tmp_path):
    from infinite_id.training.shards import ShardIndex, StreamingPairDataset, read_shard, write_shards

    cache = TrainCache.load(boxed_cache)
    assert cache.info["version"] == 2
    first = cache.entries[0]
    assert first.face_box == pytest.approx([8 / 48, 6 / 40, 24 / 48, 26 / 40], abs=1e-6)
    dataset = IdentityPairDataset(cache, processor, "identity-enhanced", 32, seed=0)
    assert dataset.stats()["photos_with_face_box"] == 12
    item = dataset[(0, 0)]
    # 48 x 40 -> 38 x 32, centre crop from x = 3: the box in crop fractions.
    expected = torch.tensor([(8 * 38 / 48 - 3) / 32, 6 / 40, (24 * 38 / 48 - 3) / 32, 26 / 40])
    assert torch.allclose(item["face_box"], expected, atol=1e-5)

    write_shards(boxed_cache, tmp_path / "shards", shard_size=100)
    index = ShardIndex.load(tmp_path / "shards")
    assert index.info["photos_with_face_box"] == 12
    metas = [json.loads(s["json"]) for s in read_shard(index.path(index.shards[0]))]
    assert all(m["face_box"] == cache.entries[m["index"]].face_box for m in metas)
    stream = StreamingPairDataset(index, processor, "identity-enhanced", 32, seed=0, batch_size=2)
    assert stream.stats()["photos_with_face_box"] == 12
    pair = next(iter(stream.slot_stream(0, stream.plan()[0])))
    decoded = stream.decode(pair)
    target = next(e for e in cache.entries if f"{e.index:09d}" == pair.target.key)
    assert torch.allclose(decoded["face_box"], box_in_crop(target.face_box, (48, 40), 32, (0, 3), False))


def test_a_bad_manifest_face_box_skips_that_photo(tmp_path):
    manifest = write_boxed_dataset(tmp_path / "data", identities=2, photos=2)
    lines = manifest.read_text().splitlines()
    bad = json.loads(lines[0])
    bad["face_box"] = [20, 5, 10, 30]  # x0 > x1
    lines[0] = json.dumps(bad)
    manifest.write_text("\n".join(lines) + "\n")
    report = prepare_cache(manifest, tmp_path / "cache", face_encoder=TEST_ENCODER)
    assert report.kept == 3 and report.reasons() == {"bad entry": 1}
    assert "face_box" in report.skipped[0]["error"]


def test_photos_without_a_box_have_an_empty_one(identity_cache, processor):
    cache = TrainCache.load(identity_cache)
    assert all(e.face_box is None for e in cache.entries)
    dataset = IdentityPairDataset(cache, processor, "identity-enhanced", 32, seed=0)
    assert dataset.stats()["photos_with_face_box"] == 0
    assert torch.equal(dataset[(0, 0)]["face_box"], torch.zeros(4))


# ---------------------------------------------------------------- training


def test_face_loss_weight_without_boxes_stops_before_any_model_loads(make_config, monkeypatch):
    from infinite_id.training import trainer

    monkeypatch.setattr(trainer, "load_components", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(ConfigError, match="face_loss_weight=2.0 needs face boxes.*train-prepare"):
        trainer.train(make_config(train={"face_loss_weight": 2.0}))
    with pytest.raises(ConfigError, match="face_loss_weight must be >= 0"):
        trainer.train(make_config(train={"face_loss_weight": -1.0}))


def test_face_loss_weight_trains_and_weights_the_face(make_config, boxed_cache):
    """A run with the weight trains; for the same batch and draws its loss is the weighted one, and weight 0
    is the paper's plain MSE."""
    from infinite_id.training.adapter_model import AdapterTrainingModel, load_components
    from infinite_id.training.data import collate_pairs
    from infinite_id.training.trainer import _Conditioning, diffusion_loss, train

    cfg = make_config(data={"cache": str(boxed_cache)}, train={"face_loss_weight": 3.0, "max_steps": 2})
    result = train(cfg)
    assert result.global_step == 2 and all(np.isfinite(result.losses))

    comps = load_components(cfg, TEST_ENCODER, torch.float32)
    cache = TrainCache.load(boxed_cache)
    dataset = IdentityPairDataset(cache, comps.pipe.feature_extractor, "identity-enhanced", 32, seed=0)
    model = AdapterTrainingModel(comps.pipe.unet, comps.projection, comps.pipe.image_encoder)
    cond = _Conditioning(comps, cfg, torch.device("cpu"))
    batch = collate_pairs([dataset[(0, i)] for i in range(4)])
    losses = {}
    for weight in (0.0, 3.0):
        cfg.train.face_loss_weight = weight
        with torch.no_grad():
            losses[weight] = float(diffusion_loss(model, comps, cond, batch, torch.Generator().manual_seed(0), cfg))
    plain_batch = {k: v for k, v in batch.items() if k != "face_box"}
    with torch.no_grad():
        no_boxes = float(diffusion_loss(model, comps, cond, plain_batch, torch.Generator().manual_seed(0), cfg))
    assert no_boxes == pytest.approx(losses[0.0])  # weight 0 == no boxes == the plain MSE
    assert losses[3.0] != pytest.approx(losses[0.0], rel=1e-4)
