"""Bad training set-ups end in one line naming the fix, found before the model loads (issue 13, classes 3 and 5);
a programming error still shows its traceback; a damaged newest checkpoint falls back to the previous one."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from cli_results import assert_one_line_error
from typer.testing import CliRunner

from infinite_id.cli import app

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny.yaml"


def _run(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def one_photo_cache(tmp_path) -> Path:
    from conftest import FACE_DIM, write_identity_dataset

    from infinite_id.faces.base import FaceEncoderInfo
    from infinite_id.training.preprocess import prepare_cache

    manifest = write_identity_dataset(tmp_path / "one", identities=1, photos=1)
    prepare_cache(manifest, tmp_path / "one-cache", face_encoder=FaceEncoderInfo("precomputed", "test", FACE_DIM))
    return tmp_path / "one-cache"


def test_bad_training_setups_end_in_one_line(tiny_model_dirs, identity_cache, one_photo_cache, tmp_path):
    model = tiny_model_dirs["sd15"]
    (tmp_path / "empty-cache").mkdir()
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "model_index.json").write_text("{not json")
    (tmp_path / "a-file").write_text("x")

    def train(*overrides: str, cache: Path = identity_cache, out: Path | None = None):
        out = out or tmp_path / "run"
        return _run("train", TINY, f"--model.pretrained={model}", f"--data.cache={cache}", f"--output.dir={out}",
                    *overrides)  # fmt: skip

    cases = {
        "empty cache": (train(cache=tmp_path / "empty-cache"), ["no cache.json", "train-prepare"]),
        "missing cache": (train(cache=tmp_path / "nowhere"), ["not a training cache"]),
        "one photo, batch 2": (train(cache=one_photo_cache), ["1 photos", "batch_size"]),
        "batch larger than the set": (train("--train.batch_size=64"), ["cannot fill one batch"]),
        "missing model": (train("--model.pretrained=/nonexistent/model"), ["/nonexistent/model"]),
        "broken model_index.json": (train(f"--model.pretrained={broken}"), ["broken-model"]),
        "learning rate nan": (train("--train.learning_rate=nan"), ["learning_rate", "finite"]),
        "resume latest, no checkpoint": (train("--output.resume=latest"), ["no complete checkpoint"]),
        "output.dir a file": (train(out=tmp_path / "a-file"), ["is a file"]),
        "fp16 on the CPU": (train("--train.mixed_precision=fp16"), ["fp16", "GPU"]),
        "unknown key": (train("--train.bogus=1"), ["bogus"]),
    }
    for name, (result, words) in cases.items():
        try:
            assert_one_line_error(result, *words)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None
    unknown_backend = _run("train-prepare", tmp_path / "empty-cache", "--out", tmp_path / "c", "--backend", "nope")
    assert_one_line_error(unknown_backend, "--backend")
    assert not (tmp_path / "run").exists()  # nothing was started


def test_a_programming_error_keeps_its_traceback(identity_cache, tmp_path, monkeypatch):
    import infinite_id.training.trainer as trainer

    def broken(*args, **kwargs):
        raise ValueError("a bug, not the user's fault")

    monkeypatch.setattr(trainer, "load_components", broken)
    result = _run("train", TINY, "--model.pretrained=whatever", f"--data.cache={identity_cache}",
                  f"--output.dir={tmp_path / 'run'}")  # fmt: skip
    assert result.exit_code == 1 and isinstance(result.exception, ValueError), result.output


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous(make_config, tmp_path, caplog):
    from accelerate.state import AcceleratorState, GradientState

    from infinite_id.training.checkpointing import list_checkpoints
    from infinite_id.training.trainer import train

    def config(steps: int):
        every_step = {"checkpoint_every": 1, "keep_checkpoints": 3}
        return make_config(out=tmp_path / "run", train={"max_steps": steps}, output=every_step)

    train(config(2))
    root = tmp_path / "run" / "checkpoints"
    newest = list_checkpoints(root)[-1]
    assert newest.name == "step-00000002"
    for weights in newest.glob("*.safetensors"):  # a copy cut short
        weights.write_bytes(weights.read_bytes()[:100])
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    with caplog.at_level(logging.WARNING, logger="infinite_id.training.trainer"):
        resumed = train(config(3))
    assert resumed.resumed_from.name == "step-00000001" and resumed.global_step == 3
    assert any("damaged" in r.message and "step-00000002" in r.message for r in caplog.records)
    state = json.loads((resumed.resumed_from / "trainer_state.json").read_text())
    assert state["global_step"] == 1


def test_the_accelerate_entry_point_prints_one_line_too(identity_cache, tmp_path, capsys):
    from infinite_id.training import main

    code = main([str(TINY), "--model.pretrained=x", f"--data.cache={identity_cache}", "--train.learning_rate=inf",
                 f"--output.dir={tmp_path / 'run'}"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("Error:") and "learning_rate" in err[0], err
