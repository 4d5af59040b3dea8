"""Captions follow the paper's prompt shapes, and parsing a caption recovers exactly what it names."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from infinite_id.world.scene.captions import (
    FACIAL_HAIR_WORDS,
    HAIR_COLOUR_WORDS,
    MENTIONABLE,
    PERSON_RATE,
    PERSON_TRAITS,
    SKIN_TONE_WORDS,
    caption,
    parse_prompt,
    sample_mentions,
    skin_tone,
)
from infinite_id.world.scene.factors import GENDERS, Semantics, identity_from_id


def _captions(semantics, gender, mention, n=3000, seed=0):
    rng = np.random.default_rng(seed)
    return {caption(semantics, gender, rng, mention) for _ in range(n)}


def test_paper_raw_photo_prompt_shape():
    semantics = Semantics(background="beach", clothing="sweater", clothing_colour="yellow", style="photo")
    mention = {"gender", "clothing", "clothing_colour", "background", "style"}
    texts = _captions(semantics, "man", mention)
    assert "a photo of a man wearing a yellow sweater, on the beach" in texts
    shape = re.compile(r"^an? [\w ]+ of an? \w+ wearing an? [\w -]+, [\w ]+$")
    assert all(shape.match(t) for t in texts)


def test_paper_style_prompt_shape():
    texts = _captions(Semantics(style="watercolor"), "woman", {"gender", "style"})
    assert "a woman in watercolor painting style" in texts
    assert "a watercolor painting of a woman" in texts
    oil = _captions(Semantics(style="oil painting"), "man", {"gender", "style"})
    assert "a man in oil painting style" in oil
    cartoon = _captions(Semantics(style="cartoon"), "woman", {"gender", "style"})
    assert "a woman in Disney cartoon style" in cartoon


def test_synonyms_vary_the_wording():
    semantics = Semantics(background="forest", clothing="hoodie", clothing_colour="gray", accessory="hat")
    texts = _captions(semantics, "man", set(MENTIONABLE), n=400)
    assert len(texts) > 50
    assert any("grey" in t for t in texts) and any("gray" in t for t in texts)
    assert any("woods" in t for t in texts) and any("forest" in t for t in texts)


@pytest.mark.parametrize("seed", range(4))
def test_parse_round_trips_every_caption(seed):
    rng = np.random.default_rng(seed)
    for _ in range(250):
        semantics = Semantics.sample(rng)
        gender = GENDERS[int(rng.integers(2))]
        mention = sample_mentions(semantics, rng)
        text = caption(semantics, gender, rng, mention)
        expected = {k: gender if k == "gender" else getattr(semantics, k) for k in mention}
        assert parse_prompt(text).named() == expected, text


def test_style_is_always_named_unless_photo():
    rng = np.random.default_rng(0)
    for _ in range(200):
        semantics = Semantics.sample(rng)
        if semantics.style != "photo":
            assert "style" in sample_mentions(semantics, rng)


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        (
            "a photo of a woman wearing a brown clothing, in the snow",
            {"gender": "woman", "clothing_colour": "brown", "background": "snow", "style": "photo"},
        ),
        (
            "a photo of a man wearing a yellow sweater, in the time square",
            {
                "gender": "man",
                "clothing": "sweater",
                "clothing_colour": "yellow",
                "background": "city",
                "style": "photo",
            },
        ),
        ("a man in comic book style", {"gender": "man", "style": "pop art"}),
        ("A Woman In Watercolor Painting Style", {"gender": "woman", "style": "watercolor"}),
        ("a man with black hair wearing a t-shirt", {"gender": "man", "clothing": "t-shirt"}),
        (
            "a lady in a grey hooded sweatshirt and sunglasses",
            {"gender": "woman", "clothing": "hoodie", "clothing_colour": "gray", "accessory": "sunglasses"},
        ),
        ("a person in front of snowy mountains", {"background": "mountains"}),
        ("a woman in Ukiyo-e painting style", {"gender": "woman"}),
    ],
)
def test_parse_free_prompts(prompt, expected):
    assert parse_prompt(prompt).named() == expected


def test_caption_rejects_bad_requests():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="gender"):
        caption(Semantics(), "robot", rng)
    with pytest.raises(ValueError, match="colour"):
        caption(Semantics(), "man", rng, {"gender", "clothing_colour"})
    with pytest.raises(ValueError, match="mention"):
        caption(Semantics(), "man", rng, {"eyebrows"})
    with pytest.raises(ValueError, match="needs the identity"):
        caption(Semantics(), "man", rng, {"gender", "hair"})


def test_captions_describe_the_person_sometimes():
    """Person traits (hair, facial hair, skin) come from the identity, at about PERSON_RATE, and parsing the
    caption still recovers exactly the prompt attributes it names."""
    rng = np.random.default_rng(0)
    described, total = 0, 600
    for i in range(total):
        identity = identity_from_id(i)
        semantics = Semantics.sample(rng)
        mention = sample_mentions(semantics, rng, identity)
        text = caption(semantics, identity.gender, rng, mention, identity)
        traits = mention & set(PERSON_TRAITS)
        described += bool(traits)
        if "hair" in traits:
            if identity.hair_style == "bald":
                assert "bald" in text, text
            else:
                assert any(w in text for w in HAIR_COLOUR_WORDS[identity.hair_colour]), text
        if "facial_hair" in traits:
            assert identity.facial_hair != "none"
            assert any(w in text for w in FACIAL_HAIR_WORDS[identity.facial_hair]), text
        if "skin" in traits:
            assert any(w in text for w in SKIN_TONE_WORDS[skin_tone(identity)]), text
        named = {k: identity.gender if k == "gender" else getattr(semantics, k) for k in mention - traits}
        assert parse_prompt(text).named() == named, text
    assert abs(described / total - PERSON_RATE) < 0.06
    assert caption(Semantics(), "man", rng, {"gender", "hair"}, identity_from_id(3)).startswith("a ")


def test_skin_tone_bands_are_ordered():
    light = dataclasses.replace(identity_from_id(0), skin=(250, 220, 195))
    dark = dataclasses.replace(identity_from_id(0), skin=(75, 48, 32))
    assert skin_tone(light) == 0 and skin_tone(dark) == len(SKIN_TONE_WORDS) - 1
