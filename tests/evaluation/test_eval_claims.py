"""The paper's claims checked on per-image scores: paired differences, standard errors, verdicts, and the eval
report that states them."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from infinite_id.evaluation import EVAL_CLAIMS, Claim, check_claims
from infinite_id.evaluation.claims import ALL_PROMPTS, claims_for_methods, paper_claim, rows_by_method
from infinite_id.evaluation.report import markdown_table, summarize_records, write_report


def _records(method_effects: dict[str, dict[str, float]], identities: int = 10, sets=("raw", "style"), seed=0):
    """Synthetic records: per (identity, prompt, seed) a base level with a large spread, plus each method's
    effect on each metric and a little noise."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(identities):
        for prompt_set in sets:
            for prompt_index in range(2):
                base = {"clip_t": rng.uniform(0.1, 0.5), "clip_i": rng.uniform(0.3, 0.9), "face": rng.uniform(0, 0.8)}
                for method, effect in method_effects.items():
                    noise = rng.normal(0, 0.002, 3)
                    out.append(
                        {
                            "method": method,
                            "identity": f"id{i}",
                            "prompt_set": prompt_set,
                            "prompt_index": prompt_index,
                            "prompt": f"prompt {prompt_index}",
                            "seed": 0,
                            "id_scale": 1.0,
                            "image": f"images/{method}/id{i}/{prompt_set}-{prompt_index}.png",
                            "clip_t": base["clip_t"] + effect.get("clip_t", 0.0) + noise[0],
                            "clip_i": base["clip_i"] + effect.get("clip_i", 0.0) + noise[1],
                            "face_sim": base["face"] + effect.get("face_sim", 0.0) + noise[2],
                            "face_detected": True,
                        }
                    )
    return out


def test_paired_differences_resolve_what_the_spread_between_identities_hides():
    records = _records(
        {"infinite-id": {"clip_t": 0.03}, "no-mixed-attention": {}, "mutual-attention": {"clip_t": 0.05}}
    )
    rows = rows_by_method(records)
    claims = [
        paper_claim("mixed attention raises CLIP-T", ALL_PROMPTS, "clip_t", "infinite-id", "no-mixed-attention"),
        paper_claim("mutual attention lowers CLIP-T", ALL_PROMPTS, "clip_t", "infinite-id", "mutual-attention"),
        Claim("no difference", ALL_PROMPTS, "clip_i", "infinite-id", "no-mixed-attention"),
        Claim("a row that was not run", ALL_PROMPTS, "clip_t", "infinite-id", "joint"),
    ]
    mixed, mutual, same, missing = check_claims(claims, rows)
    assert mixed["n"] == 10 * 2 * 2 and mixed["difference"] == pytest.approx(0.03, abs=0.002)
    assert mixed["sem"] < 0.001 and mixed["verdict"] == "agrees"  # the means alone differ by less than their spread
    unpaired = summarize_records(rows[(ALL_PROMPTS, "infinite-id")])["clip_t_sem"]
    assert unpaired > 10 * mixed["sem"]
    assert mutual["difference"] == pytest.approx(-0.02, abs=0.002) and mutual["verdict"] == "disagrees"
    assert same["verdict"] == "unclear" and abs(same["difference"]) < 0.01  # below MIN_EFFECT
    assert missing["n"] == 0 and missing["difference"] is None and missing["verdict"] == "unclear"
    assert mixed["paper_a"] == 0.340 and mixed["paper_b"] == 0.331 and mixed["a"] == "infinite-id"


def test_a_lost_face_counts_as_zero_and_the_paper_sign_decides():
    records = _records({"infinite-id": {}, "mutual-attention": {}}, identities=6, sets=("raw",))
    for r in records:
        if r["method"] == "mutual-attention":
            r["face_detected"] = False  # same similarity where a face is found, but none is
    claim = paper_claim("mutual attention loses identity", ALL_PROMPTS, "face_sim", "infinite-id", "mutual-attention")
    (result,) = check_claims([claim], rows_by_method(records))
    expected = np.mean([r["face_sim"] for r in records if r["method"] == "infinite-id"])
    assert result["difference"] == pytest.approx(expected, abs=1e-9) and result["verdict"] == "agrees"
    lower = paper_claim("costs a little", ALL_PROMPTS, "face_sim", "infinite-id", "no-mixed-attention")
    assert lower.sign == -1.0 and Claim("q", "t", "m", "a", "b").sign == 1.0  # paper 0.689 < 0.700; qualitative: a > b


