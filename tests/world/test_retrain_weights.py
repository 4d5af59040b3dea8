"""Weights folders: resolving the shipped/custom folder and exporting a retrain run without training leftovers."""

from __future__ import annotations

import json

import pytest

from infinite_id.world.models import weights as weights_module
from infinite_id.world.models.weights import (
    STAGE_FILES,
    export_weights,
    missing_stages,
    resolve_weights_dir,
    shipped_weights_available,
)


def _fake_run(root, stages, finished=True):
    """A retrain output with the required files of ``stages`` plus training leftovers."""
    for stage in stages:
        folder = root / stage
        for name in STAGE_FILES[stage]:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(f"{stage}/{name}")
        (folder / "checkpoint.safetensors").write_text("optimizer state")
        (folder / "train.log").write_text("log")
        (folder / "run" / "checkpoints").mkdir(parents=True)
        (folder / "run" / "checkpoints" / "trainable.safetensors").write_text("x")
        if finished:
            (folder / "metrics.json").write_text(json.dumps({"metrics": {"loss": 1.0}}))


def test_resolve_names_missing_stages_and_the_command(tmp_path):
    _fake_run(tmp_path, ["face_encoder", "landmarks"])
    assert resolve_weights_dir(tmp_path, ["face_encoder", "landmarks"]) == tmp_path
    (tmp_path / "landmarks" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError) as error:
        resolve_weights_dir(tmp_path, ["face_encoder", "landmarks", "base"])
    message = str(error.value)
    assert "landmarks/" in message and "base/" in message and "face_encoder/" not in message
    assert "infinite_id.world.trainers.retrain" in message and "--only landmarks,base" in message
    with pytest.raises(ValueError, match="unknown weight stages"):
        missing_stages(tmp_path, ["vae"])


def test_default_folder_is_the_shipped_one(tmp_path, monkeypatch):
    monkeypatch.setattr(weights_module, "DEFAULT_WEIGHTS_DIR", tmp_path / "weights")
    assert not shipped_weights_available()
    with pytest.raises(FileNotFoundError, match="shipped weights"):
        resolve_weights_dir()
    _fake_run(tmp_path / "weights", list(STAGE_FILES))
    assert shipped_weights_available() and resolve_weights_dir() == tmp_path / "weights"


def test_export_copies_only_weights_and_replaces_atomically(tmp_path):
    run, dest = tmp_path / "run", tmp_path / "out" / "weights"
    _fake_run(run, ["face_encoder", "base"])
    _fake_run(run, ["clip"], finished=False)  # interrupted: not exported
    (run / "vae").mkdir()
    (run / "vae" / "metrics.json").write_text("{}")  # not a shipped stage
    dest.mkdir(parents=True)
    (dest / "export.json").write_text("{}")  # an earlier export: the only kind of folder it replaces
    (dest / "stale.txt").write_text("old")
    report = export_weights(run, dest)
    assert report["exported"] == ["face_encoder", "base"] and "clip" in report["missing"]
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    expected = [f"{s}/{f}" for s in ("face_encoder", "base") for f in (*STAGE_FILES[s], "metrics.json")]
    assert files == sorted([*expected, "export.json"])
    assert sorted(p.name for p in dest.parent.iterdir()) == ["weights"]  # no temporary folder left


def test_export_of_nothing_leaves_destination_alone(tmp_path):
    dest = tmp_path / "weights"
    dest.mkdir()
    (dest / "keep.txt").write_text("keep")
    with pytest.raises(FileNotFoundError, match="no finished stage"):
        export_weights(tmp_path / "empty", dest)
    assert (dest / "keep.txt").read_text() == "keep"


def test_export_command_line(tmp_path, capsys):
    _fake_run(tmp_path / "run", ["landmarks"])
    weights_module.main(["export", "--from", str(tmp_path / "run"), "--to", str(tmp_path / "w")])
    assert json.loads(capsys.readouterr().out)["exported"] == ["landmarks"]
    assert (tmp_path / "w" / "landmarks" / "model.safetensors").is_file()


def test_export_never_replaces_a_folder_it_did_not_write(tmp_path):
    from infinite_id.errors import OutputPathError

    run, dest = tmp_path / "run", tmp_path / "mine"
    _fake_run(run, ["face_encoder"])
    dest.mkdir()
    (dest / "thesis.txt").write_text("years of work")
    with pytest.raises(OutputPathError, match="did not write"):
        export_weights(run, dest)
    with pytest.raises(OutputPathError, match="input"):
        export_weights(run, tmp_path)  # a folder above the run it reads
    assert (dest / "thesis.txt").read_text() == "years of work" and (run / "face_encoder").is_dir()
