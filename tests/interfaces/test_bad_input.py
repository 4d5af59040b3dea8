"""``generate`` and ``serve`` under careless input (issue 13): arguments and ``--out`` are checked before the model
loads (class 3); ranges come from the model and its scheduler (class 4); a bug keeps its traceback (class 5);
outputs name models, never the machine's paths, and record the face used (class 7)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from infinite_id.cli import app

ROOT = Path(__file__).resolve().parents[2]
PORTRAIT = ROOT / "examples" / "portraits" / "woman_1.png"
ASTRONAUT = ROOT / "examples" / "astronaut.jpg"


def _run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _error_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if "Error" in line]
    assert len(errors) == 1, result.output
    return errors[0]


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if the model is loaded at all: the refusal must come first."""
    import infinite_id.generation as generation

    def forbidden(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(generation, "open_generator", forbidden)


@pytest.mark.parametrize(
    ("out", "words"),
    [
        ("{file}", ["is a file"]),
        ("{file}/sub", ["which is a file"]),
        ("/proc/infinite-id-out", ["cannot be written"]),  # a read-only file system, even for root
    ],
)
def test_generate_checks_out_before_the_model_loads(tmp_path, no_model_load, out, words):
    (tmp_path / "a-file").write_text("x")
    target = out.format(file=tmp_path / "a-file")
    line = _error_line(_run("generate", "--ref", PORTRAIT, "--prompt", "a photo", "--out", target))
    for word in words:
        assert word in line, line
    assert (tmp_path / "a-file").read_text() == "x"


def test_generate_ranges_come_from_the_model_and_its_scheduler(tmp_path):
    from infinite_id.generation import open_generator

    limits = open_generator(device="cpu").limits  # the default model's (64 px miniature: 16 to 128, DDIM: 999)
    out = tmp_path / "out"
    too_many = str(limits.max_steps + 1)
    steps = _error_line(_run("generate", "--ref", PORTRAIT, "--prompt", "a", "--steps", too_many, "--out", out))
    assert f"1 to {limits.max_steps}" in steps or "between 1 and 1000" in steps
    size = _error_line(_run("generate", "--ref", PORTRAIT, "--prompt", "a", "--size", "4096", "--out", out))
    assert f"{limits.min_size} to {limits.max_size}" in size and f"native size is {limits.native_size}" in size
    odd = str(limits.native_size + 1)
    odd_line = _error_line(_run("generate", "--ref", PORTRAIT, "--prompt", "a", "--size", odd, "--out", out))
    assert f"multiples of {limits.multiple}" in odd_line
    assert not out.exists()  # nothing generated, nothing written


def test_the_scheduler_decides_the_most_steps():
    from diffusers import DDIMScheduler

    from infinite_id.generation import _max_scheduler_steps

    assert _max_scheduler_steps(DDIMScheduler(steps_offset=1)) == 999  # its 1000th step would index timestep 1000
    assert _max_scheduler_steps(DDIMScheduler(steps_offset=0)) == 1000
    assert _max_scheduler_steps(DDIMScheduler(steps_offset=1, timestep_spacing="trailing")) == 1000


def test_the_model_limits_describe_themselves(make_pipe):
    from infinite_id.errors import UserInputError
    from infinite_id.generation import model_limits

    limits = model_limits(make_pipe("sd15", adapter=False))  # the tiny test model: 64 px native, VAE factor 2
    assert (limits.native_size, limits.min_size, limits.max_size, limits.multiple) == (64, 16, 128, 2)
    assert limits.max_steps == 999 and "1 to 999 steps" in limits.describe()
    limits.check(999, height=128, width=16)  # the edges are accepted
    for steps, height in ((1000, None), (0, None), (30, 130), (30, 33), (30, 14)):
        with pytest.raises(UserInputError):
            limits.check(steps, height=height)


@pytest.mark.world  # the default model: the miniature world's
def test_a_programming_error_in_generate_keeps_its_traceback(tmp_path, monkeypatch):
    from infinite_id.generation import Generator

    def broken(self, *args, **kwargs):
        raise ValueError("a bug, not the user's fault")

    monkeypatch.setattr(Generator, "generate", broken)
    result = _run("generate", "--ref", PORTRAIT, "--prompt", "a", "--steps", "2", "--out", tmp_path / "o")
    assert result.exit_code == 1 and isinstance(result.exception, ValueError), result.output


def test_a_missing_model_is_one_line(tmp_path):
    line = _error_line(_run("generate", "--ref", PORTRAIT, "--prompt", "a", "--model", tmp_path / "nowhere",
                            "--adapter", tmp_path / "a.safetensors", "--out", tmp_path / "o"))  # fmt: skip
    assert "nowhere" in line


def test_outputs_name_models_not_paths_and_record_the_face(tmp_path_factory, save_tiny_adapter_model):
    from safetensors import safe_open

    root = tmp_path_factory.mktemp("private-machine-folder")
    folder, adapter, _ = save_tiny_adapter_model(root, "my-sd15", "my-adapter.safetensors", record_base_model=True)

    with safe_open(str(adapter), "pt") as f:
        header = f.metadata()["infinite_id"]
    assert str(root) not in header and json.loads(header)["training"]["base_model"] == "my-sd15"

    out = root / "out"
    result = _run("generate", "--ref", ASTRONAUT, "--prompt", "a photo", "--model", folder, "--adapter", adapter,
                  "--out", out, "--steps", "2", "--seed", "1", "--face-index", "0")  # fmt: skip
    assert result.exit_code == 0, result.output
    (png,) = out.glob("*.png")
    with Image.open(png) as image:
        text = {k: v for k, v in image.text.items()}
    assert all(str(root) not in value for value in text.values()), text
    meta = json.loads(text["infinite_id"])
    assert meta["model"] == "my-sd15 + Infinite-ID adapter my-adapter.safetensors"
    assert meta["face_indices"] == [0] and meta["references"] == ["astronaut.jpg"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--ref", "{tmp}"), ["is a folder"]),
        (("--ref", "https://example.com/me.jpg"), ["not a URL", "https://example.com/me.jpg"]),
        (("--ref", "{tmp}/missing.jpg"), ["does not exist"]),
        (("--ref", PORTRAIT, "--prompts-file", "{tmp}"), ["--prompts-file", "is a folder"]),
        (("--ref", PORTRAIT, "--embedding", "{tmp}"), ["--embedding", "is a folder"]),
    ],
)
def test_path_slips_are_named_for_what_they_are(tmp_path, no_model_load, args, words):
    args = [str(a).format(tmp=tmp_path) for a in args]
    line = _error_line(_run("generate", *args, "--prompt", "a", "--out", tmp_path / "o"))
    for word in words:
        assert word in line, line


