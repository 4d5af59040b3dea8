"""An adapter's header is untrusted input: validated (types, ranges, the file's own tensor shapes) before anything is
built from it, and NaN/inf weights are refused (issue 13, class 2)."""

from __future__ import annotations

import json
import resource
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from infinite_id.adapter import MAX_METADATA_SIZE, AdapterError, load_adapter_file

PORTRAIT = Path(__file__).resolve().parents[1] / "examples" / "portraits" / "woman_1.png"


@pytest.fixture
def saved(make_pipe, tmp_path) -> Path:
    return make_pipe("sd15").save_adapter(tmp_path / "adapter.safetensors")


def _rewrite(path: Path, edit=None, header_text: str | None = None, tensors_edit=None) -> Path:
    """Rewrite ``path`` with its metadata (a dict) passed through ``edit``, or replaced by ``header_text``."""
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["infinite_id"])
    if edit is not None:
        edit(meta)
    if tensors_edit is not None:
        tensors_edit(tensors)
    out = path.with_name("tampered.safetensors")
    save_file(
        tensors, str(out), metadata={"infinite_id": header_text if header_text is not None else json.dumps(meta)}
    )
    return out


def _set(section: str | None, key: str, value):
    def edit(meta):
        (meta[section] if section else meta)[key] = value

    return edit


def _drop(section: str | None, key: str):
    def edit(meta):
        (meta[section] if section else meta).pop(key)

    return edit


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (_set("projection", "face_hidden_dim", 4194304), ["face_hidden_dim", str(MAX_METADATA_SIZE)]),
        (_set("projection", "face_num_tokens", -4), ["face_num_tokens"]),
        (_set("projection", "clip_dim", "wide"), ["clip_dim", "'wide'"]),
        (_set("projection", "clip_dim", 2.5), ["clip_dim"]),
        (_set("projection", "face_dim", True), ["face_dim"]),
        (_set("projection", "clip_mapper", "magic"), ["clip_mapper"]),
        (_set("face_encoder", "dim", None), ["face_encoder.dim"]),
        (_drop("face_encoder", "model"), ["face_encoder", "lacks", "model"]),
        (_drop(None, "num_attention_layers"), ["lacks", "num_attention_layers"]),
        (_set("clip_encoder", "surprise", 1), ["clip_encoder", "unknown fields", "surprise"]),
        (_set(None, "extra_field", 1), ["unknown fields", "extra_field"]),
        (_set(None, "projection", [1, 2]), ["projection", "JSON object"]),
        (_set(None, "base_family", "sd9"), ["base_family"]),
        (_set(None, "format_version", "one"), ["format_version"]),
        (_set("projection", "face_dim", 17), ["inconsistent", "face_dim"]),
        (_set("projection", "face_hidden_dim", 64), ["do not match its metadata", "face_mapper"]),
    ],
)
def test_lying_metadata_is_refused_in_one_sentence(saved, edit, words):
    with pytest.raises(AdapterError) as info:
        load_adapter_file(_rewrite(saved, edit))
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


@pytest.mark.parametrize("header", ["[1, 2, 3]", "not json", '"a string"', "null"])
def test_a_header_that_is_not_an_object_is_refused(saved, header):
    with pytest.raises(AdapterError, match="JSON"):
        load_adapter_file(_rewrite(saved, header_text=header))


def test_huge_sizes_that_pass_the_range_check_are_caught_by_shape_before_any_allocation(saved):
    """A header within the ranges but describing a 16 GiB mapper (65536 x 65536) is refused by the file's own
    tensor shapes, which are read without building the mapper (it is built on the meta device)."""

    def huge(meta):
        meta["projection"]["clip_dim"] = MAX_METADATA_SIZE
        meta["projection"]["clip_mapper"] = "mlp"

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(AdapterError, match="do not match its metadata"):
        load_adapter_file(_rewrite(saved, huge))
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 1024 * 1024  # far less than 1 GiB (the mapper would take 16)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_infinite_weights_are_refused(saved, bad):
    def poison(tensors):
        key = next(k for k in tensors if k.startswith("image_proj."))
        tensors[key] = tensors[key].clone().view(-1).index_fill_(0, torch.tensor([0]), bad).view_as(tensors[key])

    with pytest.raises(AdapterError, match="NaN or infinite"):
        load_adapter_file(_rewrite(saved, tensors_edit=poison))


@pytest.mark.world  # the default model: the miniature world's
def test_the_cli_prints_a_lying_adapter_in_one_line(saved, tiny_model_dirs):
    from infinite_id.cli import app

    tampered = _rewrite(saved, _set("projection", "face_hidden_dim", 4194304))
    result = CliRunner().invoke(
        app,
        ["generate", "--ref", str(PORTRAIT), "--prompt", "a photo", "--model", str(tiny_model_dirs["sd15"]),
         "--adapter", str(tampered), "--face-backend", "mini", "--out", str(saved.parent / "out")],
    )  # fmt: skip
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    errors = [line for line in result.output.splitlines() if "Error" in line]
    assert len(errors) == 1 and "face_hidden_dim" in errors[0], result.output
    assert not (saved.parent / "out").exists()
