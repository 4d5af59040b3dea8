"""The dataset builder writes the training layout, reproducibly."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from infinite_id.world.scene.captions import PERSON_TRAITS, parse_prompt
from infinite_id.world.scene.dataset import MANIFEST_NAME, build_dataset, example_rng, read_manifest, sample_example
from infinite_id.world.scene.factors import EVAL_IDENTITIES


def test_build_dataset_layout(tmp_path):
    ids = [3, 4, EVAL_IDENTITIES.start]
    manifest = build_dataset(tmp_path / "data", ids, photos_per_identity=2, seed=5, progress=False)
    assert manifest == tmp_path / "data" / MANIFEST_NAME
    records = read_manifest(manifest)
    assert len(records) == 6
    assert not (tmp_path / "data" / (MANIFEST_NAME + ".tmp")).exists()
    for record in records:
        assert set(record) == {"identity", "image", "caption", "labels"}
        path = manifest.parent / record["image"]
        assert path.parent.name == record["identity"]
        with Image.open(path) as image:
            assert image.size == (64, 64) and image.mode == "RGB"
        assert path.with_suffix(".txt").read_text(encoding="utf-8").strip() == record["caption"]
        labels = record["labels"]
        named = parse_prompt(record["caption"]).named()
        prompt_mentions = set(labels["mentioned"]) - set(PERSON_TRAITS)
        assert set(named) == prompt_mentions - ({"accessory"} if labels["accessory"] == "none" else set())
        assert set(labels["person"]) == {"hair_style", "hair_colour", "facial_hair", "skin_tone"}
        for key, value in named.items():
            assert labels[key] == value
    splits = {r["labels"]["identity_id"]: r["labels"]["split"] for r in records}
    assert splits == {3: "train", 4: "train", EVAL_IDENTITIES.start: "eval"}


def test_build_dataset_is_reproducible_and_subset_stable(tmp_path):
    a = build_dataset(tmp_path / "a", [1, 2], 2, seed=9, progress=False)
    b = build_dataset(tmp_path / "b", [2], 2, seed=9, progress=False)
    c = build_dataset(tmp_path / "c", [2], 2, seed=10, progress=False)
    rec_a = [r for r in read_manifest(a) if r["labels"]["identity_id"] == 2]
    rec_b = read_manifest(b)
    assert json.dumps(rec_a) == json.dumps(rec_b)
    for r in rec_b:
        assert (a.parent / r["image"]).read_bytes() == (b.parent / r["image"]).read_bytes()
    assert (b.parent / rec_b[0]["image"]).read_bytes() != (c.parent / rec_b[0]["image"]).read_bytes()


def test_build_dataset_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="outside"):
        build_dataset(tmp_path, [-5], 1, progress=False)
    with pytest.raises(ValueError, match="unique"):
        build_dataset(tmp_path, [1, 1], 1, progress=False)
    with pytest.raises(ValueError, match="photos_per_identity"):
        build_dataset(tmp_path, [1], 0, progress=False)
    assert not (tmp_path / MANIFEST_NAME).exists()


def test_sample_example_labels_are_json():
    example = sample_example(8, example_rng(0, 8, 0))
    labels = json.loads(json.dumps(example.labels))
    assert labels["identity_id"] == 8 and labels["gender"] in ("man", "woman")
    assert len(labels["landmarks"]) == 5 and len(labels["face_box"]) == 4
    fixed = sample_example(8, np.random.default_rng(1), semantics=None, style_weights={"sketch": 1.0})
    assert fixed.labels["style"] == "sketch"


def test_command_line_builds_an_eval_split(tmp_path, capsys):
    from infinite_id.world.scene.dataset import main

    main(["--out", str(tmp_path), "--split", "eval", "--identities", "2", "--photos", "1", "--style", "sketch"])
    records = read_manifest(tmp_path / MANIFEST_NAME)
    assert [r["labels"]["split"] for r in records] == ["eval", "eval"]
    assert {r["labels"]["style"] for r in records} == {"sketch"}
    assert str(tmp_path / MANIFEST_NAME) in capsys.readouterr().out