def test_a_safetensors_file_named_bin_is_told_to_be_renamed(tmp_path, tiny_model_dirs):
    from safetensors.torch import save_file

    disguised = tmp_path / "ip-adapter-faceid_sd15.bin"
    save_file({"x": torch.zeros(2)}, str(disguised))
    line = _error_line(_run("generate", "--ref", PORTRAIT, "--prompt", "a", "--model", tiny_model_dirs["sd15"],
                            "--adapter", disguised, "--out", tmp_path / "o"))  # fmt: skip
    assert "is a safetensors file named .bin" in line and "ip-adapter-faceid_sd15.safetensors" in line
    assert "weights_only" not in line


def test_a_sixteen_bit_grayscale_face_is_found(tmp_path):
    import numpy as np

    gray = np.asarray(Image.open(ASTRONAUT).convert("L")).astype(np.uint16) * 257
    path = tmp_path / "gray16.png"
    Image.fromarray(gray).save(path)
    assert Image.open(path).mode == "I;16"
    result = _run("faces", path, "--backend", "insightface", "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output)["images"][0]["faces"]) == 1


@pytest.mark.world  # the default model: the miniature world's
def test_a_long_prompt_is_said_to_be_cut_with_the_real_counts(tmp_path):
    long_prompt = " ".join(["a photo of a woman with red hair"] * 20)
    result = _run("generate", "--ref", PORTRAIT, "--prompt", long_prompt, "--steps", "1", "--seed", "0",
                  "--out", tmp_path / "o")  # fmt: skip
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    from infinite_id.generation import open_generator

    generator = open_generator(device="cpu")
    read = generator.pipe.tokenizer.model_max_length - 2  # without the start and end tokens
    assert f"tokens; the model reads the first {read} and ignores the rest" in text
    assert "indexing errors" not in text  # transformers' wrong guess is silenced
    assert generator.truncation_note("a photo of a woman") is None


def test_a_hub_id_behind_a_failing_proxy_is_one_line(tmp_path, monkeypatch):
    """The hub client's transport raises httpx errors (not OSError) when a proxy fails; offline, the failure is
    raised where the download would happen."""
    import httpx

    from infinite_id.pipelines import InfiniteIDPipeline

    def unreachable(*args, **kwargs):
        raise httpx.ProxyError("502 Bad Gateway from proxy")

    monkeypatch.setattr(InfiniteIDPipeline, "from_pretrained", unreachable)
    line = _error_line(_run("generate", "--ref", PORTRAIT, "--prompt", "a", "--model", "someorg/some-model",
                            "--adapter", "adapter.safetensors", "--out", tmp_path / "o"))  # fmt: skip
    assert "cannot load the base model someorg/some-model" in line and "proxy" in line
