"""``infinite-id generate`` / ``info`` / ``serve`` through the real command line (typer's runner, in-process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from infinite_id.cli import app

ROOT = Path(__file__).resolve().parents[2]
ASTRONAUT = ROOT / "examples" / "astronaut.jpg"  # a real photo: for real models and the insightface backend
PORTRAIT = ROOT / "examples" / "portraits" / "woman_1.png"  # a miniature-world portrait: for the default model
PROMPT = "a photo of a woman wearing a yellow sweater, on the beach"


def _run(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def _meta(path: Path) -> dict:
    with Image.open(path) as image:
        return json.loads(image.text["infinite_id"]) | {"parameters": image.text["parameters"]}


def test_help_teaches_the_first_commands():
    top = _run("--help")
    assert top.exit_code == 0
    first = "infinite-id generate --ref examples/portraits/woman_1.png"
    for text in ("Start here", first, "serve", "info", "miniature"):
        assert text in top.output
    generate = _run("generate", "--help")
    options = "--ref --embedding --prompts-file --style --seed --id-scale --adain --size --model --adapter"
    options += " --image-encoder --device --dtype --also-text-stream Examples"
    for option in options.split():
        assert option in generate.output, option


@pytest.mark.world  # the default model: the miniature world's
def test_first_readme_command_runs_offline_with_the_default_model(tmp_path):
    out = tmp_path / "outputs"
    flags = ("--prompt", PROMPT, "--out", out, "--steps", "3", "--also-text-stream")
    result = _run("generate", "--ref", PORTRAIT, *flags, "--seed", "4-5", "--style", "none", "--style", "watercolor")
    assert result.exit_code == 0, result.output
    assert "miniature model" in result.output and "SMOKE" not in result.output
    files = sorted(out.glob("*.png"))
    assert len(files) == 8  # 2 styles x 2 seeds x (identity + text stream)
    assert all(str(f) in result.output for f in files)
    identity = [f for f in files if not f.name.endswith("-text.png")]
    metas = [_meta(f) for f in identity]
    assert sorted(m["settings"]["seed"] for m in metas) == [4, 4, 5, 5]
    styled = next(m for m in metas if m["settings"]["style"] == "watercolor")
    assert styled["prompt"] == f"{PROMPT}, in watercolor painting style"
    assert styled["stream"] == "identity" and styled["random_weights"] is False
    assert styled["settings"]["steps"] == 3 and styled["face_encoder"].startswith("mini/mini_face_encoder-")
    assert styled["size"] == [64, 64] and "miniature model" in styled["model"]
    assert "Seed: " in styled["parameters"] and "CFG scale: 5.0" in styled["parameters"]
    assert _meta(next(f for f in files if f.name.endswith("-text.png")))["stream"] == "text"
    # Same seed, same settings: same image; files are never replaced.
    again = _run("generate", "--ref", PORTRAIT, *flags, "--seed", "4", "--style", "none", "-q")
    assert again.exit_code == 0, again.output
    new = sorted(set(out.glob("*.png")) - set(files))
    assert len(new) == 2 and new[0].name.startswith("0005-")
    repeated = next(f for f in new if not f.name.endswith("-text.png"))
    first = next(f for f in identity if _meta(f)["settings"] == _meta(repeated)["settings"])
    assert list(Image.open(first).getdata()) == list(Image.open(repeated).getdata())


@pytest.mark.world  # the default model: the miniature world's
def test_fast_preset_runs_and_is_recorded(tmp_path):
    out = tmp_path / "outputs"
    result = _run(
        "generate", "--ref", PORTRAIT, "--prompt", PROMPT, "--out", out, "--steps", "5", "--seed", "3", "--fast"
    )
    assert result.exit_code == 0, result.output
    (image,) = sorted(out.glob("*.png"))
    assert _meta(image)["settings"]["fast"] is True


BAD_ARGUMENTS = [
    ((), "--ref"),
    (("--ref", "missing.jpg", "--prompt", "x"), "does not exist"),
    (("--ref", PORTRAIT), "--prompt"),
    (("--ref", PORTRAIT, "--prompt", "  "), "empty"),
    (("--ref", PORTRAIT, "--prompt", "x", "--style", "cubist"), "cubist"),
    (("--ref", PORTRAIT, "--prompt", "x", "--seed", "a-b"), "not a seed"),
    (("--ref", PORTRAIT, "--prompt", "x", "--steps", "0"), "steps"),
    (("--ref", PORTRAIT, "--prompt", "x", "--guidance", "-1"), "guidance"),
    (("--ref", PORTRAIT, "--prompt", "x", "--id-scale", "9"), "ID scale"),
    (("--ref", PORTRAIT, "--prompt", "x", "--size", "big"), "WIDTHxHEIGHT"),
    (("--ref", PORTRAIT, "--prompt", "x", "--size", "5000"), "4096"),
    (("--ref", PORTRAIT, "--prompt", "x", "--adain", "sometimes"), "auto"),
    (("--ref", PORTRAIT, "--prompt", "x", "--face-backend", "magic"), "insightface"),
    (("--ref", PORTRAIT, "--prompt", "x", "--multi-image", "sum"), "concat"),
    (("--ref", PORTRAIT, "--prompt", "x", "--out", ASTRONAUT), "is a file"),
    (("--ref", PORTRAIT, "--prompt", "x", "--prompts-file", "nope.txt"), "does not exist"),
    (("--ref", PORTRAIT, "--prompt", "x", "--dtype", "float8"), "dtype"),
    (("--ref", PORTRAIT, "--prompt", "x", "--fast", "--also-text-stream"), "--fast"),
    (("--ref", PORTRAIT, "--prompt", "x", "--device", "cuda:7"), "CUDA"),
    (("--ref", PORTRAIT, "--prompt", "x", "--adapter", "a.safetensors"), "need --model"),
    (("--ref", PORTRAIT, "--prompt", "x", "--model", "./no/such/model", "--adapter", "a.bin"), "does not exist"),
]


@pytest.mark.parametrize(("args", "message"), BAD_ARGUMENTS, ids=[m for _, m in BAD_ARGUMENTS])
def test_bad_arguments_are_clear_errors_and_write_nothing(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _run("generate", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not list(tmp_path.rglob("*.png"))


def test_a_photo_without_a_face_or_not_a_photo_is_a_clear_error(tmp_path):
    blank = tmp_path / "wall.png"
    Image.new("RGB", (256, 256), (200, 180, 160)).save(blank)
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    for ref, message in ((blank, "No face found"), (text, "not an image")):
        result = _run("generate", "--ref", ref, "--prompt", PROMPT, "--out", tmp_path / "o", "--steps", "1")
        assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def real_model(tmp_path_factory, save_tiny_adapter_model):
    """A base model folder and an Infinite-ID adapter for the insightface buffalo_s encoder, saved to disk."""
    return save_tiny_adapter_model(tmp_path_factory.mktemp("real_model"))


def test_model_and_adapter_load_through_the_real_loaders(real_model, tmp_path):
    folder, adapter, _ = real_model
    result = _run("generate", "--ref", ASTRONAUT, "--prompt", PROMPT, "--model", folder, "--adapter", adapter,
                  "--out", tmp_path, "--steps", "2", "--seed", "1", "--size", "64x48", "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "SMOKE" not in result.output
    (png,) = tmp_path.glob("*.png")
    meta = _meta(png)
    assert meta["random_weights"] is False and "Infinite-ID adapter" in meta["model"] and meta["size"] == [64, 48]
    # The adapter's face encoder is enforced: dlib (128-d) is refused with a sentence.
    refused = _run("generate", "--ref", ASTRONAUT, "--prompt", PROMPT, "--model", folder, "--adapter", adapter,
                   "--face-backend", "dlib", "--out", tmp_path / "x")  # fmt: skip
    assert refused.exit_code == 2 and "mismatch" in refused.output


def test_an_ip_adapter_plus_face_file_is_used_as_the_identity_stream(real_model, tmp_path):
    from ip_adapter_layouts import image_proj, ip_adapter, save

    folder, _, pipe = real_model
    g = torch.Generator().manual_seed(0)
    path = tmp_path / "ip-adapter-plus-face_sd15.bin"
    save(path, image_proj("plus", 32, 32, 512, g), ip_adapter(pipe.unet, g))
    result = _run("generate", "--ref", ASTRONAUT, "--prompt", "a woman in anime style", "--model", folder,
                  "--adapter", path, "--out", tmp_path / "out", "--steps", "2", "--seed", "0")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "IP-Adapter plus" in _meta(next((tmp_path / "out").glob("*.png")))["model"]


@pytest.mark.parametrize(
    "backend",
    [pytest.param(("--face-backend", "mini"), marks=pytest.mark.world),
     ("--face-backend", "insightface", "--face-model", "buffalo_s")],
    ids=["mini", "buffalo_s"],
)  # fmt: skip
def test_faceid_files_refuse_another_face_encoder_from_the_command_line(backend, real_model, tmp_path):
    # FaceID was trained on insightface buffalo_l embeddings: the CLI (and the web UI, through the same
    # open_generator) must refuse any other analyzer as the Python API does, not take the analyzer as the truth.
    from ip_adapter_layouts import image_proj, ip_adapter, save

    folder, _, pipe = real_model
    g = torch.Generator().manual_seed(0)
    path = tmp_path / "ip-adapter-faceid-plusv2_sd15.bin"
    save(path, image_proj("faceid-plus", 32, 32, 512, g), ip_adapter(pipe.unet, g))
    result = _run("generate", "--ref", ASTRONAUT, "--prompt", PROMPT, "--model", folder, "--adapter", path,
                  *backend, "--out", tmp_path / "out", "--steps", "1", "--device", "cpu")  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "mismatch" in result.output and "buffalo_l" in result.output
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.png"))


def test_faceid_file_runs_on_embeddings_of_its_own_encoder(real_model, tmp_path):
    from ip_adapter_layouts import image_proj, ip_adapter, save

    from infinite_id.faces import save_embeddings
    from infinite_id.faces.base import FaceEncoderInfo

    folder, _, pipe = real_model
    g = torch.Generator().manual_seed(0)
    path = tmp_path / "ip-adapter-faceid_sd15.bin"
    save(path, image_proj("faceid", 32, 32, 512, g), ip_adapter(pipe.unet, g))
    embedding = tmp_path / "face.safetensors"
    save_embeddings(embedding, torch.randn(512, generator=g).numpy(), FaceEncoderInfo("insightface", "buffalo_l", 512))
    result = _run("generate", "--embedding", embedding, "--prompt", PROMPT, "--model", folder, "--adapter", path,
                  "--out", tmp_path / "out", "--steps", "1", "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert _meta(next((tmp_path / "out").glob("*.png")))["face_encoder"] == "insightface/buffalo_l (512-d)"


@pytest.mark.world  # the default model: the miniature world's
def test_precomputed_embedding_replaces_the_face_model(tmp_path):
    from infinite_id.faces import get_face_analyzer, save_embeddings

    analyzer = get_face_analyzer("mini")  # the default model's own face encoder
    crop = analyzer.identity(PORTRAIT)
    embedding = tmp_path / "woman_1.safetensors"
    save_embeddings(embedding, crop.embedding, analyzer.info)
    face = tmp_path / "face.png"
    crop.clip_crop.save(face)
    result = _run("generate", "--embedding", embedding, "--ref", face, "--prompt", PROMPT, "--out", tmp_path / "o",
                  "--steps", "2", "--seed", "0")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert _meta(next((tmp_path / "o").glob("*.png")))["face_encoder"] == analyzer.info.describe()
    # An embedding from another face encoder is refused with a sentence, not a shape error.
    other = tmp_path / "insightface.safetensors"
    astronaut = get_face_analyzer("insightface").identity(ASTRONAUT)
    save_embeddings(other, astronaut.embedding, get_face_analyzer("insightface").info)
    refused = _run("generate", "--embedding", other, "--ref", face, "--prompt", PROMPT, "--out", tmp_path / "x")
    assert refused.exit_code == 2 and "mismatch" in refused.output, refused.output


@pytest.mark.world  # the default model: the miniature world's
def test_info_reports_versions_devices_and_offline_face_models():
    result = _run("info", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["packages"]["torch"].startswith("2.") and data["devices"]["cpu"]["threads"] >= 1
    assert data["face_backends"]["insightface"]["available"] is True
    assert "buffalo_s" in data["face_backends"]["insightface_packs"]
    assert "miniature model" in data["default_model"]
    assert data["face_backends"]["mini"]["available"] is True
    human = _run("info")
    assert human.exit_code == 0 and "face backends" in human.output


@pytest.mark.parametrize(("args", "message"), [(("--concurrency", "0"), "1 to 64"), (("--max-queue", "-1"), "0 to")])
def test_serve_refuses_bad_limits(args, message):
    result = _run("serve", *args)
    assert result.exit_code == 2 and message in result.output
