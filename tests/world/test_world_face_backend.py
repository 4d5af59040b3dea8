"""The ``mini`` face backend: the miniature world's detector and face encoder behind the FaceAnalyzer interface.

Mechanics run on quick (two-step) weights built once per session; quality is checked only with shipped weights.
"""

from __future__ import annotations

import numpy as np
import pytest

from infinite_id.faces import BackendUnavailableError, FaceEncoderInfo, NoFaceError, get_face_analyzer
from infinite_id.world.face_backend import MiniFaceAnalyzer, world_eval_analyzer
from infinite_id.world.models.weights import shipped_weights_available
from infinite_id.world.scene.dataset import sample_example
from infinite_id.world.scene.factors import EVAL_IDENTITIES

STAGES = ["face_encoder", "face_encoder_eval", "landmarks"]


@pytest.fixture(scope="session")
def quick_weights(world_quick_weights):
    return world_quick_weights  # all stages, two steps each (tests/conftest.py); these tests use STAGES


def _render(identity: int, photo: int):
    return sample_example(EVAL_IDENTITIES.start + identity, np.random.default_rng([7, identity, photo]))


def test_factory_builds_it_and_names_the_encoder(quick_weights):
    analyzer = get_face_analyzer("mini", weights_dir=quick_weights)
    assert isinstance(analyzer, MiniFaceAnalyzer)
    assert analyzer.info.backend == "mini" and analyzer.info.dim == 512
    evaluation = world_eval_analyzer(quick_weights)
    assert evaluation.encoder_stage == "face_encoder_eval"
    assert evaluation.info.model != analyzer.info.model  # different networks: an adapter must not mix them
    assert FaceEncoderInfo.from_dict(analyzer.info.to_dict()) == analyzer.info


def test_missing_weights_say_which_stage_and_how_to_train_it(tmp_path, quick_weights):
    with pytest.raises(BackendUnavailableError, match=r"(?s)landmarks/.*infinite_id\.world\.trainers\.retrain"):
        get_face_analyzer("mini", weights_dir=tmp_path)
    with pytest.raises(ValueError, match="Unknown mini face encoder"):
        MiniFaceAnalyzer(quick_weights, encoder="arcface")


def test_identity_mechanics_on_a_render(quick_weights):
    # Quick weights do not detect anything meaningful: accept every image to exercise the path.
    analyzer = MiniFaceAnalyzer(quick_weights, threshold=1e-6, min_face_size=0)
    example = _render(0, 0)
    crop = analyzer.identity(example.image, clip_crop_size=64)
    again = analyzer.identity(np.asarray(example.image), clip_crop_size=64)
    assert crop.embedding.shape == (512,) and crop.embedding.dtype == np.float32
    assert np.isclose(np.linalg.norm(crop.embedding), 1.0, atol=1e-5)
    np.testing.assert_array_equal(crop.embedding, again.embedding)
    assert crop.clip_crop.size == (64, 64) and crop.info == analyzer.info
    assert analyzer.detect(example.image)[0].keypoints.shape == (5, 2)
    # batched embedding gives the same rows as one image at a time
    images = [_render(i, 0).image for i in range(3)]
    embeddings, found = analyzer.embed_images(images)
    assert embeddings.shape == (3, 512) and found.all()
    single = analyzer.embed(images[2], analyzer.detect(images[2])[0])
    np.testing.assert_allclose(embeddings[2], single, atol=1e-5)


def test_below_threshold_is_no_face(quick_weights):
    analyzer = MiniFaceAnalyzer(quick_weights, threshold=1 - 1e-9)
    image = _render(1, 0).image
    assert analyzer.detect(image) == []
    with pytest.raises(NoFaceError, match="No face found"):
        analyzer.identity(image)
    embeddings, found = analyzer.embed_images([image])
    assert not found.any() and not embeddings.any()


def test_box_from_true_landmarks_matches_the_renderers_face_box(quick_weights):
    analyzer = MiniFaceAnalyzer(quick_weights)
    overlaps = []
    for i in range(20):
        example = _render(i, 1)
        face = analyzer.face_from_landmarks(np.asarray(example.layout.landmarks), 1.0, example.image.size)
        a, b = face.box, example.layout.face_box
        inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        overlaps.append(inter / (face.area + (b[2] - b[0]) * (b[3] - b[1]) - inter))
    assert np.median(overlaps) > 0.6  # measured: about 0.7


@pytest.mark.skipif(
    not shipped_weights_available(STAGES), reason="needs the shipped miniature-world weights (landmarks, encoders)"
)
@pytest.mark.parametrize("encoder", ["face_encoder", "face_encoder_eval"])
def test_shipped_weights_find_faces_and_separate_identities(encoder):
    analyzer = MiniFaceAnalyzer(encoder=encoder)
    examples = [[_render(i, k) for k in range(2)] for i in range(24)]
    embeddings, found = analyzer.embed_images([e.image for pair in examples for e in pair])
    assert found.mean() >= 0.95
    faces = analyzer._detect_many([pair[0].image for pair in examples])
    errors = [
        np.linalg.norm(face.keypoints - np.asarray(pair[0].layout.landmarks), axis=1).mean()
        for face, pair in zip(faces, examples, strict=True)
        if face is not None
    ]
    assert np.median(errors) < 2.0  # pixels, in a 64 px render
    emb = embeddings.reshape(24, 2, -1)
    same = np.einsum("id,id->i", emb[:, 0], emb[:, 1])
    different = emb[:, 0] @ emb[:, 0].T
    assert same.mean() > different[~np.eye(24, dtype=bool)].mean() + 0.3
