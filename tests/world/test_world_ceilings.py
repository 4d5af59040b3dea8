"""The honest ceilings' per-value breakdown: which true values of an attribute the round trip loses."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from infinite_id.world.experiments.ceilings import accuracy_by_value, format_report, judge_folder

pytestmark = pytest.mark.world


def _example(**labels):
    return SimpleNamespace(labels=labels)


def test_accuracy_by_value_groups_hits_by_the_true_value_in_label_order():
    examples = [_example(accessory=a) for a in ("necklace", "none", "necklace", "earrings", "none", "necklace")]
    hits = [1.0, 1.0, 0.0, 0.0, 1.0, 0.0]
    by_value = accuracy_by_value(hits, examples, "accessory")
    assert by_value == {"none": 1.0, "earrings": 0.0, "necklace": pytest.approx(1 / 3)}
    assert list(by_value) == ["none", "earrings", "necklace"]  # ACCESSORIES' order, values seen only
    with pytest.raises(ValueError):
        accuracy_by_value(hits[:-1], examples, "accessory")  # one read per example


def test_the_report_prints_each_attribute_by_value():
    estimate = {"mean": 0.5, "sem": 0.1}
    by_value = {"raw": {"none": 1.0, "earrings": 0.5}, "round_trip": {"none": 1.0, "earrings": 0.0}}
    report = {
        "identities": 2,
        "vae": "v",
        "attributes_raw": {"accessory": estimate},
        "attributes_round_trip": {"accessory": estimate},
        "attributes_by_value": {"accessory": by_value},
        **{k: estimate for k in ("id_other_photo_true_landmarks", "id_other_photo_detector",
                                 "id_other_photo_round_trip_detector", "id_round_trip_vs_original_detector",
                                 "psnr_db", "psnr_face_db")},
        "detection_rate_raw": 1.0,
        "detection_rate_round_trip": 1.0,
        "bars": {"attribute accessory": True},
    }  # fmt: skip
    assert "- accessory: none 1.00 / 1.00, earrings 0.50 / 0.00" in format_report(report)


def test_the_independent_attribute_judge_is_preferred_where_the_folder_has_it(tmp_path):
    assert judge_folder(tmp_path) == tmp_path / "attributes"  # no independent judge: the VAE loss's classifier
    (tmp_path / "attributes_eval").mkdir()
    assert judge_folder(tmp_path) == tmp_path / "attributes"  # an empty folder is not a judge
    (tmp_path / "attributes_eval" / "model.safetensors").write_bytes(b"")
    assert judge_folder(tmp_path) == tmp_path / "attributes_eval"
    assert judge_folder(tmp_path, tmp_path / "mine") == tmp_path / "mine"  # an explicit --judge wins
