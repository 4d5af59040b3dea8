"""The evaluation runner on a tiny real pipeline: every output written and parseable, method presets behave,
an interrupted run resumes without redoing or losing work, and other settings are refused."""

from __future__ import annotations

import csv
import json

import pytest
from PIL import Image

from infinite_id.evaluation import (
    ClipScorer,
    EvalSettings,
    EvaluationRunner,
    FaceSimilarity,
    PromptSet,
    ResumeMismatchError,
    load_identities,
    read_records,
    resolve_methods,
    write_report,
)
from infinite_id.faces.base import FaceEncoderInfo

FACE_DIM = 16
PROMPTS = [PromptSet("mini", ("a photo of a {class_word} on the beach", "a {class_word} in anime style"))]


@pytest.fixture
def identity_dir(tmp_path, images):
    folder = tmp_path / "identities"
    folder.mkdir()
    images.smooth(0).save(folder / "alice.png")
    (folder / "bob").mkdir()
    images.smooth(1).save(folder / "bob" / "1.png")
    images.smooth(2).save(folder / "bob" / "2.jpg")
    (folder / "identities.json").write_text(json.dumps({"alice": "woman", "bob": {"class_word": "man"}}))
    return folder


@pytest.fixture
def setup(make_pipe, pixel_analyzer, tiny_clip, eval_face_analyzer):
    def _setup(output, methods=("infinite-id", "no-adain", "base-model"), seeds=(0,), identities=None, **kw):
        pipe = make_pipe("sd15")
        pipe.set_face_analyzer(pixel_analyzer(FaceEncoderInfo(backend="precomputed", model="test", dim=FACE_DIM)))
        model, tokenizer, processor = tiny_clip
        settings = EvalSettings(
            model="tiny-sd15",
            adapter="random",
            methods=list(methods),
            seeds=list(seeds),
            num_inference_steps=2,
            guidance_scale=3.0,
            clip_model="tiny-clip",
            face_encoder="pixels/eval",
            **kw,
        )
        return EvaluationRunner(
            pipe,
            output,
            settings,
            resolve_methods(methods),
            identities,
            PROMPTS,
            clip=ClipScorer(model, tokenizer=tokenizer, image_processor=processor),
            face=FaceSimilarity(eval_face_analyzer),
        )

    return _setup


def test_load_identities(identity_dir, tmp_path):
    found = load_identities(identity_dir)
    assert [(i.name, len(i.images), i.class_word) for i in found] == [("alice", 1, "woman"), ("bob", 2, "man")]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no reference photos"):
        load_identities(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        load_identities(tmp_path / "missing")


def test_evaluation_writes_records_tables_grids_and_curve(setup, identity_dir, tmp_path):
    out = tmp_path / "eval"
    runner = setup(
        out,
        methods=(
            "infinite-id",
            "no-mixed-attention",
            "mutual-attention",
            "no-adain",
            "full-adain",
            "identity-only",
            "base-model",
        ),
        identities=load_identities(identity_dir)[:1],
        curve_scales=[0.0, 0.5, 1.0],
        curve_methods=["infinite-id"],
    )
    calls = []
    original = runner.pipe.__class__.__call__
    runner.pipe.__class__.__call__ = lambda self, *a, **k: calls.append(k) or original(self, *a, **k)
    try:
        records = runner.run()
    finally:
        runner.pipe.__class__.__call__ = original
    jobs = runner.jobs()
    # 7 methods at the main scale + 2 extra curve scales, for 2 prompts; base-model shares the infinite-id call
    assert len(records) == len(jobs) == 2 * (7 + 2)
    assert len(calls) == 2 * (6 + 2)
    assert sum(k["return_text_stream"] for k in calls) == 2
    assert {r["key"] for r in records} == {j.key for j in jobs}
    for r in records:
        assert -1 <= r["clip_t"] <= 1 and -1 <= r["clip_i"] <= 1
        assert r["face_detected"] == (r["face_sim"] is not None)
        assert (out / r["image"]).is_file()
    by_key = {(r["method"], r["prompt_index"], r["id_scale"]): r for r in records}
    # adain="auto" on a non-style prompt is AdaIN off: same pixels as the no-adain preset; on a style prompt it is not
    same = [Image.open(out / by_key[(m, 0, 1.0)]["image"]).tobytes() for m in ("infinite-id", "no-adain")]
    assert same[0] == same[1]
    # the identity-only preset sends the empty prompt but is scored against the evaluated one
    assert any(k.get("self_attention") == "independent" and k["id_scale"] == 1.0 for k in calls)

    settings = json.loads((out / "settings.json").read_text())
    written = write_report(records, out, settings, {"alice": [identity_dir / "alice.png"]})
    md = (out / "results.md").read_text()
    for label in ("Infinite-ID (full)", "mixed -> mutual attention", "text stream (base model, no identity)"):
        assert label in md
    assert "counts an image without a detected face as 0" in md
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["method"] for r in rows} == {m.name for m in runner.methods}
    assert all(float(r["n_images"]) == 2 for r in rows)
    assert 0 <= float(rows[0]["face_detection_rate"]) <= 1
    table = json.loads((out / "results.json").read_text())
    assert table["settings"]["seeds"] == [0] and len(table["rows"]) == 7
    curve = json.loads((out / "tradeoff.json").read_text())
    assert [p["id_scale"] for p in curve] == [0.0, 0.5, 1.0]
    with Image.open(written["tradeoff"]) as plot:
        assert plot.size[0] > 100
    with Image.open(written["grids"][0]) as grid:
        assert grid.size[1] == 7 * (192 + 14)


