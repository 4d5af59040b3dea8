"""Five-point alignment: the similarity fit and the PIL warp put keypoints exactly on the ArcFace template."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from infinite_id.faces import ARCFACE_TEMPLATE_112, align_face, arcface_template, estimate_similarity
from infinite_id.faces.alignment import apply_transform


def similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    c, s = scale * np.cos(np.radians(angle_deg)), scale * np.sin(np.radians(angle_deg))
    return np.array([[c, -s, tx], [s, c, ty]])


def dots_image(points: np.ndarray, size: tuple[int, int], radius: int = 3) -> Image.Image:
    """A black image with a white disc at each point; discs are recovered by their intensity centroids."""
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]]
    canvas = np.zeros((size[1], size[0]), dtype=np.float64)
    for x, y in points:
        canvas = np.maximum(canvas, np.clip(radius + 0.5 - np.hypot(xx - x, yy - y), 0, 1))
    return Image.fromarray((canvas * 255).astype(np.uint8)).convert("RGB")


def centroids(image: Image.Image, expected: np.ndarray, window: int) -> np.ndarray:
    gray = np.asarray(image.convert("L"), dtype=np.float64)
    found = []
    for x, y in expected:
        x0, y0 = int(round(x)) - window, int(round(y)) - window
        patch = gray[max(y0, 0) : y0 + 2 * window + 1, max(x0, 0) : x0 + 2 * window + 1]
        yy, xx = np.mgrid[0 : patch.shape[0], 0 : patch.shape[1]]
        total = patch.sum()
        assert total > 0, "dot missing from the aligned crop"
        found.append([(xx * patch).sum() / total + max(x0, 0), (yy * patch).sum() / total + max(y0, 0)])
    return np.array(found)


def test_estimate_similarity_recovers_a_known_transform():
    truth = similarity(17.0, 1.7, 12.5, -40.0)
    src = ARCFACE_TEMPLATE_112 * 2.3 + 50
    np.testing.assert_allclose(estimate_similarity(src, apply_transform(truth, src)), truth, atol=1e-9)


def test_template_scales_with_crop_size():
    np.testing.assert_allclose(arcface_template(224), ARCFACE_TEMPLATE_112 * 2)


@pytest.mark.parametrize(
    ("angle", "scale", "size"),
    [(0.0, 3.0, 224), (25.0, 2.0, 112), (-40.0, 1.5, 160), (10.0, 9.0, 224)],  # the last one takes the reduce path
)
def test_keypoints_land_on_the_template(angle, scale, size):
    # A "face" whose keypoints are the template rotated, scaled and shifted into a larger photo.
    to_photo = similarity(angle, scale, 300.0, 250.0)
    keypoints = apply_transform(to_photo, ARCFACE_TEMPLATE_112 - 56)
    photo = dots_image(keypoints, (1400, 1200), radius=max(2, int(scale * 2)))
    crop = align_face(photo, keypoints, size)
    assert crop.size == (size, size) and crop.mode == "RGB"
    target = arcface_template(size)
    np.testing.assert_allclose(centroids(crop, target, window=max(4, size // 28)), target, atol=0.35)


def test_align_refuses_degenerate_keypoints():
    photo = Image.new("RGB", (64, 64))
    with pytest.raises(ValueError, match="same place"):
        align_face(photo, np.full((5, 2), 10.0), 112)
    with pytest.raises(ValueError, match="NaN"):
        align_face(photo, np.full((5, 2), np.nan), 112)
    with pytest.raises(ValueError, match="at least 8"):
        align_face(photo, ARCFACE_TEMPLATE_112, 4)


def test_outside_the_photo_is_black():
    photo = Image.new("RGB", (40, 40), (200, 200, 200))
    crop = align_face(photo, ARCFACE_TEMPLATE_112 * 0.3 + 25, 112)  # face at the corner: part of the crop is outside
    pixels = np.asarray(crop)
    assert pixels[-1, -1].tolist() == [0, 0, 0]
    assert pixels[0, 0].tolist() == [200, 200, 200]