def test_an_evaluation_checks_only_the_claims_its_methods_answer():
    assert claims_for_methods(["infinite-id", "base-model"]) == []
    texts = [c.text for c in claims_for_methods(["infinite-id", "no-mixed-attention", "identity-only"])]
    assert texts == ["mixed attention raises CLIP-T", "mixed attention costs a little ID similarity"]
    assert {c.table for c in EVAL_CLAIMS} <= {ALL_PROMPTS, "style"}


def test_the_eval_report_states_verdicts_with_standard_errors(tmp_path):
    effects = {
        "infinite-id": {"clip_t": 0.03, "face_sim": 0.2},
        "no-mixed-attention": {"face_sim": 0.25},
        "mutual-attention": {"clip_t": 0.02, "face_sim": -0.2},
        "full-adain": {"face_sim": 0.1},
        "base-model": {},
    }
    records = _records(effects)
    methods = list(effects)
    settings = {"methods": methods, "id_scale": 1.0, "curve_methods": [], "seeds": [0]}
    written = write_report(records, tmp_path, settings, {}, grids=False)

    md = (tmp_path / "results.md").read_text()
    assert "| prompts | method | images | CLIP-T ± sem | CLIP-I ± sem | Face sim ± sem |" in md
    assert "standard error of the mean (sem)" in md and "## The paper's claims, checked" in md
    assert "| claim | metric | this run: a - b | paper: a - b | verdict |" in md
    data = json.loads((tmp_path / "results.json").read_text())
    verdicts = {c["text"]: c["verdict"] for c in data["claims"]}
    assert verdicts == {
        "mixed attention raises CLIP-T": "agrees",
        "mixed attention costs a little ID similarity": "agrees",
        "mutual attention loses identity": "agrees",
        "mutual attention lowers CLIP-T": "agrees",
        "mutual attention lowers CLIP-I": "unclear",
        "full AdaIN costs identity against AdaIN-mean": "agrees",  # on the style prompts only
    }  # the no-adain claim is left out: no-adain was not evaluated
    assert written["claims"] == data["claims"]
    style = next(c for c in data["claims"] if c["table"] == "style")
    assert style["n"] == 10 * 2
    row = data["rows"][0]
    assert row["clip_t_sem"] == pytest.approx(row["clip_t_std"] / np.sqrt(row["n_images"]))  # sem, and std kept
    with open(tmp_path / "results.csv", newline="") as fh:
        header = next(csv.reader(fh))
    assert {"clip_t", "clip_t_std", "clip_t_sem", "face_sim_sem"} <= set(header)

    write_report(records, tmp_path / "one", {**settings, "methods": ["infinite-id"]}, {}, grids=False)
    assert "claims" not in json.loads((tmp_path / "one" / "results.json").read_text())
    assert "claims, checked" not in (tmp_path / "one" / "results.md").read_text()


def test_markdown_table_marks_error_bars_in_the_header():
    rows = [
        {"label": "a", "scale": 0.5, "x": 0.1234, "x_sem": 0.01, "y": 0.5},
        {"label": "b", "scale": 1.0, "x": None},
    ]
    lines = markdown_table(
        rows, (("label", "method"), ("scale", "ID scale")), (("x", "X"), ("y", "Y"), ("z", "Z")), {"x"}
    )
    assert lines == [
        "| method | ID scale | X ± sem | Y |",
        "|---|---|---|---|",
        "| a | 0.5 | 0.123 ± 0.010 | 0.500 |",
        "| b | 1 | - | - |",
    ]


def test_labelled_rows_grid_keeps_columns_aligned_past_a_missing_image(tmp_path):
    from PIL import Image

    from infinite_id.evaluation.report import labelled_rows_grid

    Image.new("RGB", (8, 8), "red").save(tmp_path / "red.png")
    grid = labelled_rows_grid(
        [("a", [tmp_path / "red.png", None]), ("b", [tmp_path / "gone.png", tmp_path / "red.png"])],
        cell=10,
        label_width=20,
    )
    assert grid.size == (20 + 2 * 10, 2 * 10)
    assert grid.getpixel((25, 5)) == (255, 0, 0) and grid.getpixel((35, 5)) == (255, 255, 255)
    assert grid.getpixel((25, 15)) == (255, 255, 255) and grid.getpixel((35, 15)) == (255, 0, 0)