def test_interrupted_evaluation_resumes_where_it_stopped(setup, identity_dir, tmp_path):
    out = tmp_path / "eval"
    identities = load_identities(identity_dir)
    runner = setup(out, identities=identities, seeds=(0,))
    total = len(runner.jobs())

    def stop_after_five(done, _total):
        if done == 5:
            raise KeyboardInterrupt

    runner.progress = stop_after_five
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    first = read_records(out / "records.jsonl")
    assert len(first) == 5
    with open(out / "records.jsonl", "a") as fh:  # a write cut short by the interruption
        fh.write('{"key": "infinite-id/bob/mini/1/0/1", "clip_')

    resumed = setup(out, identities=identities, seeds=(0,))
    generated = []
    resumed.progress = lambda done, _total: generated.append(done)
    records = resumed.run()
    assert len(generated) == total - 5
    keys = [r["key"] for r in records]
    assert len(keys) == len(set(keys)) == total
    assert read_records(out / "records.jsonl")[:5] == first
    assert len(read_records(out / "records.jsonl")) == total

    again = setup(out, identities=identities, seeds=(0,))
    again.progress = lambda done, _total: pytest.fail("nothing should be generated")
    assert len(again.run()) == total

    with pytest.raises(ResumeMismatchError, match="seeds"):
        setup(out, identities=identities, seeds=(0, 1)).run()


def test_fast_preset_is_a_method_of_its_own_beside_the_text_stream(setup, identity_dir, tmp_path, monkeypatch):
    assert "infinite-id-fast" not in resolve_methods(None)  # a speed trade-off, not a default row
    runner = setup(
        tmp_path / "eval-fast",
        methods=("infinite-id-fast", "base-model"),
        identities=load_identities(identity_dir)[:1],
    )
    calls = []
    call = type(runner.pipe).__call__

    def spy(self, *args, **kwargs):
        calls.append((kwargs.get("text_stream", "exact"), kwargs.get("return_text_stream")))
        return call(self, *args, **kwargs)

    monkeypatch.setattr(type(runner.pipe), "__call__", spy)
    records = runner.run()
    # the fast call never asks for the text stream; the base-model row gets its own exact call
    assert ("window", False) in calls and ("exact", True) in calls
    assert {r["method"] for r in records} == {"infinite-id-fast", "base-model"}
