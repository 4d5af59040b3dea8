"""Behaviour of the miniature-world renderer: determinism, identity vs nuisance vs semantics, styles, layout."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from infinite_id.world.scene.dataset import sample_example
from infinite_id.world.scene.factors import (
    BACKGROUNDS,
    CLOTHING_KINDS,
    EVAL_IDENTITIES,
    STYLES,
    TRAIN_IDENTITIES,
    IdentityFactors,
    Nuisance,
    Semantics,
    identity_from_id,
    identity_split,
    nuisance_rng,
    semantics_rng,
)
from infinite_id.world.scene.render import render, render_with_layout


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32) / 255.0


def _erode(mask: np.ndarray, steps: int) -> np.ndarray:
    for _ in range(steps):
        inner = mask.copy()
        inner[1:] &= mask[:-1]
        inner[:-1] &= mask[1:]
        inner[:, 1:] &= mask[:, :-1]
        inner[:, :-1] &= mask[:, 1:]
        mask = inner
    return mask


@pytest.mark.parametrize("style", STYLES)
def test_render_is_deterministic(style):
    identity = identity_from_id(3)
    semantics = dataclasses.replace(Semantics.sample(semantics_rng(3)), style=style)
    nuisance = Nuisance.sample(nuisance_rng(3))
    first = render(identity, semantics, nuisance)
    second = render(identity_from_id(3), semantics, Nuisance.from_dict(nuisance.to_dict()))
    assert first.mode == "RGB" and first.size == (64, 64)
    assert first.tobytes() == second.tobytes()


def test_render_sizes():
    identity, semantics, nuisance = identity_from_id(1), Semantics(), Nuisance()
    assert render(identity, semantics, nuisance, size=96, supersample=1).size == (96, 96)
    with pytest.raises(ValueError, match="size"):
        render(identity, semantics, nuisance, size=8)
    with pytest.raises(ValueError, match="supersample"):
        render(identity, semantics, nuisance, supersample=0)


def test_identities_are_deterministic_and_distinct():
    assert identity_from_id(42) == identity_from_id(42)
    assert IdentityFactors.from_dict(identity_from_id(42).to_dict()) == identity_from_id(42)
    people = [identity_from_id(i) for i in range(200)]
    assert len(set(people)) == 200
    # Enough independent factors that discrete looks alone already rarely repeat.
    looks = {(p.gender, p.hair_style, p.hair_colour, p.eye_colour, p.nose_style, p.facial_hair) for p in people}
    assert len(looks) > 150
    # Different people render differently under the same photo conditions.
    semantics, nuisance = Semantics(), Nuisance()
    a, b = (_pixels(render(identity_from_id(i), semantics, nuisance)) for i in (5, 6))
    assert np.abs(a - b).mean() > 0.02


def test_train_and_eval_identities_are_disjoint():
    assert set(TRAIN_IDENTITIES).isdisjoint(range(EVAL_IDENTITIES.start, EVAL_IDENTITIES.start + 1000))
    assert TRAIN_IDENTITIES.stop <= EVAL_IDENTITIES.start
    assert identity_split(0) == "train" and identity_split(TRAIN_IDENTITIES.stop - 1) == "train"
    assert identity_split(EVAL_IDENTITIES.start) == "eval"
    for bad in (-1, TRAIN_IDENTITIES.stop, EVAL_IDENTITIES.stop):
        with pytest.raises(ValueError, match="outside"):
            identity_from_id(bad)


def test_unknown_vocabulary_is_rejected():
    with pytest.raises(ValueError, match="background"):
        Semantics(background="moon")
    with pytest.raises(ValueError, match="style"):
        Semantics(style="ukiyo-e")
    with pytest.raises(ValueError, match="unknown"):
        Nuisance.from_dict({"yaw": 0.1, "zoom": 2.0})


@pytest.mark.parametrize("style", ["photo", "cartoon", "pop art", "sketch"])
def test_background_and_clothing_leave_the_face_unchanged(style):
    identity = identity_from_id(11)
    nuisance = Nuisance.sample(nuisance_rng(11))
    base = Semantics(background="studio", clothing="t-shirt", clothing_colour="blue", style=style)
    image, layout = render_with_layout(identity, base, nuisance)
    interior = _erode(layout.face_mask, 2)
    assert interior.sum() > 150  # the face fills a good part of the frame
    reference = _pixels(image)[interior]
    for background, clothing, colour in (("beach", "suit", "red"), ("night sky", "hoodie", "colorful")):
        other = dataclasses.replace(base, background=background, clothing=clothing, clothing_colour=colour)
        changed = _pixels(render(identity, other, nuisance))
        np.testing.assert_array_equal(changed[interior], reference)
        assert np.abs(changed - _pixels(image)).mean() > 0.02  # while the picture did change


def test_face_colour_depends_on_identity_not_background():
    nuisance = Nuisance()
    by_background = []
    for background in BACKGROUNDS:
        image, layout = render_with_layout(identity_from_id(7), Semantics(background=background), nuisance)
        by_background.append(_pixels(image)[_erode(layout.face_mask, 2)].mean(axis=0))
    by_identity = []
    for i in range(len(BACKGROUNDS)):
        image, layout = render_with_layout(identity_from_id(100 + i), Semantics(), nuisance)
        by_identity.append(_pixels(image)[_erode(layout.face_mask, 2)].mean(axis=0))
    assert np.std(by_background, axis=0).max() < 1e-6
    assert np.std(by_identity, axis=0).mean() > 0.05


def _face_feature(image: Image.Image, face_box) -> np.ndarray:
    """A deliberately simple identity feature: the face-centred crop (with hair) at 12x12."""
    x0, y0, x1, y1 = face_box
    cx, cy, h = (x0 + x1) / 2, (y0 + y1) / 2, y1 - y0
    box = tuple(int(round(v)) for v in (cx - 0.7 * h, cy - 0.85 * h, cx + 0.7 * h, cy + 0.55 * h))
    return _pixels(image.crop(box).resize((12, 12), Image.Resampling.BOX)).ravel()


def test_same_identity_is_closer_than_different_identities():
    features, owners = [], []
    for identity_id in range(20):
        for photo in range(2):
            example = sample_example(
                identity_id, np.random.default_rng([identity_id, photo]), style_weights={"photo": 1.0}
            )
            features.append(_face_feature(example.image, example.layout.face_box))
            owners.append(identity_id)
    features, owners = np.stack(features), np.array(owners)
    distance = np.linalg.norm(features[:, None] - features[None], axis=2)
    same = (owners[:, None] == owners[None]) & ~np.eye(len(owners), dtype=bool)
    different = owners[:, None] != owners[None]
    assert distance[same].mean() < 0.92 * distance[different].mean()


def test_nuisances_change_the_photo_but_not_the_person():
    identity, semantics = identity_from_id(21), Semantics()
    a = render_with_layout(identity, semantics, Nuisance(yaw=-0.4, smile=-0.3, light_angle=0.0))
    b = render_with_layout(identity, semantics, Nuisance(yaw=0.4, smile=1.0, light_angle=3.0))
    assert np.abs(_pixels(a[0]) - _pixels(b[0])).mean() > 0.01
    # Yaw moves the nose across the face: it sits left of the eye midpoint in one, right in the other.
    nose_offset = [lm[2][0] - (lm[0][0] + lm[1][0]) / 2 for lm in (a[1].landmarks, b[1].landmarks)]
    assert nose_offset[0] < -0.5 < 0.5 < nose_offset[1]


def test_styles_are_visibly_different():
    identity = identity_from_id(9)
    nuisance = Nuisance.sample(nuisance_rng(9))
    semantics = Semantics.sample(semantics_rng(9))
    images = {s: _pixels(render(identity, dataclasses.replace(semantics, style=s), nuisance)) for s in STYLES}
    for i, a in enumerate(STYLES):
        for b in STYLES[i + 1 :]:
            assert np.abs(images[a] - images[b]).mean() > 0.03, (a, b)


def test_semantics_are_visible():
    identity, nuisance = identity_from_id(2), Nuisance()
    base = _pixels(render(identity, Semantics(), nuisance))
    for field, values in (("background", BACKGROUNDS[1:]), ("clothing", CLOTHING_KINDS[1:])):
        for value in values:
            changed = _pixels(render(identity, dataclasses.replace(Semantics(), **{field: value}), nuisance))
            assert np.abs(changed - base).mean() > 0.003, (field, value)
    for accessory in ("glasses", "sunglasses", "hat", "headphones", "scarf", "earrings", "necklace"):
        changed = _pixels(render(identity, Semantics(accessory=accessory), nuisance))
        assert np.abs(changed - base).max() > 0.15, accessory


def test_layout_landmarks_are_in_order_and_inside_the_face():
    for i in range(10):
        example = sample_example(i, np.random.default_rng(i))
        x0, y0, x1, y1 = example.layout.face_box
        assert 0 < x1 - x0 < 64 and 0 < y1 - y0 < 64
        (lex, ley), (rex, rey), (nx, ny), (lmx, lmy), (rmx, rmy) = example.layout.landmarks
        assert lex < rex and lmx < rmx
        for x, y in example.layout.landmarks:
            assert x0 - 1 <= x <= x1 + 1 and y0 - 1 <= y <= y1 + 1
        assert max(ley, rey) < ny < min(lmy, rmy) + 2
        assert example.layout.face_mask.shape == (64, 64)


@pytest.mark.parametrize("style", ["photo", "pop art", "sketch"])
def test_small_accessories_cover_enough_pixels_to_be_read(style):
    """Earrings and necklaces were one pixel wide in v1 (a classifier found them in 0% and 26% of renders); now
    each changes a patch of the picture in every style, over hair too."""
    for identity_id in range(6):
        identity, nuisance = identity_from_id(identity_id), Nuisance()
        base = _pixels(render(identity, Semantics(style=style), nuisance))
        for accessory in ("earrings", "necklace"):
            changed = _pixels(render(identity, Semantics(accessory=accessory, style=style), nuisance))
            assert (np.abs(changed - base).max(axis=2) > 0.2).sum() >= 12, (identity_id, accessory)


def test_gender_shapes_the_face():
    """Gender shows in the drawing itself (brows, jaw, lips, lined eyes), not only in hair and lipstick colour."""
    people = [identity_from_id(i) for i in range(400)]
    men = [p for p in people if p.gender == "man"]
    women = [p for p in people if p.gender == "woman"]
    assert min(p.brow_thickness for p in men) > max(p.brow_thickness for p in women)
    assert min(p.jaw_squareness for p in men) > max(p.jaw_squareness for p in women)
    assert min(p.lip_thickness for p in women) > max(p.lip_thickness for p in men)
    woman = next(p for p in people if p.gender == "woman")
    as_man = dataclasses.replace(woman, gender="man")
    for style in ("photo", "pop art"):
        a = _pixels(render(woman, Semantics(style=style), Nuisance()))
        b = _pixels(render(as_man, Semantics(style=style), Nuisance()))
        assert (np.abs(a - b).max(axis=2) > 0.1).sum() >= 10, style  # the lined eyes
