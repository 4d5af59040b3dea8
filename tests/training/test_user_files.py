"""No command deletes or overwrites a file it did not create (issue 13, class 1).

Every command that writes (generate, faces, train-prepare, train-shards, train, eval, retrain, serve) is pointed
at a folder of the user's own files, at the folder holding its inputs, and next to a sibling the user owns; each
must refuse with one line (or, for generate, add new files only), and every user file must be byte-for-byte
intact afterwards. The data fixtures come from this folder's conftest (tiny identity dataset and cache); the
weights export of the miniature world is covered in tests/world/test_retrain_weights.py.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from cli_results import assert_one_line_error as _refused
from typer.testing import CliRunner

from infinite_id.cli import app

ROOT = Path(__file__).resolve().parents[2]
PORTRAIT = ROOT / "examples" / "portraits" / "woman_1.png"


def _run(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with its SHA-256: what must survive."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _user_folder(path: Path) -> Path:
    """A folder of someone's own files, including names our commands also use."""
    (path / "notes").mkdir(parents=True)
    (path / "thesis.txt").write_text("years of work")
    (path / "notes" / "todo.md").write_text("- back up")
    (path / "config.yaml").write_text("mine: true\n")
    (path / "cache.json").write_text('{"format": "not ours"}')
    (path / "0001-a-photo-seed1.png").write_bytes(PORTRAIT.read_bytes())
    return path


def _prepare_args(manifest: Path, out: Path, *extra: str) -> list:
    return ["train-prepare", manifest, "--out", out, "--backend", "none", "--precomputed-encoder", "precomputed/test",
            *extra]  # fmt: skip


def test_train_prepare_never_touches_user_files(tmp_path):
    from conftest import write_identity_dataset

    manifest = write_identity_dataset(tmp_path / "data", identities=2, photos=2)
    mine = _user_folder(tmp_path / "mine")
    sibling = _user_folder(tmp_path / "cache.tmp")  # the name the old code used as its scratch folder
    dataset_before, mine_before, sibling_before = (_snapshot(p) for p in (tmp_path / "data", mine, sibling))

    _refused(_run(*_prepare_args(manifest, mine)), "did not write", "nothing was changed")
    _refused(_run(*_prepare_args(manifest, mine, "--overwrite")), "did not write")  # --overwrite is no licence
    _refused(_run(*_prepare_args(manifest, tmp_path / "data", "--overwrite")), "input")  # the dataset's own folder
    _refused(_run(*_prepare_args(manifest, tmp_path, "--overwrite")), "input")  # a folder above the inputs
    _refused(_run(*_prepare_args(manifest, mine / "thesis.txt")), "is a file")
    _refused(_run(*_prepare_args(manifest, mine / "thesis.txt" / "cache")), "which is a file")

    ok = _run(*_prepare_args(manifest, tmp_path / "cache"))
    assert ok.exit_code == 0, ok.output
    _refused(_run(*_prepare_args(manifest, tmp_path / "cache")), "--overwrite")  # its own output, not asked
    again = _run(*_prepare_args(manifest, tmp_path / "cache", "--overwrite"))  # its own output, asked: replaced
    assert again.exit_code == 0 and "4 photos" in again.output, again.output
    assert not list(tmp_path.glob(".cache.*"))  # no scratch folder left behind

    assert _snapshot(tmp_path / "data") == dataset_before
    assert _snapshot(mine) == mine_before and _snapshot(sibling) == sibling_before


def test_train_prepare_refuses_an_empty_result_and_a_zero_crop(tmp_path):
    (tmp_path / "empty").mkdir()
    _refused(_run(*_prepare_args(tmp_path / "empty", tmp_path / "cache")), "lists no precomputed embedding")
    from conftest import write_identity_dataset

    manifest = write_identity_dataset(tmp_path / "data", identities=1, photos=1)
    _refused(_run(*_prepare_args(manifest, tmp_path / "cache", "--crop-size", "0")), "--crop-size")
    assert not (tmp_path / "cache").exists()


