"""The mini CLIP's training: preprocessing equals the saved processor, a smoke run, export of the towers."""

from __future__ import annotations

import json

import numpy as np
import torch
from transformers import AutoImageProcessor, CLIPModel, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

from infinite_id.world.scene.dataset import sample_example
from infinite_id.world.trainers import train_clip, train_utils
from infinite_id.world.trainers.train_clip import (
    ClipTrainingConfig,
    clip_image_processor,
    export_towers,
    image_features,
    images_to_pixels,
    text_features,
    tokenize,
)
from infinite_id.world.trainers.train_clip import (
    train_clip as run_training,
)
from infinite_id.world.trainers.train_utils import CHECKPOINT_NAME


def test_fast_preprocessing_matches_the_saved_processor(tmp_path):
    images = [sample_example(i, np.random.default_rng(i)).image for i in range(3)]
    clip_image_processor().save_pretrained(tmp_path)
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    expected = processor(images, return_tensors="pt").pixel_values
    torch.testing.assert_close(images_to_pixels(images), expected, atol=2e-2, rtol=0)


def test_training_batches_are_a_function_of_the_step():
    config = ClipTrainingConfig(batch_size=4)
    a, b = train_clip.training_batch(config, 7), train_clip.training_batch(config, 7)
    assert [t for t in a[1]] == [t for t in b[1]]
    assert [im.tobytes() for im in a[0]] == [im.tobytes() for im in b[0]]
    assert a[1] != train_clip.training_batch(config, 8)[1]


def test_smoke_training_and_export(tmp_path):
    torch.manual_seed(0)
    config = ClipTrainingConfig(steps=2, batch_size=8, eval_images=20)
    metrics = run_training(tmp_path / "clip", config, progress=False)
    for key in ("zero_shot_style", "zero_shot_background", "zero_shot_clothing_colour", "retrieval_top1_in_100"):
        assert 0.0 <= metrics[key] <= 1.0
    assert json.loads((tmp_path / "clip" / train_utils.METRICS_NAME).read_text())["metrics"] == metrics
    assert not (tmp_path / "clip" / CHECKPOINT_NAME).exists()

    export_towers(tmp_path / "clip", tmp_path / "base")
    clip = CLIPModel.from_pretrained(tmp_path / "clip").eval()
    tokenizer = CLIPTokenizer.from_pretrained(tmp_path / "base" / "tokenizer")
    ids = tokenize(tokenizer, ["a photo of a man wearing a red shirt, on the beach"])
    text_encoder = CLIPTextModel.from_pretrained(tmp_path / "base" / "text_encoder").eval()
    torch.testing.assert_close(text_encoder(ids).last_hidden_state, clip.text_model(ids).last_hidden_state)
    image_encoder = CLIPVisionModelWithProjection.from_pretrained(tmp_path / "base" / "image_encoder").eval()
    pixels = images_to_pixels([sample_example(1, np.random.default_rng(0)).image])
    embeds = torch.nn.functional.normalize(image_encoder(pixel_values=pixels).image_embeds, dim=-1)
    torch.testing.assert_close(embeds, image_features(clip, pixels), atol=1e-5, rtol=1e-4)
    assert text_features(clip, ids).shape == (1, 128)


def test_twin_pairs_differ_in_one_named_attribute():
    from infinite_id.world.scene.captions import parse_prompt

    config = ClipTrainingConfig(batch_size=12, twin_fraction=0.5)
    images, texts, _ = train_clip.training_batch(config, 4)
    assert len(images) == len(texts) == 12
    for k in range(0, 6, 2):
        a, b = parse_prompt(texts[k]).named(), parse_prompt(texts[k + 1]).named()
        changed = {key for key in set(a) | set(b) if a.get(key) != b.get(key)}
        assert len(changed) == 1 and changed <= {"clothing", "clothing_colour", "accessory"}, (texts[k], texts[k + 1])
        assert images[k].tobytes() != images[k + 1].tobytes()


def test_caption_labels_name_exactly_what_the_caption_says():
    from infinite_id.world.scene.captions import HAIR_COLOUR_WORDS, PERSON_TRAITS, parse_prompt

    config = ClipTrainingConfig(batch_size=64, twin_fraction=0.0)
    _, texts, labels = train_clip.training_batch(config, 3)
    described = 0
    for text, label in zip(texts, labels, strict=True):
        read = train_clip.caption_labels(label)
        named = parse_prompt(text).named()
        for name in ("gender", "clothing", "clothing_colour", "background", "accessory", "style"):
            expected = named.get(name)
            got = read[name]
            assert (got == -1) == (expected is None), (text, name)
            if expected is not None:
                assert train_clip.CAPTION_ATTRIBUTES[name][got] == expected
        traits = set(label["mentioned"]) & set(PERSON_TRAITS)
        described += bool(traits)
        assert (read["skin_tone"] >= 0) == ("skin" in traits)
        assert (read["hair_style"] >= 0) == ("hair" in traits)
        if read["hair_colour"] >= 0:
            colour = train_clip.CAPTION_ATTRIBUTES["hair_colour"][read["hair_colour"]]
            assert any(word in text for word in HAIR_COLOUR_WORDS[colour]), text
    assert described > 0


def test_the_attribute_loss_reaches_every_token_state():
    heads = train_clip.CaptionAttributeHeads(8)
    states = torch.randn(3, 5, 8, requires_grad=True)
    labels = [dict.fromkeys(train_clip.CAPTION_ATTRIBUTES, -1) for _ in range(3)]
    labels[0]["accessory"] = 2
    loss = heads.loss(states, labels)
    loss.backward()
    assert loss > 0 and torch.all(states.grad[0].abs().sum(dim=-1) > 0)  # every token of the named caption
    assert torch.all(states.grad[1:] == 0)  # captions that name nothing get no gradient
