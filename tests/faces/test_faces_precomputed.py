"""Precomputed embeddings, encoder metadata and compatibility checks, and turning any identity input into a crop."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from infinite_id.faces import (
    FaceEncoderInfo,
    FaceIndexError,
    IdentityCrop,
    PrecomputedFaceEncoder,
    arcface_template,
    check_compatible,
    get_face_analyzer,
    is_embedding_input,
    prepare_identity,
    save_embeddings,
)

ARC = FaceEncoderInfo("insightface", "buffalo_l", 512)


def test_info_round_trip_and_description():
    assert FaceEncoderInfo.from_dict(ARC.to_dict()) == ARC
    assert ARC.describe() == "insightface/buffalo_l (512-d)"
    assert FaceEncoderInfo.from_dict({"backend": "dlib", "model": "m", "dim": "128"}).dim == 128
    with pytest.raises(ValueError, match="lacks"):
        FaceEncoderInfo.from_dict({"backend": "dlib"})


def test_check_compatible_names_both_encoders():
    check_compatible(ARC, FaceEncoderInfo("insightface", "buffalo_l", 512))
    dlib = FaceEncoderInfo("dlib", "dlib_face_recognition_resnet_model_v1", 128)
    with pytest.raises(ValueError, match=r"insightface/buffalo_l \(512-d\).*dlib/dlib_face_recognition"):
        check_compatible(ARC, dlib)
    other_model = FaceEncoderInfo("insightface", "buffalo_s", 512)
    with pytest.raises(ValueError, match="model mismatch.*buffalo_l.*buffalo_s"):
        check_compatible(ARC, other_model)
    with pytest.warns(UserWarning, match="buffalo_s"):
        check_compatible(ARC, other_model, allow_model_mismatch=True)
    with pytest.raises(ValueError, match="mismatch"):  # a different size is never allowed
        check_compatible(ARC, FaceEncoderInfo("insightface", "buffalo_l", 256), allow_model_mismatch=True)


def unit_rows(count: int, dim: int, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_npy_and_safetensors_files(tmp_path):
    rows = unit_rows(3, 512) * 7  # stored unnormalised; served normalised
    npy = tmp_path / "id.npy"
    np.save(npy, rows[0])
    encoder = PrecomputedFaceEncoder(npy, info=ARC)
    np.testing.assert_allclose(encoder.embedding(), rows[0] / 7, atol=1e-6)
    assert encoder.info == ARC

    st = tmp_path / "ids.safetensors"
    save_embeddings(st, rows, ARC)
    from_file = PrecomputedFaceEncoder(st)
    assert from_file.info == ARC  # backend and model from the metadata
    np.testing.assert_allclose(from_file.embedding(2), rows[2] / 7, atol=1e-6)
    with pytest.raises(FaceIndexError, match="holds 3 embedding"):
        from_file.embedding(3)

    anonymous = PrecomputedFaceEncoder(unit_rows(1, 128))
    assert anonymous.info == FaceEncoderInfo("precomputed", "unknown", 128)
    with pytest.raises(ValueError, match="precomputed/unknown"):
        check_compatible(ARC, anonymous.info)


def test_bad_embedding_files(tmp_path):
    with pytest.raises(ValueError, match="holds 512-d embeddings but info says"):
        PrecomputedFaceEncoder(unit_rows(1, 512), info=FaceEncoderInfo("dlib", "x", 128))
    pickled = tmp_path / "pickled.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="pickled files are refused"):
        PrecomputedFaceEncoder(pickled)
    with pytest.raises(ValueError, match=r"\.npy or \.safetensors"):
        PrecomputedFaceEncoder(_write(tmp_path / "id.txt", b"1 2 3"))
    with pytest.raises(ValueError, match="not a valid safetensors"):
        PrecomputedFaceEncoder(_write(tmp_path / "bad.safetensors", b"garbage"))
    with pytest.raises(FileNotFoundError, match="nothing.npy"):
        PrecomputedFaceEncoder(tmp_path / "nothing.npy")
    with pytest.raises(ValueError, match="all zeros"):
        PrecomputedFaceEncoder(np.zeros(512))
    with pytest.raises(ValueError, match="NaN"):
        PrecomputedFaceEncoder(np.full(512, np.nan))
    with pytest.raises(ValueError, match="expected"):
        PrecomputedFaceEncoder(np.zeros((2, 3, 4)))


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_clip_crop_is_the_centre_crop():
    photo = np.zeros((100, 160, 3), dtype=np.uint8)
    photo[:, 30:130] = 255  # the centred 100 x 100 square is white, the sides black
    encoder = PrecomputedFaceEncoder(unit_rows(2, 512), info=ARC)
    found = encoder.identity(photo, face_index=1, clip_crop_size=224)
    np.testing.assert_allclose(found.embedding, encoder.embedding(1))
    assert found.clip_crop.size == (224, 224)
    assert np.asarray(found.clip_crop)[2:-2, 2:-2].min() == 255
    assert found.face.box == (30.0, 0.0, 130.0, 100.0)
    np.testing.assert_allclose(found.face.keypoints, arcface_template(100) + [30, 0], atol=1e-4)


def test_prepare_identity_accepts_every_input(tmp_path):
    photo = Image.new("RGB", (64, 64), (90, 90, 90))
    vector = unit_rows(1, 512)[0]
    from_array = prepare_identity(vector, clip_image=photo, info=ARC)
    assert isinstance(from_array, IdentityCrop) and from_array.info == ARC
    np.testing.assert_allclose(from_array.embedding, vector, atol=1e-6)
    path = tmp_path / "v.safetensors"
    save_embeddings(path, vector, ARC)
    assert prepare_identity(str(path), clip_image=photo).info == ARC
    assert prepare_identity(from_array) is from_array
    with pytest.raises(ValueError, match="needs clip_image"):
        prepare_identity(vector)
    with pytest.raises(TypeError, match="Cannot use a dict"):
        prepare_identity({"a": 1})
    assert is_embedding_input(vector) and is_embedding_input("x.npy") and not is_embedding_input("x.jpg")
    assert not is_embedding_input(np.zeros((8, 8, 3)))


def test_get_face_analyzer_errors():
    with pytest.raises(ValueError, match="Unknown face backend 'arcface'"):
        get_face_analyzer("arcface")
    with pytest.raises(ValueError, match="name it instead of 'auto'"):
        get_face_analyzer("auto", model="antelopev2")
    assert isinstance(get_face_analyzer("precomputed", path_or_array=unit_rows(1, 8)), PrecomputedFaceEncoder)


def test_no_warning_for_identical_info():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_compatible(ARC, FaceEncoderInfo.from_dict(ARC.to_dict()))


def test_importing_the_package_loads_no_backend():
    import subprocess
    import sys

    heavy = "('insightface', 'dlib', 'onnxruntime', 'cv2')"
    code = f"import sys, infinite_id.faces; print(sorted(m for m in {heavy} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
