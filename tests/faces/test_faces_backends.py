"""Each installed backend on real photos carried by packages: counts, identity, alignment, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from infinite_id.faces import (
    DetectedFace,
    FaceIndexError,
    FaceTooSmallError,
    IdentityCrop,
    InvalidImageError,
    NoFaceError,
    arcface_template,
    load_image,
)

#: Faces in each group photo: (ground truth, fewest the backend must find). dlib's HOG detector misses the
#: profile and half-cut faces at the edges of gdp.jpg and the smallest players.
EXPECTED_COUNTS = {
    "insightface": {"gdp": (5, 5), "players": (22, 22), "group_t1": (6, 6)},
    "dlib": {"gdp": (5, 3), "players": (22, 15), "group_t1": (6, 6)},
}
#: Where Yao Ming is in players.jpg (a point inside his face).
YAO_IN_PLAYERS = (740, 168)


def backend_of(analyzer) -> str:
    return analyzer.info.backend


def test_info_describes_the_encoder(analyzer):
    info = analyzer.info
    assert info.dim == {"insightface": 512, "dlib": 128}[info.backend]
    assert info.describe() == f"{info.backend}/{info.model} ({info.dim}-d)"


@pytest.mark.parametrize("photo_name", ["gdp", "players", "group_t1"])
def test_faces_counted_on_group_photos(analyzer, photo_name, request):
    faces = analyzer.detect(request.getfixturevalue(photo_name))
    truth, fewest = EXPECTED_COUNTS[backend_of(analyzer)][photo_name]
    assert fewest <= len(faces) <= truth
    areas = [face.area for face in faces]
    assert areas == sorted(areas, reverse=True), "faces must come largest first"
    for face in faces:
        x1, y1, x2, y2 = face.box
        assert x2 > x1 and y2 > y1
        # The eyes lie inside the box, the image-left eye left of the image-right eye.
        assert np.all(face.keypoints[:2, 0] >= x1 - 2) and np.all(face.keypoints[:2, 0] <= x2 + 2)
        assert face.keypoints[0, 0] < face.keypoints[1, 0]


def test_same_person_is_closer_than_different_people(analyzer, yaoming, gdp):
    photo = load_image(yaoming)
    reference = analyzer.identity(photo)
    assert reference.embedding.dtype == np.float32 and reference.embedding.shape == (analyzer.info.dim,)
    assert abs(float(np.linalg.norm(reference.embedding)) - 1) < 1e-5
    variants = [
        ImageOps.mirror(photo),
        photo.crop((40, 40, 220, 260)),
        ImageEnhance.Brightness(photo).enhance(1.4),
    ]
    same = [float(analyzer.identity(v).embedding @ reference.embedding) for v in variants]
    others = load_image(gdp)
    different = [float(analyzer.embed(others, face) @ reference.embedding) for face in analyzer.detect(others)]
    assert len(different) >= 3
    assert min(same) > max(different) + 0.1, (same, different)


def test_same_person_is_found_in_another_photo(analyzer, yaoming, players):
    reference = analyzer.identity(yaoming).embedding
    team = load_image(players)
    faces = analyzer.detect(team)
    similarities = [float(analyzer.embed(team, face) @ reference) for face in faces]
    best = faces[int(np.argmax(similarities))]
    x, y = YAO_IN_PLAYERS
    assert best.box[0] <= x <= best.box[2] and best.box[1] <= y <= best.box[3]


def test_alignment_crops_have_the_size_and_keypoints_where_expected(analyzer, yaoming):
    photo = load_image(yaoming)
    found = analyzer.identity(photo, clip_crop_size=256)
    assert isinstance(found, IdentityCrop) and found.clip_crop.size == (256, 256) and found.clip_crop.mode == "RGB"
    assert analyzer.align(photo, found.face, 224).size == (224, 224)
    # Detect again on the aligned crop: the keypoints must be where the template puts them.
    crop = analyzer.align(photo, found.face, 224)
    again = analyzer.detect(crop)
    assert len(again) == 1
    error = np.linalg.norm(again[0].keypoints - arcface_template(224), axis=1)
    assert error.max() < 0.05 * 224, error


def test_largest_face_by_default_and_face_index(analyzer, group_t1, caplog):
    faces = analyzer.detect(group_t1)
    with caplog.at_level("INFO", logger="infinite_id.faces.base"):
        default = analyzer.identity(group_t1)
    assert default.face.box == faces[0].box
    assert "6 faces in" in caplog.text and "using the largest (#0)" in caplog.text and "#5: " in caplog.text
    second = analyzer.identity(group_t1, face_index=1)
    assert second.face.box == faces[1].box
    assert float(second.embedding @ default.embedding) < 0.95
    assert analyzer.identity(group_t1, face_index=-1).face.box == faces[-1].box
    with pytest.raises(FaceIndexError, match=r"face_index=99 but .*t1.jpg has 6 face\(s\).*#0: .*#5: "):
        analyzer.identity(group_t1, face_index=99)


def test_no_face_error_names_the_file(analyzer, tmp_path):
    path = tmp_path / "landscape.png"
    gradient = np.linspace(0, 255, 200 * 300).reshape(200, 300).astype(np.uint8)
    Image.fromarray(gradient).convert("RGB").save(path)
    assert analyzer.detect(path) == []
    with pytest.raises(NoFaceError, match="No face found in .*landscape.png"):
        analyzer.identity(path)


def test_face_too_small_to_embed(analyzer, yaoming, monkeypatch):
    photo = load_image(yaoming)
    small = photo.resize((photo.width // 4, photo.height // 4), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (300, 300), (128, 128, 128))
    canvas.paste(small, (120, 100))
    faces = analyzer.detect(canvas)
    assert len(faces) == 1 and faces[0].short_side < 40
    monkeypatch.setattr(analyzer, "min_face_size", 40.0)
    with pytest.raises(FaceTooSmallError, match=r"smaller than 40 px.*larger or closer photo"):
        analyzer.identity(canvas)
    # Still listed by detect, and embeddable on explicit request.
    assert analyzer.embed(canvas, faces[0]).shape == (analyzer.info.dim,)


def test_exif_rotated_photo_is_upright(analyzer, yaoming, tmp_path):
    photo = load_image(yaoming)
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned 90 degrees counter-clockwise; viewers rotate it back
    photo.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif, quality=95)
    upright = analyzer.identity(path)
    left_eye, right_eye = upright.face.keypoints[:2]
    assert right_eye[0] - left_eye[0] > 3 * abs(right_eye[1] - left_eye[1])
    assert float(upright.embedding @ analyzer.identity(photo).embedding) > 0.9


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "I;16", "P"])
def test_every_image_mode_still_finds_the_face(analyzer, yaoming, mode):
    photo = load_image(yaoming)
    if mode == "I;16":
        converted = Image.fromarray(np.asarray(photo.convert("L"), dtype=np.uint16) * 257)
    else:
        converted = photo.convert(mode)
    reference = analyzer.identity(photo).embedding
    found = analyzer.identity(converted)
    assert float(found.embedding @ reference) > 0.85


def test_huge_photo_is_capped_and_still_works(analyzer, yaoming):
    photo = load_image(yaoming)
    huge = photo.resize((photo.width * 12, photo.height * 12), Image.Resampling.BILINEAR)  # 2796 x 3444
    found = analyzer.identity(huge)
    assert max(load_image(huge).size) == analyzer.max_side
    assert float(found.embedding @ analyzer.identity(photo).embedding) > 0.9


def test_tiny_and_broken_inputs_fail_clearly(analyzer, tmp_path):
    with pytest.raises(InvalidImageError, match="only 10x10 px"):
        analyzer.identity(np.zeros((10, 10, 3), dtype=np.uint8))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(InvalidImageError, match="broken.jpg"):
        analyzer.detect(broken)


def test_embed_accepts_faces_from_elsewhere(analyzer, yaoming):
    """embed() works from a box and keypoints alone (e.g. a face found by the other backend)."""
    face = analyzer.detect(yaoming)[0]
    moved = DetectedFace(box=face.box, keypoints=face.keypoints + 0.5, score=0.0)
    assert float(analyzer.embed(yaoming, moved) @ analyzer.embed(yaoming, face)) > 0.95


def test_dlib_cnn_detector(dlib_analyzer, yaoming):
    from infinite_id.faces import get_face_analyzer

    cnn = get_face_analyzer("dlib", detector="cnn")
    faces = cnn.detect(yaoming)
    assert len(faces) == 1
    hog_face = dlib_analyzer.detect(yaoming)[0]
    assert float(cnn.embed(yaoming, faces[0]) @ dlib_analyzer.embed(yaoming, hog_face)) > 0.97
