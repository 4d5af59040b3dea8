"""The copy-paste measure: ID similarity to other photos of the person beside the reference, and their gap.

Known vectors give the exact gap; without other photos its columns are absent and the report says why; an other
photo without a face stops the run before the first image with a one-line error naming it; the command line
reads an identity's ``others/`` folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from infinite_id.cli import app
from infinite_id.evaluation import (
    EvalSettings,
    EvaluationRunner,
    FaceSimilarity,
    NoReferenceFaceError,
    PromptSet,
    load_identities,
    read_records,
    resolve_methods,
)
from infinite_id.evaluation.report import aggregate, summarize_records, write_tables
from infinite_id.faces.base import FaceEncoderInfo

#: Solid-colour "photos" and the face embedding a fake encoder gives each (unnormalised on purpose).
REFERENCE, OTHER_A, OTHER_B, GENERATED, FACELESS = (10, 0, 0), (20, 0, 0), (30, 0, 0), (40, 0, 0), (50, 0, 0)
VECTORS = {
    REFERENCE: [2.0, 0.0, 0.0],
    OTHER_A: [0.0, 3.0, 0.0],
    OTHER_B: [0.0, 0.0, 1.0],
    GENERATED: [0.8, 0.6, 0.0],
}


class KnownVectors:
    """A face encoder whose embedding of a solid-colour image is ``VECTORS[colour]``; no face in other colours."""

    info = FaceEncoderInfo(backend="known", model="vectors", dim=3)

    def detect(self, image: Image.Image) -> list[object]:
        return [object()] if image.convert("RGB").getpixel((0, 0)) in VECTORS else []

    def embed(self, image: Image.Image, face: object) -> np.ndarray:
        return np.asarray(VECTORS[image.convert("RGB").getpixel((0, 0))])


def solid(colour: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (8, 8), colour)


def test_gap_is_reference_minus_mean_other_similarity_on_known_vectors():
    face = FaceSimilarity(KnownVectors())
    refs = face.reference([solid(REFERENCE)])
    others = face.reference([solid(OTHER_A), solid(OTHER_B)], other=True)
    score = face.score(solid(GENERATED), refs, others).to_dict()
    # cosines: 0.8 to the reference; 0.6 and 0.0 to the two other photos, mean 0.3
    assert score["face_sim"] == pytest.approx(0.8)
    assert score["face_sim_other"] == pytest.approx(0.3)
    assert score["copy_paste_gap"] == pytest.approx(0.5)
    copy = face.score(solid(REFERENCE), refs, others).to_dict()  # a copy of the reference: the largest gap
    assert copy["face_sim"] == pytest.approx(1.0) and copy["copy_paste_gap"] == pytest.approx(1.0)
    missed = face.score(solid(FACELESS), refs, others).to_dict()
    assert missed["face_sim_other"] is None and missed["copy_paste_gap"] is None
    assert set(face.score(solid(GENERATED), refs).to_dict()) == {"face_detected", "face_sim", "num_faces"}


def test_an_other_photo_without_a_face_is_a_one_line_error_naming_it():
    face = FaceSimilarity(KnownVectors())
    with pytest.raises(NoReferenceFaceError, match=r"blurry\.png: another photo of the person") as error:
        face.reference([solid(OTHER_A), solid(FACELESS)], names=["a.png", "blurry.png"], other=True)
    assert "\n" not in str(error.value) and "others/" in str(error.value)


def _record(identity: str, sim: float | None, other: float | None = None, has_other: bool = True) -> dict:
    record = {"method": "infinite-id", "identity": identity, "prompt_set": "p", "prompt_index": 0, "seed": 0}
    record |= {"id_scale": 1.0, "face_detected": sim is not None, "face_sim": sim, "num_faces": int(sim is not None)}
    if has_other:
        record |= {"face_sim_other": other, "copy_paste_gap": None if sim is None else sim - other}
    return record


def test_rows_carry_the_gap_with_sem_a_missed_face_counting_zero(tmp_path):
    records = [_record("a", 0.9, 0.5), _record("a", 0.7, 0.5), _record("a", None), _record("b", 0.6, has_other=False)]
    row = summarize_records(records)
    assert row["face_sim_other"] == pytest.approx((0.5 + 0.5 + 0) / 3)
    assert row["copy_paste_gap"] == pytest.approx((0.4 + 0.2 + 0) / 3)
    assert row["copy_paste_gap_sem"] == pytest.approx(np.std([0.4, 0.2, 0.0]) / np.sqrt(3))
    settings = {"identities": {"a": {"other_photos": ["o.png:1"]}, "b": {}}}
    paths = write_tables(aggregate(records, 1.0, ["infinite-id"]), tmp_path, settings)
    md = paths["md"].read_text()
    assert "Copy-paste gap ± sem" in md and "Face sim (other photo) ± sem" in md and "(1 of 2 identities)" in md
    saved = json.loads(paths["json"].read_text())["rows"][0]
    assert saved["copy_paste_gap"] == pytest.approx(row["copy_paste_gap"]) and "copy_paste_gap_sem" in saved
    assert "copy_paste_gap_sem" in paths["csv"].read_text().splitlines()[0]


def test_without_other_photos_the_columns_are_absent_and_the_report_says_why(tmp_path):
    records = [_record("a", 0.9, has_other=False), _record("b", None, has_other=False)]
    rows = aggregate(records, 1.0, ["infinite-id"])
    assert not {"face_sim_other", "copy_paste_gap"} & set(rows[0])
    paths = write_tables(rows, tmp_path, {"identities": {"a": {}, "b": {}}})
    md = paths["md"].read_text()
    assert "Copy-paste" not in md.splitlines()[0] and "copy_paste" not in paths["csv"].read_text()
    notes = [line for line in md.splitlines() if "Copy-paste gap" in line]
    assert len(notes) == 1 and "not measured, no identity has other photos" in notes[0] and "others/" in notes[0]


@pytest.fixture
def people(tmp_path, images) -> Path:
    """carol: one reference and two other photos; dave: a single photo, no others."""
    folder = tmp_path / "people"
    (folder / "carol" / "others").mkdir(parents=True)
    images.smooth(3).save(folder / "carol" / "ref.png")
    images.smooth(4).save(folder / "carol" / "others" / "beach.png")
    images.smooth(5).save(folder / "carol" / "others" / "street.jpg")
    images.smooth(6).save(folder / "dave.png")
    return folder


def test_load_identities_reads_an_identity_s_others_folder(people, tmp_path, images):
    carol, dave = load_identities(people)
    assert [p.name for p in carol.images] == ["ref.png"]
    assert [p.name for p in carol.others] == ["beach.png", "street.jpg"]
    assert dave.others == [] and "other_photos" not in dave.settings() and len(carol.settings()["other_photos"]) == 2
    (people / "erin" / "others").mkdir(parents=True)
    images.smooth(7).save(people / "erin" / "others" / "x.png")
    with pytest.raises(ValueError, match="no reference photo"):
        load_identities(people)


def _runner(make_pipe, pixel_analyzer, eval_face_analyzer, out, identities):
    pipe = make_pipe("sd15")
    pipe.set_face_analyzer(pixel_analyzer(FaceEncoderInfo(backend="precomputed", model="test", dim=16)))
    settings = EvalSettings(model="tiny", adapter="random", methods=["infinite-id"], seeds=[0], num_inference_steps=1)
    prompts = [PromptSet("mini", ("a photo of a {class_word}",))]
    face = FaceSimilarity(eval_face_analyzer)
    return EvaluationRunner(pipe, out, settings, resolve_methods(["infinite-id"]), identities, prompts, face=face)


def test_runner_scores_the_gap_and_checks_other_photos_before_the_first_image(
    make_pipe, pixel_analyzer, eval_face_analyzer, people, images, tmp_path
):
    records = _runner(make_pipe, pixel_analyzer, eval_face_analyzer, tmp_path / "out", load_identities(people)).run()
    by_identity = {r["identity"]: r for r in records}
    carol, dave = by_identity["carol"], by_identity["dave"]
    if carol["face_detected"]:
        assert carol["copy_paste_gap"] == pytest.approx(carol["face_sim"] - carol["face_sim_other"])
    assert "face_sim_other" in carol and "copy_paste_gap" not in dave
    settings = json.loads((tmp_path / "out" / "settings.json").read_text())
    assert "other_photos" in settings["identities"]["carol"] and "other_photos" not in settings["identities"]["dave"]

    images.noise(1).save(people / "carol" / "others" / "noise.png")  # the pixel encoder finds no face in noise
    runner = _runner(make_pipe, pixel_analyzer, eval_face_analyzer, tmp_path / "out2", load_identities(people)[::-1])
    with pytest.raises(NoReferenceFaceError, match="noise.png"):
        runner.run()
    assert read_records(tmp_path / "out2" / "records.jsonl") == []  # dave comes first, yet nothing was generated


def test_command_line_reads_other_photos_and_reports_the_gap(make_pipe, tiny_model_dirs, people, images, tmp_path):
    adapter = make_pipe("sd15").save_adapter(tmp_path / "adapter.safetensors")
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
        "--methods", "infinite-id",
        "--seeds", "1",
        "--steps", "1",
        "--curve-scales", "",
        "--clip-model", "none",
        "--face-encoder", "python:eval_fakes:eval_face_analyzer",
        "--adapter-face-encoder", "python:eval_fakes:adapter_face_analyzer",
        "--device", "cpu",
        "--no-grids",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "Copy-paste gap = Face sim - Face sim (other photo)" in result.output
    assert "(1 of 2 identities)" in result.output
    row = json.loads((out / "results.json").read_text())["rows"][0]
    assert {"face_sim_other", "face_sim_other_sem", "copy_paste_gap", "copy_paste_gap_sem"} <= set(row)

    images.noise(1).save(people / "carol" / "others" / "noise.png")
    failed = CliRunner().invoke(app, [*args[:8], str(tmp_path / "out2"), *args[9:]])
    assert failed.exit_code == 2 and "noise.png" in failed.output, failed.output
    assert not (tmp_path / "out2" / "records.jsonl").exists()  # stopped before the first image
