"""``infinite-id eval`` end to end on a tiny saved model and adapter, loaded through the real loaders."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from infinite_id.cli import app


def test_eval_command_runs_resumes_and_rebuilds_reports(make_pipe, tiny_model_dirs, images, tmp_path):
    adapter = make_pipe("sd15").save_adapter(tmp_path / "adapter.safetensors")
    people = tmp_path / "people"
    people.mkdir()
    images.smooth(3).save(people / "carol.png")
    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text("a photo of a {class_word} in a garden\n")
    out = tmp_path / "out"
    args = [
        "eval",
        "--model", str(tiny_model_dirs["sd15"]),
        "--adapter", str(adapter),
        "--identities", str(people),
        "--output", str(out),
        "--prompts", str(prompt_file),
        "--methods", "infinite-id,no-mixed-attention,base-model",
        "--seeds", "1",
        "--steps", "2",
        "--curve-scales", "0,1",
        "--clip-model", "python:eval_fakes:tiny_clip_scorer",
        "--face-encoder", "python:eval_fakes:eval_face_analyzer",
        "--adapter-face-encoder", "python:eval_fakes:adapter_face_analyzer",
        "--device", "cpu",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "Infinite-ID (full)" in (out / "results.md").read_text()
    # no identity has other photos: no copy-paste columns, and one line says why
    assert "Copy-paste gap: not measured, no identity has other photos" in result.output
    assert "copy_paste_gap" not in json.loads((out / "results.json").read_text())["rows"][0]
    # the two methods a claim compares were run: the report states its verdict, on screen and in results.json
    assert (
        "## The paper's claims, checked" in result.output
        and "| mixed attention raises CLIP-T | clip_t |" in result.output
    )
    claims = json.loads((out / "results.json").read_text())["claims"]
    assert [c["text"] for c in claims] == [
        "mixed attention raises CLIP-T",
        "mixed attention costs a little ID similarity",
    ]
    assert all(c["n"] == 1 and c["verdict"] in ("agrees", "disagrees", "unclear") for c in claims)
    settings = json.loads((out / "settings.json").read_text())
    assert settings["face_encoder"] == "pixels/eval (32-d)"
    assert settings["training_face_encoder"] == "precomputed/test (16-d)"
    records = (out / "records.jsonl").read_text().splitlines()
    assert len(records) == 3 + 2  # three methods at scale 1, two methods with an extra curve point at scale 0
    assert (out / "tradeoff.png").is_file() and (out / "grids" / "carol-prompts.png").is_file()

    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert (out / "records.jsonl").read_text().splitlines() == records

    (out / "results.csv").unlink()
    rebuilt = CliRunner().invoke(
        app, ["eval", "--model", "x", "--adapter", "x", "--identities", str(people), "-o", str(out), "--report-only"]
    )
    assert rebuilt.exit_code == 0, rebuilt.output
    assert (out / "results.csv").is_file()

    bad = CliRunner().invoke(app, [*args[:-2], "--methods", "nope"])
    assert bad.exit_code != 0 and "unknown method" in bad.output


def test_eval_checks_the_model_ranges_before_any_image(make_pipe, tiny_model_dirs, images, tmp_path):
    adapter = make_pipe("sd15").save_adapter(tmp_path / "adapter.safetensors")
    people = tmp_path / "people"
    people.mkdir()
    images.smooth(3).save(people / "carol.png")
    base = ["eval", "--model", str(tiny_model_dirs["sd15"]), "--adapter", str(adapter), "--identities", str(people),
            "--output", str(tmp_path / "out"), "--device", "cpu", "--clip-model", "none", "--face-encoder", "none",
            "--adapter-face-encoder", "python:eval_fakes:adapter_face_analyzer"]  # fmt: skip
    steps = CliRunner().invoke(app, [*base, "--steps", "1000"])
    assert steps.exit_code == 2 and "1 to 999" in steps.output, steps.output
    size = CliRunner().invoke(app, [*base, "--height", "4096"])
    assert size.exit_code == 2 and "does not suit this model" in size.output, size.output
    assert not (tmp_path / "out" / "records.jsonl").exists()
