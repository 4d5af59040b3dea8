"""The one-command reproduction of the paper's tables in the miniature world, on quick (two-step) weights."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from infinite_id.evaluation.runner import ResumeMismatchError, read_records
from infinite_id.style_prompts import names_style
from infinite_id.world.experiments.reproduce import (
    MAIN_ROWS,
    QUICK_CONFIG,
    RAW_PROMPTS,
    STYLE_PROMPTS,
    STYLE_ROWS,
    ReproduceConfig,
    check_world_claims,
    main,
    other_photo,
    reference_photo,
    reproduce,
)
from infinite_id.world.models.world_metrics import KnownLayoutFaceAnalyzer, image_fingerprint, semantic_scores
from infinite_id.world.scene.captions import parse_prompt
from infinite_id.world.scene.factors import STYLES


@pytest.fixture(scope="session")
def quick_weights(world_quick_weights):
    return world_quick_weights  # every stage, the two adapters included (two steps each; tests/conftest.py)


@pytest.fixture(scope="session")
def quick_run(quick_weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    result = reproduce(out, quick_weights, QUICK_CONFIG)
    return out, result


def test_prompt_sets_name_what_the_tables_score():
    for prompt in RAW_PROMPTS:
        named = parse_prompt(prompt.format(class_word="woman")).named()
        assert named["style"] == "photo" and "background" in named and not names_style(prompt)
        assert {"clothing", "clothing_colour", "accessory"} & set(named)
    styles = [parse_prompt(p.format(class_word="man")).named()["style"] for p in STYLE_PROMPTS]
    assert sorted(styles) == sorted(s for s in STYLES if s != "photo")
    assert all(names_style(p) for p in STYLE_PROMPTS)  # so adain="auto" turns AdaIN-mean on
    covered = {k for p in RAW_PROMPTS for k in parse_prompt(p).named()}
    assert {"background", "clothing", "clothing_colour", "accessory"} <= covered


def test_semantic_scores_skip_gender_and_unnamed_attributes():
    predicted = {"gender": "man", "style": "photo", "background": "beach", "clothing": "shirt"}
    predicted |= {"clothing_colour": "red", "accessory": "none"}
    scores = semantic_scores(predicted, {"gender": "woman", "background": "beach", "clothing_colour": "blue"})
    assert scores["attr_acc"] == 0.5 and scores["attr_background"] == 1.0 and scores["attr_clothing_colour"] == 0.0
    assert "attr_gender" not in scores and "attr_style" not in scores
    assert semantic_scores(predicted, {"gender": "man"})["attr_acc"] is None


def test_claims_are_paired_differences_with_a_verdict():
    rng = np.random.default_rng(0)
    records = []
    for i in range(12):
        cell = {"identity": f"id{i}", "prompt_index": i % 3, "seed": 0, "id_scale": 1.0}
        base = float(rng.uniform(0.2, 0.6))
        records.append(
            {**cell, "method": "infinite-id", "face_detected": True, "face_sim": base + 0.3, "clip_t": base}
        )
        records.append({**cell, "method": "mutual-attention", "face_detected": i % 2 == 0, "face_sim": base})
        records[-1]["clip_t"] = base + 0.05 + 0.001 * i  # the world disagrees: mutual attention scores higher
    claims = {c["text"]: c for c in check_world_claims({"raw-enhanced": records}, 1.0)}
    lost = claims["mutual attention loses identity"]
    assert lost["verdict"] == "agrees" and lost["n"] == 12 and lost["difference"] > 0.3  # no face counts as 0
    assert claims["mutual attention lowers CLIP-T"]["verdict"] == "disagrees"
    assert claims["identity-enhanced training raises ID similarity"]["verdict"] == "unclear"  # no joint run
    assert claims["identity-enhanced training raises ID similarity"]["n"] == 0


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="prompts"):
        ReproduceConfig(prompts=len(RAW_PROMPTS) + 1)
    with pytest.raises(ValueError, match="curve_identities"):
        ReproduceConfig(identities=2, curve_identities=3)
    with pytest.raises(ValueError, match="ID scales"):
        ReproduceConfig(curve_scales=(-1.0,))


def test_missing_adapter_is_named(quick_weights, tmp_path):
    with pytest.raises(FileNotFoundError, match="joint adapter"):
        reproduce(tmp_path, quick_weights, QUICK_CONFIG, adapters={"joint": str(tmp_path / "none.safetensors")})


def test_known_layout_beats_the_detector(quick_weights):
    image, landmarks = reference_photo(1_000_000_007)
    analyzer = KnownLayoutFaceAnalyzer(quick_weights, "face_encoder_eval")
    analyzer.threshold = 1.1  # an impossible threshold: the detector finds nothing
    assert analyzer.detect(image) == []
    analyzer.remember(image, landmarks)
    faces = analyzer.detect(Image.fromarray(np.asarray(image)))  # same pixels, another object
    assert len(faces) == 1 and np.allclose(faces[0].keypoints, np.asarray(landmarks), atol=1e-4)
    assert image_fingerprint(image) in analyzer.known_layouts


def test_quick_run_writes_both_tables_with_every_row(quick_run):
    out, result = quick_run
    tables = (out / "tables.md").read_text()
    for title in ("## Main table", "## Style table", "## Trade-off", "## The paper's claims", "Command: `", "sha256"):
        assert title in tables
    assert "| method | images | CLIP-T ± sem | CLIP-I ± sem | ID sim ± sem |" in tables  # the eval report's convention
    assert "standard error of the mean (sem)" in tables
    for row in (*MAIN_ROWS, *STYLE_ROWS):
        assert f"| {row.label} |" in tables
    assert [r["row"] for r in result["main"]] == [r.key for r in MAIN_ROWS]
    assert [r["row"] for r in result["style"]] == [r.key for r in STYLE_ROWS]
    for row in result["main"] + result["style"]:
        assert row["n_images"] == 2 * 2 * QUICK_CONFIG.seeds  # identities x prompts x seeds
        for key in ("clip_t", "clip_i", "face_sim"):
            assert -1.0 - 1e-5 <= row[key] <= 1.0 + 1e-5
        for key in ("face_detection_rate", "attr_acc", "attr_style"):
            assert 0.0 <= row[key] <= 1.0
    assert all(c["verdict"] in ("agrees", "disagrees", "unclear") and c["n"] == 4 for c in result["claims"])
    with open(out / "results.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == len(MAIN_ROWS) + len(STYLE_ROWS)
    assert json.loads((out / "results.json").read_text())["settings"]["identities"] == 2
    scales = {(p["method"], p["id_scale"]) for p in result["tradeoff"]}
    assert len(scales) == 2 * len(QUICK_CONFIG.curve_scales)
    for name in ("tradeoff.png", "grid.png", "grid_style.png"):
        with Image.open(out / name) as image:
            assert image.size[0] > 64 and image.size[1] > 64


def test_reference_copy_is_the_identity_ceiling(quick_run):
    _, result = quick_run
    for table in ("main", "style"):
        rows = {r["row"]: r for r in result[table]}
        reference = rows["reference-copy"]
        assert reference["face_sim"] == pytest.approx(1.0, abs=1e-5)
        assert reference["clip_i"] == pytest.approx(1.0, abs=1e-5)
        assert all(r["face_sim"] <= reference["face_sim"] + 1e-6 for r in rows.values())


def test_text_only_row_is_the_base_model_without_identity(quick_run, quick_weights):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    out, _ = quick_run
    records = [r for r in read_records(out / "runs" / "raw-enhanced" / "records.jsonl") if r["method"] == "base-model"]
    assert len(records) == 4
    pipe = StableDiffusionPipeline.from_pretrained(quick_weights / "base", safety_checker=None)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    record = records[-1]
    plain = pipe(
        record["prompt"],
        num_inference_steps=QUICK_CONFIG.steps,
        guidance_scale=QUICK_CONFIG.guidance_scale,
        generator=torch.Generator("cpu").manual_seed(record["seed"]),
    ).images[0]
    with Image.open(out / "runs" / "raw-enhanced" / record["image"]) as ours:
        diff = np.abs(np.asarray(ours.convert("RGB"), dtype=int) - np.asarray(plain, dtype=int))
    assert diff.max() <= 1


def test_resume_skips_finished_images_and_refuses_other_settings(quick_run, quick_weights):
    out, first = quick_run
    records = out / "runs" / "raw-enhanced" / "records.jsonl"
    before = records.read_bytes()
    again = reproduce(out, quick_weights, QUICK_CONFIG)
    assert again["generated"] == 0 and records.read_bytes() == before
    assert again["main"] == first["main"]
    with pytest.raises(ResumeMismatchError, match="num_inference_steps"):
        reproduce(out, quick_weights, dataclasses.replace(QUICK_CONFIG, steps=3))


def test_command_line_report_only(quick_run, quick_weights, capsys):
    out, _ = quick_run
    (out / "tables.md").unlink()
    main(["--weights", str(quick_weights), "--out", str(out), "--quick", "--report-only"])
    assert (out / "tables.md").is_file() and '"generated": 0' in capsys.readouterr().out
    assert "--report-only" in (out / "tables.md").read_text()


def test_the_copy_paste_gap_is_scored_against_another_photo_of_the_person(quick_run):
    out, result = quick_run
    identity = 1_000_000_000
    other, _ = other_photo(identity)
    assert image_fingerprint(other) == image_fingerprint(other_photo(identity)[0])  # fixed per identity
    assert image_fingerprint(other) != image_fingerprint(reference_photo(identity)[0])
    assert (out / "others" / f"id{identity}.png").is_file()
    for table in ("main", "style"):
        rows = {r["row"]: r for r in result[table]}
        for row in rows.values():  # every identity has its other photo, a missed face counting 0 in both
            assert row["copy_paste_gap"] == pytest.approx(row["face_sim"] - row["face_sim_other"], abs=1e-6)
            assert row["copy_paste_gap_sem"] is not None
        copy = rows["reference-copy"]  # a perfect copy: similarity 1 to the reference, less to the other photo
        assert copy["face_sim_other"] < 1.0 - 1e-3
        assert copy["copy_paste_gap"] == pytest.approx(1.0 - copy["face_sim_other"], abs=1e-5)  # float32 cosines
    records = read_records(out / "runs" / "raw-enhanced" / "records.jsonl")
    assert all("face_sim_other" in r and "copy_paste_gap" in r for r in records)
    assert "ID sim (other photo) ± sem | copy-paste gap ± sem |" in (out / "tables.md").read_text()