def test_train_shards_never_touches_user_files(identity_cache, tmp_path):
    pytest.importorskip("webdataset")
    mine = _user_folder(tmp_path / "mine")
    before, cache_before = _snapshot(mine), _snapshot(identity_cache)
    _refused(_run("train-shards", identity_cache, mine), "did not write")
    _refused(_run("train-shards", identity_cache, mine, "--overwrite"), "did not write")
    _refused(_run("train-shards", identity_cache, identity_cache, "--overwrite"), "input")
    out = tmp_path / "shards"
    assert _run("train-shards", identity_cache, out, "--shard-size", "2").exit_code == 0
    (out / "shard-000099.tar").write_bytes(b"the user's own tar, not in our manifest")
    again = _run("train-shards", identity_cache, out, "--shard-size", "100", "--overwrite")
    assert again.exit_code == 0, again.output
    assert (out / "shard-000099.tar").read_bytes().startswith(b"the user's")  # only files we listed are removed
    assert _snapshot(mine) == before and _snapshot(identity_cache) == cache_before


def test_train_never_touches_user_files(identity_cache, tmp_path):
    mine = _user_folder(tmp_path / "mine")
    before, cache_before = _snapshot(mine), _snapshot(identity_cache)
    base = ["train", ROOT / "configs" / "tiny.yaml", "--model.pretrained=/nonexistent/model",
            f"--data.cache={identity_cache}"]  # fmt: skip
    # refused before any model loads: the model path does not even exist
    _refused(_run(*base, f"--output.dir={mine}"), "did not write", "output.dir")
    _refused(_run(*base, f"--output.dir={identity_cache}"), "input")
    _refused(_run(*base, f"--output.dir={mine / 'thesis.txt'}"), "is a file")
    assert _snapshot(mine) == before and _snapshot(identity_cache) == cache_before


@pytest.mark.world  # the default model: the miniature world's
def test_generate_adds_files_and_replaces_none(tmp_path):
    mine = _user_folder(tmp_path / "mine")
    before = _snapshot(mine)
    result = _run("generate", "--ref", PORTRAIT, "--prompt", "a photo", "--seed", "1", "--steps", "2", "--out", mine)
    assert result.exit_code == 0, result.output
    after = _snapshot(mine)
    assert {k: after[k] for k in before} == before  # every user file unchanged, a new numbered file beside them
    assert len(after) == len(before) + 1
    _refused(_run("generate", "--ref", PORTRAIT, "--prompt", "a", "--out", mine / "thesis.txt"), "is a file")
    assert _snapshot(mine) == after


@pytest.mark.world  # the default model: the miniature world's
def test_faces_writes_nothing(tmp_path):
    mine = _user_folder(tmp_path / "mine")
    before = _snapshot(mine)
    result = _run("faces", mine / "0001-a-photo-seed1.png", "--backend", "mini", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["images"][0]["faces"]
    assert _snapshot(mine) == before and sorted(p.name for p in mine.iterdir()) == sorted(
        ["notes", "thesis.txt", "config.yaml", "cache.json", "0001-a-photo-seed1.png"]
    )


def test_eval_never_touches_user_files(tmp_path):
    mine = _user_folder(tmp_path / "mine")
    people = tmp_path / "people"
    people.mkdir()
    (people / "ann.png").write_bytes(PORTRAIT.read_bytes())
    before, people_before = _snapshot(mine), _snapshot(people)
    base = ["eval", "--model", "/nonexistent/model", "--adapter", "/nonexistent/adapter.safetensors",
            "--identities", people]  # fmt: skip
    _refused(_run(*base, "--output", mine), "did not write")  # before the (missing) model is looked at
    _refused(_run(*base, "--output", people), "input")
    assert _snapshot(mine) == before and _snapshot(people) == people_before


@pytest.mark.world  # the default model: the miniature world's
def test_retrain_never_touches_user_files(tmp_path):
    from infinite_id.errors import OutputPathError
    from infinite_id.world.trainers.retrain import retrain

    mine = _user_folder(tmp_path / "mine")
    before = _snapshot(mine)
    with pytest.raises(OutputPathError, match="did not write"):
        retrain(mine, only=["face_encoder"], quick=True, progress=False)
    assert _snapshot(mine) == before


def test_serve_refuses_a_busy_port_before_loading(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = _run("serve", "--port", port, "--model", "/nonexistent/model", "--adapter", "/nonexistent/a")
    assert result.exit_code == 2 and "--port" in result.output and "cannot listen" in result.output, result.output
