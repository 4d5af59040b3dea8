"""The example portraits and the documentation's pictures are made by code that runs (on quick weights here)."""

from __future__ import annotations

import json

from PIL import Image

from infinite_id.world.experiments.doc_images import grid, make_doc_images
from infinite_id.world.experiments.examples import example_identities, render_portrait, write_examples
from infinite_id.world.scene.factors import EVAL_IDENTITIES, identity_from_id


def test_example_portraits_are_held_out_and_reproducible(tmp_path):
    identities = write_examples(tmp_path)
    assert set(identities) == {"man_1", "man_2", "woman_1", "woman_2"}
    for stem, identity_id in identities.items():
        assert identity_id in EVAL_IDENTITIES and identity_from_id(identity_id).gender == stem.split("_")[0]
        small, large = Image.open(tmp_path / f"{stem}.png"), Image.open(tmp_path / f"{stem}_large.png")
        assert small.size == (64, 64) and large.size == (256, 256)
        assert small.tobytes() == render_portrait(identity_id).tobytes()
    assert json.loads((tmp_path / "identities.json").read_text()) == identities == example_identities()


def test_shipped_example_portraits_match_the_code():
    from pathlib import Path

    shipped = Path(__file__).resolve().parents[2] / "examples" / "portraits"
    for stem, identity_id in example_identities().items():
        assert Image.open(shipped / f"{stem}.png").tobytes() == render_portrait(identity_id).tobytes()


def test_grid_lays_out_labelled_tiles():
    red, blue = Image.new("RGB", (64, 64), "red"), Image.new("RGB", (64, 64), "blue")
    sheet = grid([[(red, "a"), (blue, "b")], [(blue, "c")]])
    assert sheet.size == (2 * 192, 2 * (192 + 14))
    assert sheet.getpixel((100, 100)) == (255, 0, 0) and sheet.getpixel((300, 100)) == (0, 0, 255)
    assert sheet.getpixel((300, 300)) == (255, 255, 255)  # the short row leaves white


def test_doc_images_are_made_by_the_miniature_model(world_quick_weights, tmp_path):
    untrained_detector = {"threshold": 0.01, "min_face_size": 1}  # two-step weights: any box will do
    paths = make_doc_images(tmp_path, world_quick_weights, steps=1, analyzer_options=untrained_detector)
    assert [p.name for p in paths] == [
        "world_generate.png",
        "world_self_attention.png",
        "world_adain.png",
        "world_id_scale.png",
        "world_faces.png",
    ]
    sizes = [Image.open(p).size for p in paths]
    assert sizes[0] == (9 * 192, 2 * 206) and sizes[3] == (6 * 192, 206)
